"""Llama-style decoder LM (RMSNorm, RoPE, GQA, SwiGLU, tied or untied embeddings) with a KV cache.

Training: `model(tokens[B, L]) -> logits[B, L, V]` (causal). Inference shares ONE cache layout — per layer
`k, v: [B, S, n_kv_heads, head_dim]` plus `lengths: int32[B]` — across pure entry points:

    init_cache(config, batch, max_len, dtype)                       -> KVCache
    prefill(model, tokens[B, L], prompt_lengths[B], cache)          -> (logits[B, L, V], cache)
    decode(model, tokens[B], cache)                                 -> (logits[B, V], cache)
    verify(model, tokens[B, T], cache)                              -> (logits[B, T, V], cache)   lengths += T
    rollback(cache, new_lengths[B])                                 -> cache   (rejection is just a length)
    verify_tree(model, tokens[B, T], depths[T], ancestor_mask[T, T], cache)
                                                                    -> (logits[B, T, V], cache)   lengths kept
    commit_tree_path(cache, node_indices[B, D], n_accepted[B])      -> cache   path moved to contiguous slots

Fast batch decode over the same cache (cast-once fused weights, `decode_step`) is in core.nn.decode.

New tokens are written at slots lengths[b] + i with `dynamic_update_slice` (in place under donation), then
attend to the prefix (< lengths[b]) and to the new slots their ancestor mask allows (lower-triangular for a
chain); RoPE positions are lengths[b] + depth, so a tree node sits at its depth whatever its slot. Attention
over the cache goes through kernels_pallas.tree_attention (a fused Pallas kernel on GPU, jnp elsewhere).
RoPE follows the HF Llama convention (rotate_half over split halves), so HF export needs no permutation.

`TransformerConfig(numerics="invariant")` makes every cached entry point (and core.nn.decode.decode_step)
compute a token's logits in one reduction order whatever the number of tokens per call, batch, cache length or
tree slot, so greedy speculative decoding equals greedy AR bit for bit in bf16 (section "numerics=invariant").
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from kernels_pallas.fused_gemv import ops as fused_gemv_ops
from kernels_pallas.tree_attention import ops as tree_attention_ops
from kernels_pallas.tree_attention import reference as tree_attention_reference


# core.nn.decode's GEMV choices; here since TransformerConfig validates them (decode imports this module).
DECODE_KERNELS = ("xla", "xla_two_rows", "pallas", "pallas_splitk")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    mlp_dim: int
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    attention_impl: str = "xla"        # training attention: "xla" or "cudnn" (GPU, bf16)
    cache_attention: str = "auto"      # cached attention backend: "auto" (Pallas on GPU), "pallas", "reference"
    decode_kernel: str = "xla"         # decode_step's GEMVs: "xla", "xla_two_rows" (XLA, a batch-1 row computed as
                                       # two so each dot stays a GEMM), "pallas" (norm/SwiGLU/residual fused in) or
                                       # "pallas_splitk" (the same fusions, wide tiles split over K)
    # Cached forwards (prefill / decode / verify / verify_tree): "default", or "invariant": every token's logits
    # computed with one reduction order whatever the number of tokens in the call, the batch, the cache length
    # and the token's slot in a tree (so greedy speculative decoding equals greedy AR bit for bit); slower.
    numerics: str = "default"
    invariant_gemv: str = "auto"      # invariant projections: "auto" (Pallas on GPU, else tiled), "pallas", "tiled"

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads}).")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}.")
        if self.attention_impl not in ("xla", "cudnn"):
            raise ValueError(f"attention_impl must be 'xla' or 'cudnn', got {self.attention_impl!r}.")
        if self.decode_kernel not in DECODE_KERNELS:
            raise ValueError(f"decode_kernel must be one of {DECODE_KERNELS}, got {self.decode_kernel!r}.")
        if self.numerics not in ("default", "invariant"):
            raise ValueError(f"numerics must be 'default' or 'invariant', got {self.numerics!r}.")
        if self.invariant_gemv not in ("auto", "pallas", "tiled"):
            raise ValueError(f"invariant_gemv must be 'auto', 'pallas' or 'tiled', got {self.invariant_gemv!r}.")


def param_count(config: TransformerConfig) -> int:
    d, h, kv, hd, m = config.d_model, config.n_heads, config.n_kv_heads, config.head_dim, config.mlp_dim
    per_layer = d * h * hd * 2 + d * kv * hd * 2 + 3 * d * m + 2 * d
    embeddings = config.vocab_size * d * (1 if config.tie_embeddings else 2)
    return config.n_layers * per_layer + embeddings + d


def _param(rngs: nnx.Rngs, shape, fan_in: int, names) -> nnx.Param:
    init = jax.random.normal(rngs.params(), shape, jnp.float32) * (fan_in ** -0.5)
    return nnx.Param(init, out_sharding=names)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float):
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32), out_sharding=(None,))
        self.eps = eps

    def __call__(self, x):
        xf = x.astype(jnp.float32)
        normed = xf * jax.lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + self.eps)
        return (normed * self.scale[...].astype(jnp.float32)).astype(x.dtype)


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """x[B, T, N, H] rotated by positions[B, T] (HF Llama's rotate_half layout), computed in f32."""
    half = x.shape[-1] // 2
    freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions[..., None].astype(jnp.float32) * freqs            # [B, T, half]
    cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
    xf = x.astype(jnp.float32)
    x1, x2 = xf[..., :half], xf[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    k: tuple[jax.Array, ...]   # per layer [B, S, n_kv_heads, head_dim]
    v: tuple[jax.Array, ...]
    lengths: jax.Array         # int32[B]: committed tokens per sequence


def init_cache(config: TransformerConfig, batch_size: int, max_len: int, dtype=jnp.bfloat16) -> KVCache:
    """An empty cache; max_len is rounded up to a multiple of 64 (the cached-attention block size)."""
    slots = -(-max_len // 64) * 64
    shape = (batch_size, slots, config.n_kv_heads, config.head_dim)
    zeros = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layers))
    return KVCache(k=zeros(), v=zeros(), lengths=jnp.zeros((batch_size,), jnp.int32))


def _write(cache_layer: jax.Array, new: jax.Array, starts: jax.Array) -> jax.Array:
    """Writes new[B, T, ...] at slot starts[b] of each sequence (in place when the cache is donated)."""
    write_one = lambda c, n, s: jax.lax.dynamic_update_slice_in_dim(c, n.astype(c.dtype), s, axis=0)
    return jax.vmap(write_one)(cache_layer, new, starts)


class Attention(nnx.Module):
    def __init__(self, config: TransformerConfig, rngs: nnx.Rngs):
        d, h, kv, hd = config.d_model, config.n_heads, config.n_kv_heads, config.head_dim
        self.config = config
        self.wq = _param(rngs, (d, h, hd), d, ("embed", "heads", "kv"))
        self.wk = _param(rngs, (d, kv, hd), d, ("embed", "heads", "kv"))
        self.wv = _param(rngs, (d, kv, hd), d, ("embed", "heads", "kv"))
        self.wo = _param(rngs, (h, hd, d), h * hd, ("heads", "kv", "embed"))

    def _qkv(self, x, positions):
        cfg = self.config
        q = jnp.einsum("btd,dnh->btnh", x, self.wq[...])
        k = jnp.einsum("btd,dnh->btnh", x, self.wk[...])
        v = jnp.einsum("btd,dnh->btnh", x, self.wv[...])
        return rope(q, positions, cfg.rope_theta), rope(k, positions, cfg.rope_theta), v

    def __call__(self, x, positions):
        q, k, v = self._qkv(x, positions)
        impl = None if self.config.attention_impl == "xla" else self.config.attention_impl
        if impl == "cudnn" and q.dtype == jnp.float32:   # cuDNN flash attention is bf16/fp16 only
            impl = None
        out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)
        return jnp.einsum("btnh,nhd->btd", out, self.wo[...])

    def cached(self, x, positions, k_cache, v_cache, lengths, ancestor_mask):
        q, k, v = self._qkv(x, positions)
        k_cache, v_cache = _write(k_cache, k, lengths), _write(v_cache, v, lengths)
        out = tree_attention_ops.tree_attention(q, k_cache, v_cache, lengths, ancestor_mask,
                                                backend=self.config.cache_attention)
        return jnp.einsum("btnh,nhd->btd", out.astype(x.dtype), self.wo[...]), k_cache, v_cache


