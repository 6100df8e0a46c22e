"""Public op: the Pallas fused GEMV on GPU (interpret mode elsewhere, for tests), or the jnp reference."""

from __future__ import annotations

import jax

from kernels_pallas.fused_gemv import kernel, reference


def fused_gemv(x, w, norm_scale=None, residual=None, *, swiglu: bool = False, eps: float = 1e-5,
               backend: str = "pallas"):
    """x[B, d] (optionally RMS-normalised by norm_scale[d]) @ w[d, n]; swiglu: w = [gate | up] -> silu(g) * u;
    residual[B, n] added. backend: "pallas" (Triton on GPU, interpret mode on other backends) or "reference"."""
    if backend == "reference":
        return reference.fused_gemv(x, w, norm_scale, residual, swiglu=swiglu, eps=eps)
    if backend != "pallas":
        raise ValueError(f"fused_gemv backend must be 'pallas' or 'reference', got {backend!r}.")
    return kernel.fused_gemv(x, w, norm_scale, residual, swiglu=swiglu, eps=eps,
                             interpret=jax.default_backend() != "gpu")
