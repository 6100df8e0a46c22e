"""Public op: the Pallas fused GEMV on GPU (interpret mode elsewhere, for tests), or the jnp reference."""

from __future__ import annotations

import jax

from kernels_pallas.fused_gemv import kernel, reference, splitk


def fused_gemv(x, w, norm_scale=None, residual=None, up=None, *, swiglu: bool = False, eps: float = 1e-5,
               backend: str = "pallas", row_block: int | None = None, block_k: int = 256):
    """x[B, d] (optionally RMS-normalised by norm_scale[d]) @ w[d, n]; swiglu: w = [gate | up] -> silu(g) * u;
    residual[B, n] added; up: swiglu's up matrix as its own array (w the gate). backend: "pallas" (Triton on GPU,
    interpret mode on other backends), "pallas_splitk" (splitk.py: wide tiles, split over K, for batch 1-16)
    or "reference". row_block: rows per program (kernel.fused_gemv), for
    batch-invariant results."""
    if backend == "reference":
        return reference.fused_gemv(x, w, norm_scale, residual, up, swiglu=swiglu, eps=eps)
    if backend == "tiled":
        return reference.fused_gemv_tiled(x, w, norm_scale, residual, up, swiglu=swiglu, eps=eps,
                                          row_block=row_block or kernel.MIN_ROWS)
    if backend == "pallas_splitk":
        return splitk.fused_gemv_splitk(x, w, norm_scale, residual, up, swiglu=swiglu, eps=eps,
                                        interpret=jax.default_backend() != "gpu")
    if backend != "pallas":
        raise ValueError(f"fused_gemv backend must be 'pallas', 'pallas_splitk', 'tiled' or 'reference', got "
                         f"{backend!r}.")
    return kernel.fused_gemv(x, w, norm_scale, residual, up, swiglu=swiglu, eps=eps, row_block=row_block,
                             block_k=block_k, interpret=jax.default_backend() != "gpu")