class MLP(nnx.Module):
    def __init__(self, config: TransformerConfig, rngs: nnx.Rngs):
        d, m = config.d_model, config.mlp_dim
        self.w_gate = _param(rngs, (d, m), d, ("embed", "mlp"))
        self.w_up = _param(rngs, (d, m), d, ("embed", "mlp"))
        self.w_down = _param(rngs, (m, d), m, ("mlp", "embed"))

    def __call__(self, x):
        return (jax.nn.silu(x @ self.w_gate[...]) * (x @ self.w_up[...])) @ self.w_down[...]


class Block(nnx.Module):
    def __init__(self, config: TransformerConfig, rngs: nnx.Rngs):
        self.attention_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attention = Attention(config, rngs)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = MLP(config, rngs)


class Transformer(nnx.Module):
    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.config = config
        # std 1/sqrt(d): tied, it is also the output projection, whose logits should start at unit scale.
        self.embed = _param(rngs, (config.vocab_size, config.d_model), config.d_model, ("vocab", "embed"))
        # Separate layers (not a scan over stacked weights): decode reads one cache array per layer in place.
        self.layers = nnx.List([Block(config, rngs) for _ in range(config.n_layers)])
        self.final_norm = RMSNorm(config.d_model, config.norm_eps)
        if not config.tie_embeddings:
            self.lm_head = _param(rngs, (config.d_model, config.vocab_size), config.d_model, ("embed", "vocab"))

    def _embed(self, tokens):
        return jnp.take(self.embed[...], tokens, axis=0)

    def _logits(self, x):
        return self._project(self.final_norm(x))

    def _project(self, x):
        if self.config.tie_embeddings:
            return jnp.einsum("btd,vd->btv", x, self.embed[...])
        return x @ self.lm_head[...]

    def output_projection(self) -> jax.Array:
        """The [d_model, vocab] logit matrix (the embedding transposed when tied), for fused losses."""
        return self.embed[...].T if self.config.tie_embeddings else self.lm_head[...]

    def final_hidden(self, tokens: jax.Array) -> jax.Array:
        """Final-normed hidden states [B, L, d]: `model(tokens)` is these times `output_projection()`."""
        if tokens.ndim != 2:
            raise ValueError(f"Expected tokens of shape [batch, length], got {tokens.shape}.")
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        x = self._embed(tokens)
        for layer in self.layers:
            x = x + layer.attention(layer.attention_norm(x), positions)
            x = x + layer.mlp(layer.mlp_norm(x))
        return self.final_norm(x)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return self._project(self.final_hidden(tokens))

    def forward_cached(self, tokens, positions, cache: KVCache, ancestor_mask):
        """Runs tokens[B, T] at RoPE positions[B, T], writing their KV at slots lengths + i."""
        if self.config.numerics == "invariant":
            return _forward_cached_invariant(self, tokens, positions, cache, ancestor_mask)
        x = self._embed(tokens)
        ks, vs = [], []
        for layer, k_cache, v_cache in zip(self.layers, cache.k, cache.v):
            h, k_cache, v_cache = layer.attention.cached(layer.attention_norm(x), positions, k_cache, v_cache,
                                                         cache.lengths, ancestor_mask)
            x = x + h
            x = x + layer.mlp(layer.mlp_norm(x))
            ks.append(k_cache)
            vs.append(v_cache)
        return self._logits(x), KVCache(k=tuple(ks), v=tuple(vs), lengths=cache.lengths)


