"""Public ops: AdaLN-zero blocks' inference forward, on Pallas kernels (interpret mode off the GPU) or the jnp
reference."""

from __future__ import annotations

import jax

from kernels_pallas.adaln_block import kernel, reference

BACKENDS = ("pallas", "reference")
prepare_params = kernel.prepare_params


def adaln_blocks(x, modulations, params_list, *, heads: int, head_dim: int, causal: bool = True,
                 layout: str = "dit", eps: float = 1e-6, backend: str = "pallas"):
    """A stack of blocks (one modulation and one params dict per block; params raw or prepare_params'd)."""
    if backend == "reference":
        for modulation, params in zip(modulations, params_list):
            x = reference.adaln_block(x, modulation, params, heads=heads, head_dim=head_dim, causal=causal,
                                      layout=layout, eps=eps)
        return x
    if backend != "pallas":
        raise ValueError(f"adaln_block backend must be one of {BACKENDS}, got {backend!r}.")
    return kernel.adaln_blocks(x, list(modulations), list(params_list), heads=heads, head_dim=head_dim,
                               causal=causal, layout=layout, eps=eps, interpret=jax.default_backend() != "gpu")


def adaln_block(x, modulation, params: dict, **kwargs):
    """One block: x [B, n, w], modulation [B, n, 6w], params as reference.block_params -> [B, n, w]."""
    return adaln_blocks(x, [modulation], [params], **kwargs)
