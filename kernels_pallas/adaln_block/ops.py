"""Public op: one AdaLN-zero block's inference forward, fused (Pallas on GPU, interpret mode elsewhere) or the
jnp reference."""

from __future__ import annotations

import jax

from kernels_pallas.adaln_block import kernel, reference

BACKENDS = ("pallas", "reference")


def adaln_block(x, modulation, params: dict, *, heads: int, head_dim: int, causal: bool = True,
                layout: str = "dit", eps: float = 1e-6, backend: str = "pallas", samples_per_tile: int = 8):
    if backend == "reference":
        return reference.adaln_block(x, modulation, params, heads=heads, head_dim=head_dim, causal=causal,
                                     layout=layout, eps=eps)
    if backend != "pallas":
        raise ValueError(f"adaln_block backend must be one of {BACKENDS}, got {backend!r}.")
    return kernel.adaln_block(x, modulation, params, heads=heads, head_dim=head_dim, causal=causal, layout=layout,
                              eps=eps, samples_per_tile=samples_per_tile, interpret=jax.default_backend() != "gpu")