# ----------------------------------------------------------------------------------------------------------
# numerics="invariant": batch-, length- and layout-invariant cached forward.
#
# A token's logits must not depend on how many tokens share the call (decode: 1, verify: K + 1, tree: N), on
# the batch, on the cache length or on the slot a tree node sits in. XLA picks matmul algorithms (tiles,
# split-K) per shape, and a reduction's grouping depends on its length, so:
#   * every projection is kernels_pallas.fused_gemv with a fixed 16-row tile (row_block): each row is reduced
#     by the same [16, block_k] x [block_k, block_n] program, block_k chunks in order, f32 accumulation, the
#     RMSNorm statistic per row inside the kernel;
#   * attention has no dot_general and no reduce-sum: every sum (over D, a 64-slot block, the blocks, a W-slot
#     tail) is a fixed pairwise tree of elementwise adds (_halving_sum; XLA does not reassociate float adds),
#     every product is exact in f32 (bf16 operands; probabilities rounded to bf16), so fusion and FMA choices
#     cannot change a bit. Masked slots add exact zeros, so extra blocks (a longer cache) change nothing;
#   * a query at position p reads its keys in the layout autoregressive decoding has: the "bulk" [0, B(p)),
#     B(p) = 64 * floor((p - MAX_DEPTH) / 64) <= lengths, straight from the cache (all prefix), then a tail of
#     TAIL slots gathered in AR order (prefix slots >= B(p), then the query's ancestors by depth), so a tree
#     node at slot lengths + i sees exactly the vector a decode step at its position sees.
INVARIANT_ROW_BLOCK = 16
INVARIANT_BLOCK = 64          # slots per bulk block
INVARIANT_MAX_DEPTH = 64      # tree depth up to which the tail holds every in-round ancestor
INVARIANT_TAIL = INVARIANT_MAX_DEPTH + INVARIANT_BLOCK


