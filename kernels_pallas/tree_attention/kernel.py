"""Pallas kernel (Triton lowering): fused tree / verify / decode attention over the KV cache.

One program per (sequence, kv head) holds that head's group of query rows (T tree nodes × G query heads,
padded to a power of two ≥ 16 for the tensor cores) and streams the cache in blocks of `block_k` slots with
an online softmax, stopping at lengths[b] + T: it reads each KV byte once, for all query heads of the group
(GQA folded into rows), and applies the ancestor mask as two int32 bitmask words per node (up to 64 nodes).
Pallas' Triton backend is deprecated in favour of Mosaic GPU; this kernel is small enough to port once Mosaic GPU
settles.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

MAX_TREE_NODES = 64  # two int32 bitmask words of ancestors per node (nodes 0-31, 32-63)


def _kernel(lengths_ref, row_bits_ref, row_bits_hi_ref, q_ref, k_ref, v_ref, o_ref, m_ref, l_ref, *, num_nodes,
            block_k, chunk, scale):
    b, split = pl.program_id(0), pl.program_id(2)
    length = lengths_ref[b]
    q = q_ref[...].astype(jnp.float32) * scale                       # [M, D]
    rows = q.shape[0]
    bits = row_bits_ref[...]                                         # [M] ancestors 0-31 per query row
    bits_hi = row_bits_hi_ref[...]                                   # [M] ancestors 32-63

    def body(block, carry):
        m_prev, l_prev, acc = carry
        start = block * block_k
        k = k_ref[pl.ds(start, block_k), :].astype(jnp.float32)      # [BK, D]
        v = v_ref[pl.ds(start, block_k), :].astype(jnp.float32)
        s = jnp.dot(q, k.T)                                          # [M, BK]
        slot = split * chunk + start + jnp.arange(block_k)
        offset = slot[None, :] - length
        in_tree = (offset >= 0) & (offset < num_nodes)
        shift = jnp.clip(offset, 0, 63)
        word = jnp.where(shift < 32, bits[:, None], bits_hi[:, None])
        tree_bit = jnp.right_shift(word, shift & 31) & 1
        visible = (offset < 0) | (in_tree & (tree_bit == 1))
        s = jnp.where(visible, s, -1e30)
        m_new = jnp.maximum(m_prev, s.max(axis=1))
        correction = jnp.exp(m_prev - m_new)
        p = jnp.where(visible, jnp.exp(s - m_new[:, None]), 0.0)
        l_new = l_prev * correction + p.sum(axis=1)
        acc = acc * correction[:, None] + jnp.dot(p, v)
        return m_new, l_new, acc

    # This split covers slots [split*chunk, (split+1)*chunk); only blocks below length + T hold data.
    used = jnp.clip(length + num_nodes - split * chunk, 0, chunk)
    num_blocks = (used + block_k - 1) // block_k
    init = (jnp.full((rows,), -1e30, jnp.float32), jnp.zeros((rows,), jnp.float32),
            jnp.zeros(q.shape, jnp.float32))
    m_final, l_final, acc = jax.lax.fori_loop(0, num_blocks, body, init)
    o_ref[...] = acc
    m_ref[...] = m_final
    l_ref[...] = l_final


def ancestor_bits(ancestor_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """bool[T, T] (T <= 64) -> two int32[T] words: bit j of word 0 (bit j - 32 of word 1) of entry i is set
    when node i may attend node j. Bit 31 is the sign bit; the kernel shifts and masks, so that is harmless."""
    num_nodes = ancestor_mask.shape[-1]
    if num_nodes > MAX_TREE_NODES:
        raise ValueError(f"Tree attention takes at most {MAX_TREE_NODES} nodes, got {num_nodes}.")
    node = jnp.arange(num_nodes, dtype=jnp.int32)
    weights = jnp.left_shift(jnp.int32(1), node & 31)
    words = [jnp.sum(jnp.where(ancestor_mask & (node // 32 == w), weights, 0), axis=-1).astype(jnp.int32)
             for w in (0, 1)]
    return words[0], words[1]


@functools.partial(jax.jit, static_argnames=("block_k", "num_splits", "interpret", "num_warps"))
def tree_attention(q, k_cache, v_cache, lengths, ancestor_mask, scale=None, *, block_k: int = 64,
                   num_splits: int | None = None, interpret: bool = False, num_warps: int = 4):
    """Same contract as reference.tree_attention; the cache length must be a multiple of block_k.

    The cache is split into `num_splits` chunks handled by separate programs (flash-decoding), whose
    partial softmax states are merged by log-sum-exp; by default enough splits to fill ~128 SMs.
    """
    batch, num_nodes, num_q_heads, head_dim = q.shape
    num_slots, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_q_heads // num_kv_heads
    scale = head_dim ** -0.5 if scale is None else scale
    rows = max(16, pl.next_power_of_2(num_nodes * group))
    # [B, T, Hkv, G, D] -> [B, Hkv, T*G (padded), D]
    qg = q.reshape(batch, num_nodes, num_kv_heads, group, head_dim).transpose(0, 2, 1, 3, 4)
    qg = qg.reshape(batch, num_kv_heads, num_nodes * group, head_dim)
    qg = jnp.pad(qg, ((0, 0), (0, 0), (0, rows - num_nodes * group), (0, 0)))
    # Row r holds node r // G; padded rows copy the last node so their softmax stays well defined.
    node_of_row = jnp.minimum(jnp.arange(rows) // group, num_nodes - 1)
    row_bits, row_bits_hi = (word[node_of_row] for word in ancestor_bits(ancestor_mask))
    if num_splits is None:
        num_splits = max(1, min(num_slots // block_k, 128 // max(1, batch * num_kv_heads)))
        while (num_slots // block_k) % num_splits:
            num_splits -= 1
    if num_slots % (block_k * num_splits):
        raise ValueError(f"Cache length {num_slots} must be a multiple of block_k*num_splits={block_k * num_splits}.")
    chunk = num_slots // num_splits
    kernel = functools.partial(_kernel, num_nodes=num_nodes, block_k=block_k, chunk=chunk, scale=scale)
    compiler_params = None if interpret else _triton_params(num_warps)
    acc, m, l = pl.pallas_call(
        kernel,
        grid=(batch, num_kv_heads, num_splits),
        in_specs=[
            pl.BlockSpec((batch,), lambda b, h, c: (0,)),
            pl.BlockSpec((rows,), lambda b, h, c: (0,)),
            pl.BlockSpec((rows,), lambda b, h, c: (0,)),
            pl.BlockSpec((None, None, rows, head_dim), lambda b, h, c: (b, h, 0, 0)),
            pl.BlockSpec((None, chunk, None, head_dim), lambda b, h, c: (b, c, h, 0)),
            pl.BlockSpec((None, chunk, None, head_dim), lambda b, h, c: (b, c, h, 0)),
        ],
        out_specs=[
            pl.BlockSpec((None, None, None, rows, head_dim), lambda b, h, c: (b, h, c, 0, 0)),
            pl.BlockSpec((None, None, None, rows), lambda b, h, c: (b, h, c, 0)),
            pl.BlockSpec((None, None, None, rows), lambda b, h, c: (b, h, c, 0)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((batch, num_kv_heads, num_splits, rows, head_dim), jnp.float32),
            jax.ShapeDtypeStruct((batch, num_kv_heads, num_splits, rows), jnp.float32),
            jax.ShapeDtypeStruct((batch, num_kv_heads, num_splits, rows), jnp.float32),
        ],
        interpret=interpret,
        compiler_params=compiler_params,
    )(lengths.astype(jnp.int32), row_bits, row_bits_hi, qg, k_cache, v_cache)
    # Merge the splits: softmax over all slots = Σ_c e^{m_c - m} acc_c / Σ_c e^{m_c - m} l_c.
    m_max = m.max(axis=2, keepdims=True)
    weight = jnp.exp(m - m_max)
    out = (weight[..., None] * acc).sum(2) / (weight * l).sum(2)[..., None]
    out = out[:, :, :num_nodes * group].astype(q.dtype).reshape(batch, num_kv_heads, num_nodes, group, head_dim)
    return out.transpose(0, 2, 1, 3, 4).reshape(batch, num_nodes, num_q_heads, head_dim)


def _triton_params(num_warps: int):
    from jax.experimental.pallas import triton as pl_triton
    return pl_triton.CompilerParams(num_warps=num_warps, num_stages=2)
