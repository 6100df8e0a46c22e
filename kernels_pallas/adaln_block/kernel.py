"""Pallas kernel (Triton lowering): one whole AdaLN-zero transformer block (core.nn.adaln.AdaLNZeroBlock,
inference) over a few tokens per sample, in ONE launch.

LeWM's CEM planner calls the 6-block predictor 150 times per plan on 300 samples x 3 tokens; each block is
~15 small XLA kernels (norms, modulation, QKV GEMM, attention fusions, out-projection, gates, MLP), so a plan
is ~13k launches and kernel-latency bound (47.5 ms on the H200, ~3.5 us per kernel; the FLOPs take ~5 ms).
Here each program takes a tile of `samples_per_tile` samples x P (tokens padded to a power of two) rows and
runs the block end to end in registers / shared memory:

  * modulated LayerNorm (layout "dit": modulate(LN_affine(x)); "official": LN_affine(modulate(LN(x))));
  * attention head by head: q, k, v = h @ W[:, head], scores over the tile's rows masked to the same sample
    and causal within it (a block-diagonal mask, so the tile is one [R, R] score matrix per head), softmax,
    p @ v, and the head's slice of the output projection accumulated: the [R, heads*hd] activations never
    leave the program;
  * gate, residual, second modulated LayerNorm, MLP chunk by chunk (fc1 -> exact GELU -> fc2 accumulated),
    gate, residual.

The width is padded to a power of two with zero weights (Triton blocks are powers of two); the LayerNorm
statistics mask the padding. Weights are read once per program (a tile), so small tiles trade weight reads
for more programs; the planner's 300 samples in tiles of 8 are 38 programs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

LAYOUTS = ("dit", "official")
SHARED_MEMORY_BUDGET = 160 * 1024      # bytes for the MLP loop's operands; leaves room for the rest


def _layer_norm(x, valid, width: int, eps: float):
    """LayerNorm over the `width` real columns of x [R, Wp] (f32; padded columns masked, returned as 0)."""
    mean = jnp.sum(x, axis=1, keepdims=True) / width
    centered = jnp.where(valid, x - mean, 0.0)
    var = jnp.sum(centered * centered, axis=1, keepdims=True) / width
    return centered * jax.lax.rsqrt(var + eps)


def _erf(x):
    """erf by Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7): Pallas' Triton lowering has no erf."""
    a = jnp.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    y = 1.0 - poly * jnp.exp(-a * a)
    return jnp.where(x < 0, -y, y)