def _invariant_matmul(x, w, norm_scale=None, residual=None, up=None, swiglu=False, eps=1e-5, backend="auto"):
    """x[..., d] -> [..., n] through the row-tiled fused GEMV (norm / SwiGLU / residual fused as in decode_step;
    SwiGLU with w = gate and up given, or w = [gate | up]). backend "auto": the Pallas kernel on GPU, elsewhere
    the same tiling as a lax.map of XLA dots ("tiled")."""
    if backend == "auto":
        backend = "pallas" if jax.default_backend() == "gpu" else "tiled"
    lead, dim = x.shape[:-1], x.shape[-1]
    block_k = next(b for b in (256, 128, 64, 32, 16, 8, dim) if dim % b == 0 and b <= dim)
    flat = lambda a: None if a is None else a.reshape(-1, a.shape[-1])
    out = fused_gemv_ops.fused_gemv(flat(x), w.astype(x.dtype), norm_scale, flat(residual), None if up is None else
                                    up.astype(x.dtype), swiglu=swiglu or up is not None, eps=eps,
                                    row_block=INVARIANT_ROW_BLOCK, block_k=block_k,
                                    backend=backend)
    return out.reshape(*lead, out.shape[-1])


def _halving_sum(x: jax.Array) -> jax.Array:
    """Sum over the last axis in a fixed pairwise order: zero-pad to a power of two, then add the upper half to
    the lower half until one is left. Elementwise adds only (no reduce op, whose grouping XLA may pick per
    shape); trailing zeros (masked slots, a longer cache) leave the result unchanged, since y + 0 = y."""
    n = x.shape[-1]
    width = 1 << max(n - 1, 0).bit_length()
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - n)])
    while x.shape[-1] > 1:
        half = x.shape[-1] // 2
        x = x[..., :half] + x[..., half:]
    return x[..., 0]


def _ancestors_by_depth(ancestor_mask: jax.Array) -> jax.Array:
    """int32[T, T]: entry [i, j] = the node at depth j on node i's path (nodes listed after their parents)."""
    mask = jnp.asarray(ancestor_mask, bool)
    rank = jnp.cumsum(mask, axis=-1) - 1                                   # depth of each ancestor
    hits = mask[:, None, :] & (rank[:, None, :] == jnp.arange(mask.shape[-1])[None, :, None])
    return jnp.argmax(hits, axis=-1).astype(jnp.int32)


