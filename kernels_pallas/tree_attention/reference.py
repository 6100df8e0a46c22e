"""Plain-jnp reference: attention of T new (tree) queries over a KV cache whose last T slots are the tree.

Query i of sequence b sees cache slot j when j < lengths[b] (the committed prefix) or when j = lengths[b] + i'
and tree node i' is an ancestor of (or equal to) node i. A chain (verify of K+1 tokens) is the lower
triangular mask; plain decode is T = 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def visibility(lengths: jax.Array, ancestor_mask: jax.Array, num_slots: int) -> jax.Array:
    """bool[B, T, S]: which cache slots each tree query may attend to."""
    num_nodes = ancestor_mask.shape[-1]
    slots = jnp.arange(num_slots)[None, None, :]
    offset = slots - lengths[:, None, None]
    in_tree = (offset >= 0) & (offset < num_nodes)
    batch = lengths.shape[0]
    node_of_slot = jnp.broadcast_to(jnp.clip(offset, 0, num_nodes - 1), (batch, num_nodes, num_slots))
    tree_ok = jnp.take_along_axis(jnp.broadcast_to(ancestor_mask, (batch,) + ancestor_mask.shape),
                                  node_of_slot, axis=2)
    return (offset < 0) | (in_tree & tree_ok)


def tree_attention(q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, lengths: jax.Array,
                   ancestor_mask: jax.Array, scale: float | None = None) -> jax.Array:
    """q[B,T,Hq,D], k/v_cache[B,S,Hkv,D], lengths[B], ancestor_mask bool[T,T] -> out[B,T,Hq,D]."""
    batch, num_nodes, num_q_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    group = num_q_heads // num_kv_heads
    scale = head_dim ** -0.5 if scale is None else scale
    qg = q.reshape(batch, num_nodes, num_kv_heads, group, head_dim).astype(jnp.float32)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k_cache.astype(jnp.float32)) * scale
    visible = visibility(lengths, ancestor_mask, k_cache.shape[1])[:, None, None]
    scores = jnp.where(visible, scores, -jnp.inf)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v_cache.astype(jnp.float32))
    return out.reshape(batch, num_nodes, num_q_heads, head_dim).astype(q.dtype)
