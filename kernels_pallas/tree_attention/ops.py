"""Public op: the Pallas kernel on GPU, the jnp reference elsewhere (or when asked)."""

from __future__ import annotations

import jax

from kernels_pallas.tree_attention import kernel, reference


def tree_attention(q, k_cache, v_cache, lengths, ancestor_mask, scale=None, backend: str = "auto"):
    """q[B,T,Hq,D] over k/v_cache[B,S,Hkv,D] with prefix lengths[B] and a bool[T,T] ancestor mask.

    backend: "auto" (Pallas on GPU when the shapes fit, else reference), "pallas", "reference".
    """
    fits = (q.shape[1] <= kernel.MAX_TREE_NODES and k_cache.shape[1] % 64 == 0
            and q.shape[-1] in (64, 128, 256))
    if backend == "reference" or (backend == "auto" and (jax.default_backend() != "gpu" or not fits)):
        return reference.tree_attention(q, k_cache, v_cache, lengths, ancestor_mask, scale)
    if not fits:
        raise ValueError(
            f"The Pallas tree attention needs ≤ {kernel.MAX_TREE_NODES} nodes, a cache length divisible by 64 "
            f"and head_dim in (64, 128, 256); got q {q.shape}, cache {k_cache.shape}. Use backend='reference'.")
    return kernel.tree_attention(q, k_cache, v_cache, lengths, ancestor_mask, scale)