def invariant_attention(q, k_cache, v_cache, lengths, positions, ancestor_mask):
    """tree_attention's contract (q[B,T,Hq,D] over the cache, prefix lengths[B], bool[T,T] ancestor mask, query
    positions[B, T] = lengths + depth) with a reduction order that depends only on the query's position and the
    keys it sees (see the section comment)."""
    batch, num_nodes, num_q_heads, head_dim = q.shape
    num_slots, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group, block, tail = num_q_heads // num_kv_heads, INVARIANT_BLOCK, INVARIANT_TAIL
    if num_slots % block:
        raise ValueError(f"numerics='invariant' needs a cache length divisible by {block}, got {num_slots}.")
    f32 = jnp.float32
    # Every product below is of two bf16-representable values, exact in f32, so a fused multiply-add gives
    # the same bits as a multiply then an add, however XLA fuses; the scale is applied after the max.
    exact = lambda a: a.astype(jnp.bfloat16).astype(f32)
    qg = exact(q).reshape(batch, num_nodes, num_kv_heads, group, head_dim).transpose(0, 2, 3, 1, 4)  # [B,kv,G,T,D]
    scale = head_dim ** -0.5
    bulk_end = jnp.maximum(positions - INVARIANT_MAX_DEPTH, 0) // block * block   # [B, T]
    # Bulk: slots < bulk_end (all committed prefix when depth <= MAX_DEPTH), 64-slot blocks.
    visible = tree_attention_reference.visibility(lengths, ancestor_mask, num_slots)          # [B, T, S]
    bulk_mask = (visible & (jnp.arange(num_slots)[None, None] < bulk_end[:, :, None]))[:, None, None]
    keys = exact(k_cache).transpose(0, 2, 1, 3)                             # [B, kv, S, D]
    values_t = exact(v_cache).transpose(0, 2, 3, 1)                         # [B, kv, D, S]
    scores = _halving_sum(qg[:, :, :, :, None, :] * keys[:, :, None, None])  # [B, kv, G, T, S]
    # Tail: TAIL slots in AR order: AR position a = bulk_end + t is prefix slot a, or the ancestor at depth
    # a - lengths (tree slot lengths + that node), visible while a <= position.
    ancestors = _ancestors_by_depth(ancestor_mask)                          # [T, T]
    ar_pos = bulk_end[:, :, None] + jnp.arange(tail)[None, None]            # [B, T, W]
    depth_in_round = jnp.clip(ar_pos - lengths[:, None, None], 0, num_nodes - 1)
    node = jnp.take_along_axis(jnp.broadcast_to(ancestors[None], (batch,) + ancestors.shape), depth_in_round, 2)
    source = jnp.where(ar_pos < lengths[:, None, None], ar_pos, lengths[:, None, None] + node)
    source = jnp.clip(source, 0, num_slots - 1).reshape(batch, 1, num_nodes * tail)
    tail_mask = (ar_pos <= positions[:, :, None])[:, None, None]           # [B, 1, 1, T, W]
    gather = lambda cache: jnp.take_along_axis(exact(cache).transpose(0, 2, 1, 3), source[..., None], 2)
    tail_keys = gather(k_cache).reshape(batch, num_kv_heads, num_nodes, tail, head_dim)
    tail_values = gather(v_cache).reshape(batch, num_kv_heads, num_nodes, tail, head_dim)
    tail_scores = _halving_sum(qg[:, :, :, :, None, :] * tail_keys[:, :, None])     # [B, kv, G, T, W]
    # Softmax with one max over everything visible (a max is exact in any order); probabilities rounded to
    # bf16 (as flash attention feeds its PV matmul) so that p * v is exact; sums in the fixed halving order.
    neg = -jnp.inf
    m = jnp.maximum(jnp.max(jnp.where(bulk_mask, scores, neg), -1), jnp.max(jnp.where(tail_mask, tail_scores, neg), -1))
    p = jnp.where(bulk_mask, exact(jnp.exp((scores - m[..., None]) * scale)), 0.0)
    p_tail = jnp.where(tail_mask, exact(jnp.exp((tail_scores - m[..., None]) * scale)), 0.0)
    nb = num_slots // block
    p_blocks = p.reshape(*p.shape[:-1], nb, block)                          # [B, kv, G, T, nb, 64]
    v_blocks = values_t.reshape(batch, num_kv_heads, head_dim, nb, block)   # [B, kv, D, nb, 64]
    l_blocks = _halving_sum(p_blocks)                                       # [B, kv, G, T, nb]
    acc_blocks = _halving_sum(p_blocks[:, :, :, :, None] * v_blocks[:, :, None, None])   # [B, kv, G, T, D, nb]
    l = _halving_sum(l_blocks) + _halving_sum(p_tail)
    tail_values_t = jnp.swapaxes(tail_values, -1, -2)                       # [B, kv, T, D, W]
    acc = _halving_sum(acc_blocks) + _halving_sum(p_tail[:, :, :, :, None] * tail_values_t[:, :, None])
    out = acc / l[..., None]                                                # [B, kv, G, T, D]
    return out.transpose(0, 3, 1, 2, 4).reshape(batch, num_nodes, num_q_heads, head_dim).astype(q.dtype)


