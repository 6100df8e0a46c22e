"""Fast batch decode over core.nn.transformer's KV cache.

`params = inference_params(model, jnp.bfloat16)` casts the weights once and fuses Q/K/V and gate/up into one
matmul each; `decode_step(params, config, tokens[B], cache)` then equals `transformer.decode(model, ...)` (up to
the cast) with fewer, larger kernels per layer. `config.decode_kernel` picks its GEMVs (XLA or the fused Pallas
kernels of kernels_pallas.fused_gemv); with `numerics="invariant"` it takes the invariant path of transformer.py
and gives the same bits as the cached forwards there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from core.nn.transformer import (KVCache, Transformer, TransformerConfig, _causal, _invariant_matmul, _write,
                                 invariant_attention, rope)
from kernels_pallas.fused_gemv import ops as fused_gemv_ops
from kernels_pallas.tree_attention import ops as tree_attention_ops


def inference_params(model: Transformer, dtype=jnp.bfloat16) -> dict:
    """Cast-once decode weights: per layer a fused wqkv[d, (h + 2 kv) hd] and w_gate_up[d, 2 m] in dtype."""
    cfg = model.config
    d = cfg.d_model
    cast = lambda x: jnp.asarray(x[...], dtype)
    layers = []
    for layer in model.layers:
        a, m = layer.attention, layer.mlp
        wqkv = jnp.concatenate([a.wq[...].reshape(d, -1), a.wk[...].reshape(d, -1), a.wv[...].reshape(d, -1)], 1)
        w_gate_up = jnp.concatenate([m.w_gate[...], m.w_up[...]], 1)
        layers.append(dict(attention_norm=cast(layer.attention_norm.scale), wqkv=wqkv.astype(dtype),
                           wo=cast(a.wo).reshape(-1, d), mlp_norm=cast(layer.mlp_norm.scale),
                           w_gate_up=w_gate_up.astype(dtype), w_down=cast(m.w_down)))
    head = model.embed[...].T if cfg.tie_embeddings else model.lm_head[...]
    return dict(embed=cast(model.embed), final_norm=cast(model.final_norm.scale), lm_head=head.astype(dtype),
                layers=layers)


def _rms_norm(x, scale, eps):
    xf = x.astype(jnp.float32)
    return (xf * jax.lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + eps) * scale.astype(jnp.float32)).astype(x.dtype)


def _swiglu(gate_up: jax.Array, mlp_dim: int) -> jax.Array:
    return jax.nn.silu(gate_up[:, :mlp_dim]) * gate_up[:, mlp_dim:]


def _dot_as_gemm(h: jax.Array, w: jax.Array) -> jax.Array:
    """h @ w with a one-row h computed as two rows (a copy): XLA's dot strength reduction turns a one-row dot
    with a small weight into a multiply + reduce that writes the product first (2x slower than the weight read
    on the H200, benchmarks/results/gemv.json), while a two-row dot stays a cuBLAS GEMM."""
    if h.shape[0] != 1:
        return h @ w
    return (jnp.concatenate([h, h]) @ w)[:1]


def decode_step(params: dict, config: TransformerConfig, tokens: jax.Array,
                cache: KVCache) -> tuple[jax.Array, KVCache]:
    """One token per sequence with inference_params; same cache layout and semantics as transformer.decode()."""
    h, kv, hd, m = config.n_heads, config.n_kv_heads, config.head_dim, config.mlp_dim
    batch = tokens.shape[0]
    positions = cache.lengths[:, None]
    x = jnp.take(params["embed"], tokens, axis=0)                        # [B, d]
    attention = lambda q, k_cache, v_cache: tree_attention_ops.tree_attention(
        q, k_cache, v_cache, cache.lengths, _causal(1), backend=config.cache_attention)
    if config.numerics == "invariant":     # the row-tiled GEMVs and attention of _forward_cached_invariant
        eps, backend = config.norm_eps, config.invariant_gemv
        norm_matmul = lambda x, scale, w: _invariant_matmul(x, w, scale, eps=eps, backend=backend)
        swiglu = lambda x, scale, w: _invariant_matmul(x, w, scale, swiglu=True, eps=eps, backend=backend)
        add_matmul = lambda x, h, w: _invariant_matmul(h, w, residual=x, backend=backend)
        attention = lambda q, k_cache, v_cache: invariant_attention(q, k_cache, v_cache, cache.lengths, positions,
                                                                    _causal(1))
    elif config.decode_kernel in ("pallas", "pallas_splitk"):   # norm + GEMV (+ SwiGLU / residual) fused
        eps, backend = config.norm_eps, config.decode_kernel
        norm_matmul = lambda x, scale, w: fused_gemv_ops.fused_gemv(x, w, scale, eps=eps, backend=backend)
        swiglu = lambda x, scale, w: fused_gemv_ops.fused_gemv(x, w, scale, swiglu=True, eps=eps, backend=backend)
        add_matmul = lambda x, h, w: fused_gemv_ops.fused_gemv(h, w, residual=x, backend=backend)
    else:
        dot = _dot_as_gemm if config.decode_kernel == "xla_two_rows" else jnp.matmul
        norm_matmul = lambda x, scale, w: dot(_rms_norm(x, scale, config.norm_eps), w)
        swiglu = lambda x, scale, w: _swiglu(dot(_rms_norm(x, scale, config.norm_eps), w), m)
        add_matmul = lambda x, h, w: x + dot(h, w)
    ks, vs = [], []
    for p, k_cache, v_cache in zip(params["layers"], cache.k, cache.v):
        qkv = norm_matmul(x, p["attention_norm"], p["wqkv"])
        q = rope(qkv[:, : h * hd].reshape(batch, 1, h, hd), positions, config.rope_theta)
        k = rope(qkv[:, h * hd: (h + kv) * hd].reshape(batch, 1, kv, hd), positions, config.rope_theta)
        v = qkv[:, (h + kv) * hd:].reshape(batch, 1, kv, hd)
        k_cache, v_cache = _write(k_cache, k, cache.lengths), _write(v_cache, v, cache.lengths)
        out = attention(q, k_cache, v_cache)
        x = add_matmul(x, out.reshape(batch, h * hd).astype(x.dtype), p["wo"])
        x = add_matmul(x, swiglu(x, p["mlp_norm"], p["w_gate_up"]), p["w_down"])
        ks.append(k_cache)
        vs.append(v_cache)
    if config.decode_kernel == "pallas" and config.numerics != "invariant":   # the column-slab kernel: LM head on XLA
        logits = _rms_norm(x, params["final_norm"], config.norm_eps) @ params["lm_head"]
    else:
        logits = norm_matmul(x, params["final_norm"], params["lm_head"])
    return logits, KVCache(k=tuple(ks), v=tuple(vs), lengths=cache.lengths + 1)