def _kernel(x_ref, mod_ref, n1s_ref, n1b_ref, qkv_ref, wo_ref, bo_ref, n2s_ref, n2b_ref, w1_ref, b1_ref, w2_ref,
            b2_ref, o_ref, *, width: int, heads: int, head_dim: int, tokens: int, real_tokens: int, causal: bool,
            layout: str, mlp_chunk: int, eps: float):
    rows, padded = x_ref.shape
    f32 = jnp.float32
    compute = qkv_ref.dtype
    x = x_ref[...].astype(f32)
    valid = jax.lax.broadcasted_iota(jnp.int32, (rows, padded), 1) < width
    mod = lambda k: mod_ref[:, pl.ds(k * padded, padded)].astype(f32)

    def modulated_norm(x, scale_ref, bias_ref, shift, scale):
        affine = lambda h: h * scale_ref[...].astype(f32)[None] + bias_ref[...].astype(f32)[None]
        if layout == "official":
            inner = jnp.where(valid, _layer_norm(x, valid, width, 1e-6) * (1.0 + scale) + shift, 0.0)
            return affine(_layer_norm(inner, valid, width, eps))
        return affine(_layer_norm(x, valid, width, eps)) * (1.0 + scale) + shift

    h = modulated_norm(x, n1s_ref, n1b_ref, mod(0), mod(1)).astype(compute)
    row = jax.lax.broadcasted_iota(jnp.int32, (rows, rows), 0)
    col = jax.lax.broadcasted_iota(jnp.int32, (rows, rows), 1)
    allowed = ((row // tokens) == (col // tokens)) & ((col % tokens) < real_tokens)    # same sample, no padding
    if causal:
        allowed = allowed & ((col % tokens) <= (row % tokens))
    inner = heads * head_dim
    scale = head_dim ** -0.5

    def head(i, acc):
        project = lambda part: jnp.dot(h, qkv_ref[:, pl.ds(part * inner + i * head_dim, head_dim)],
                                       preferred_element_type=f32)
        q, k, v = project(0), project(1), project(2)
        scores = jax.lax.dot_general(q.astype(compute), k.astype(compute), (((1,), (1,)), ((), ())),
                                     preferred_element_type=f32) * scale
        scores = jnp.where(allowed, scores, -jnp.inf)
        probs = jnp.exp(scores - jnp.max(scores, axis=1, keepdims=True))
        probs = probs / jnp.sum(probs, axis=1, keepdims=True)
        attended = jnp.dot(probs.astype(compute), v.astype(compute), preferred_element_type=f32)
        return acc + jnp.dot(attended.astype(compute), wo_ref[pl.ds(i * head_dim, head_dim), :],
                             preferred_element_type=f32)

    attn = jax.lax.fori_loop(0, heads, head, jnp.zeros((rows, padded), f32))
    x = x + mod(2) * (attn + bo_ref[...].astype(f32)[None])
    h = modulated_norm(x, n2s_ref, n2b_ref, mod(3), mod(4)).astype(compute)

    def chunk(c, acc):
        pre = jnp.dot(h, w1_ref[:, pl.ds(c * mlp_chunk, mlp_chunk)], preferred_element_type=f32)
        pre = pre + b1_ref[pl.ds(c * mlp_chunk, mlp_chunk)].astype(f32)[None]
        act = 0.5 * pre * (1.0 + _erf(pre * (2.0 ** -0.5)))     # exact GELU (nnx's default), erf to 1.5e-7
        return acc + jnp.dot(act.astype(compute), w2_ref[pl.ds(c * mlp_chunk, mlp_chunk), :],
                             preferred_element_type=f32)

    mlp = jax.lax.fori_loop(0, w1_ref.shape[1] // mlp_chunk, chunk, jnp.zeros((rows, padded), f32))
    x = x + mod(5) * (mlp + b2_ref[...].astype(f32)[None])
    o_ref[...] = x.astype(o_ref.dtype)


@functools.partial(jax.jit, static_argnames=("heads", "head_dim", "causal", "layout", "samples_per_tile",
                                             "mlp_chunk", "eps", "interpret", "num_warps"))
def adaln_block(x, modulation, params: dict, *, heads: int, head_dim: int, causal: bool = True,
                layout: str = "dit", samples_per_tile: int = 8, mlp_chunk: int = 256, eps: float = 1e-6,
                interpret: bool = False, num_warps: int = 4):
    """x [B, n, w], modulation [B, n, 6w] (shift1, scale1, gate1, shift2, scale2, gate2), params as
    reference.block_params -> [B, n, w]; the same contract as reference.adaln_block."""
    if layout not in LAYOUTS:
        raise ValueError(f"adaln_block layout must be one of {LAYOUTS}, got {layout!r}.")
    batch, tokens, width = x.shape
    inner, mlp_dim = heads * head_dim, params["fc1_kernel"].shape[1]
    if modulation.shape != (batch, tokens, 6 * width) or params["qkv_kernel"].shape != (width, 3 * inner):
        raise ValueError(f"adaln_block needs modulation [B, n, 6w] and a [w, 3 * heads * head_dim] qkv kernel; got "
                         f"x {x.shape}, modulation {modulation.shape}, qkv {params['qkv_kernel'].shape}.")
    mlp_chunk = min(mlp_chunk, mlp_dim)
    P, Wp = pl.next_power_of_2(tokens), pl.next_power_of_2(width)
    S = max(samples_per_tile, pl.cdiv(16, P))                 # >= 16 rows per tile for the tensor-core dots
    rows = S * P
    # Triton stages every dot operand of the MLP loop body in shared memory (fc1 and fc2 chunks, h, the
    # activation): halve the chunk until that fits the SM's budget (227 KiB on Hopper; 256-wide chunks of a
    # 256-wide block asked for 288 KiB on the H200).
    itemsize = jnp.dtype(params["fc1_kernel"].dtype).itemsize
    mlp_smem = lambda c: itemsize * (2 * Wp * c + rows * Wp + rows * c)
    while mlp_chunk > 16 and mlp_smem(mlp_chunk) > SHARED_MEMORY_BUDGET:
        mlp_chunk //= 2
    if mlp_dim % mlp_chunk or head_dim < 16 or head_dim & (head_dim - 1) or mlp_chunk & (mlp_chunk - 1):
        raise ValueError(f"adaln_block needs power-of-two head_dim >= 16 and mlp chunk dividing mlp_dim; got "
                         f"head_dim {head_dim}, mlp_dim {mlp_dim}, chunk {mlp_chunk}.")
    B = pl.cdiv(batch, S) * S
    pad_w = lambda a, axis: jnp.pad(a, [(0, Wp - width if i == axis else 0) for i in range(a.ndim)])
    xp = jnp.pad(x, ((0, B - batch), (0, P - tokens), (0, Wp - width))).reshape(B * P, Wp)
    mod = modulation.reshape(batch, tokens, 6, width)
    mod = jnp.pad(mod, ((0, B - batch), (0, P - tokens), (0, 0), (0, Wp - width))).reshape(B * P, 6 * Wp)
    operands = [xp, mod, pad_w(params["norm1_scale"], 0), pad_w(params["norm1_bias"], 0),
                pad_w(params["qkv_kernel"], 0), pad_w(params["out_kernel"], 1), pad_w(params["out_bias"], 0),
                pad_w(params["norm2_scale"], 0), pad_w(params["norm2_bias"], 0), pad_w(params["fc1_kernel"], 0),
                params["fc1_bias"], pad_w(params["fc2_kernel"], 1), pad_w(params["fc2_bias"], 0)]
    whole = lambda a: pl.BlockSpec(a.shape, lambda i, nd=a.ndim: (0,) * nd)
    in_specs = [pl.BlockSpec((rows, Wp), lambda i: (i, 0)), pl.BlockSpec((rows, 6 * Wp), lambda i: (i, 0))]
    in_specs += [whole(a) for a in operands[2:]]
    kernel = functools.partial(_kernel, width=width, heads=heads, head_dim=head_dim, tokens=P, real_tokens=tokens,
                               causal=causal,
                               layout=layout, mlp_chunk=mlp_chunk, eps=eps)
    compiler_params = None
    if not interpret:
        from jax.experimental.pallas import triton as pl_triton
        compiler_params = pl_triton.CompilerParams(num_warps=num_warps, num_stages=1)
    out = pl.pallas_call(
        kernel, grid=(B // S,), in_specs=in_specs,
        out_specs=pl.BlockSpec((rows, Wp), lambda i: (i, 0)),
        out_shape=jax.ShapeDtypeStruct((B * P, Wp), x.dtype),
        interpret=interpret, compiler_params=compiler_params,
    )(*operands)
    return out.reshape(B, P, Wp)[:batch, :tokens, :width]