def _forward_cached_invariant(model, tokens, positions, cache: KVCache, ancestor_mask):
    """Transformer.forward_cached with numerics="invariant" (same cache writes and outputs, up to rounding)."""
    cfg = model.config
    h, kv, hd, d, eps = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_model, cfg.norm_eps
    batch, num_tokens = tokens.shape
    matmul = functools.partial(_invariant_matmul, eps=eps, backend=cfg.invariant_gemv)
    x = model._embed(tokens)
    ks, vs = [], []
    for layer, k_cache, v_cache in zip(model.layers, cache.k, cache.v):
        a, mlp = layer.attention, layer.mlp
        scale = layer.attention_norm.scale[...]
        project = lambda w, heads: matmul(x, w[...].reshape(d, -1), scale).reshape(batch, num_tokens, heads, hd)
        q = rope(project(a.wq, h), positions, cfg.rope_theta)
        k = rope(project(a.wk, kv), positions, cfg.rope_theta)
        v = project(a.wv, kv)
        k_cache, v_cache = _write(k_cache, k, cache.lengths), _write(v_cache, v, cache.lengths)
        out = invariant_attention(q, k_cache, v_cache, cache.lengths, positions, ancestor_mask)
        x = matmul(out.reshape(batch, num_tokens, h * hd).astype(x.dtype), a.wo[...].reshape(h * hd, d), residual=x)
        hidden = matmul(x, mlp.w_gate[...], layer.mlp_norm.scale[...], up=mlp.w_up[...])
        x = matmul(hidden, mlp.w_down[...], residual=x)
        ks.append(k_cache)
        vs.append(v_cache)
    logits = matmul(x, model.output_projection(), model.final_norm.scale[...])
    return logits, KVCache(k=tuple(ks), v=tuple(vs), lengths=cache.lengths)


def _causal(num_tokens: int) -> jax.Array:
    return jnp.tril(jnp.ones((num_tokens, num_tokens), bool))


def verify(model: Transformer, tokens: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
    """T tokens per sequence in one forward (chain: causal among themselves); lengths advance by T."""
    num_tokens = tokens.shape[1]
    positions = cache.lengths[:, None] + jnp.arange(num_tokens)[None]
    logits, cache = model.forward_cached(tokens, positions, cache, _causal(num_tokens))
    return logits, dataclasses.replace(cache, lengths=cache.lengths + num_tokens)


def prefill(model: Transformer, tokens: jax.Array, prompt_lengths: jax.Array,
            cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Right-padded prompts: the cache then holds prompt_lengths[b] tokens of sequence b."""
    logits, cache = verify(model, tokens, cache)
    return logits, dataclasses.replace(cache, lengths=cache.lengths - tokens.shape[1] + prompt_lengths)


def decode(model: Transformer, tokens: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
    logits, cache = verify(model, tokens[:, None], cache)
    return logits[:, 0], cache


def rollback(cache: KVCache, new_lengths: jax.Array) -> KVCache:
    return dataclasses.replace(cache, lengths=new_lengths.astype(jnp.int32))


def verify_tree(model: Transformer, tokens: jax.Array, depths: jax.Array, ancestor_mask: jax.Array,
                cache: KVCache) -> tuple[jax.Array, KVCache]:
    """A token tree in one forward: node i at position lengths + depths[i], attending to its ancestors."""
    positions = cache.lengths[:, None] + jnp.asarray(depths)[None]
    return model.forward_cached(tokens, positions, cache, jnp.asarray(ancestor_mask, bool))


def commit_tree_path(cache: KVCache, node_indices: jax.Array, n_accepted: jax.Array) -> KVCache:
    """Moves the KV of tree nodes node_indices[b, :] to slots lengths[b] + j; lengths += n_accepted."""
    slots = cache.lengths[:, None] + node_indices                         # [B, D]

    def move(layer):
        gathered = jnp.take_along_axis(layer, slots[:, :, None, None], axis=1)
        return _write(layer, gathered, cache.lengths)

    return KVCache(k=tuple(map(move, cache.k)), v=tuple(map(move, cache.v)),
                   lengths=cache.lengths + n_accepted.astype(jnp.int32))
