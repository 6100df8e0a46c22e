"""Pallas kernels (Triton lowering): an AdaLN-zero transformer block (core.nn.adaln.AdaLNZeroBlock, inference)
over a few tokens per sample as FOUR tiled GEMM launches with everything else fused into them.

LeWM's CEM planner calls the 6-block predictor 150 times per plan on 300 samples x 3 tokens; XLA runs each block
as ~15 small kernels (norms, modulation, QKV GEMM, attention fusions, out-projection, gates, MLP, GELU), so a plan
is ~13k launches and latency bound (46 ms on the H200; the FLOPs take ~5 ms). The four launches per block:

  1. norm_matmul:       modulated LayerNorm of the row tile (prologue) -> @ W_qkv column tile
  2. attention_out:     per head: q, k, v of the row tile -> block-diagonal causal softmax -> @ W_o's rows of
                        that head, accumulated -> residual + gate * (. + b_o) (epilogue)
  3. norm_matmul:       second modulated LayerNorm -> @ W_fc1 column tile -> + b_fc1 -> exact GELU
  4. matmul_residual:   @ W_fc2 column tile over the K chunks -> residual + gate * (. + b_fc2)

Each launch is a grid over (row tiles, column tiles), so every GEMM spreads over the SMs; a row tile holds whole
samples (tokens padded to a power of two), so attention needs no other tile. (The first version ran the whole
block in ONE launch per 8-sample tile; each program then streamed all 4 MB of the block's weights through one
SM: 229 us per block on the H200, 4.7x slower than XLA's 15 kernels — benchmarks/results/logs/
profile_lewm_s23_fused_block.json.)

Triton blocks are powers of two: the width is zero-padded (weights once, by `prepare_params`; the LayerNorm
statistics mask the padding) and so are the tokens and the batch (once per block stack, by `adaln_blocks`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

LAYOUTS = ("dit", "official")
SAMPLES_PER_TILE = 16        # 16 samples x 4 padded tokens = 64 rows per tile
NORM_COLUMNS = 128           # (at most) the column tile of the QKV and fc1 GEMMs
RESIDUAL_COLUMNS = 64        # (at most) the column tile of the out-projection and fc2 GEMMs (their N is the width)
FC2_CHUNK = 128              # (at most) the K chunk of the fc2 GEMM


def _tile(n: int, most: int) -> int:
    """The largest power of two <= most that divides n (Triton blocks are powers of two)."""
    tile = most
    while n % tile:
        tile //= 2
    return tile


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


def _norm_matmul_kernel(*refs, width: int, layout: str, eps: float, bias: bool, gelu: bool):
    x_ref, shift_ref, scale_ref, ns_ref, nb_ref, w_ref = refs[:6]
    b_ref, o_ref = (refs[6], refs[7]) if bias else (None, refs[6])
    f32 = jnp.float32
    x = x_ref[...].astype(f32)
    valid = jax.lax.broadcasted_iota(jnp.int32, x.shape, 1) < width
    shift, scale = shift_ref[...].astype(f32), scale_ref[...].astype(f32)
    affine = lambda h: h * ns_ref[...].astype(f32)[None] + nb_ref[...].astype(f32)[None]
    if layout == "official":
        inner = jnp.where(valid, _layer_norm(x, valid, width, 1e-6) * (1.0 + scale) + shift, 0.0)
        h = affine(_layer_norm(inner, valid, width, eps))
    else:
        h = affine(_layer_norm(x, valid, width, eps)) * (1.0 + scale) + shift
    out = jnp.dot(h.astype(w_ref.dtype), w_ref[...], preferred_element_type=f32)
    if b_ref is not None:
        out = out + b_ref[...].astype(f32)[None]
    if gelu:
        out = 0.5 * out * (1.0 + _erf(out * (2.0 ** -0.5)))      # exact GELU (nnx's default)
    o_ref[...] = out.astype(o_ref.dtype)


def _attention_out_kernel(qkv_ref, x_ref, gate_ref, wo_ref, bo_ref, o_ref, *, heads: int, head_dim: int,
                          tokens: int, real_tokens: int, causal: bool):
    f32 = jnp.float32
    compute = wo_ref.dtype
    rows = x_ref.shape[0]
    inner = heads * head_dim
    row = jax.lax.broadcasted_iota(jnp.int32, (rows, rows), 0)
    col = jax.lax.broadcasted_iota(jnp.int32, (rows, rows), 1)
    allowed = ((row // tokens) == (col // tokens)) & ((col % tokens) < real_tokens)    # same sample, no padding
    if causal:
        allowed = allowed & ((col % tokens) <= (row % tokens))

    def head(i, acc):
        part = lambda p: qkv_ref[:, pl.ds(p * inner + i * head_dim, head_dim)]
        scores = jax.lax.dot_general(part(0), part(1), (((1,), (1,)), ((), ())),
                                     preferred_element_type=f32) * head_dim ** -0.5
        scores = jnp.where(allowed, scores, -jnp.inf)
        probs = jnp.exp(scores - jnp.max(scores, axis=1, keepdims=True))
        probs = probs / jnp.sum(probs, axis=1, keepdims=True)
        attended = jnp.dot(probs.astype(compute), part(2), preferred_element_type=f32)
        return acc + jnp.dot(attended.astype(compute), wo_ref[pl.ds(i * head_dim, head_dim), :],
                             preferred_element_type=f32)

    acc = jax.lax.fori_loop(0, heads, head, jnp.zeros(o_ref.shape, f32))
    out = x_ref[...].astype(f32) + gate_ref[...].astype(f32) * (acc + bo_ref[...].astype(f32)[None])
    o_ref[...] = out.astype(o_ref.dtype)


def _matmul_residual_kernel(a_ref, x_ref, gate_ref, w_ref, b_ref, o_ref, *, chunk: int):
    f32 = jnp.float32

    def step(c, acc):
        return acc + jnp.dot(a_ref[:, pl.ds(c * chunk, chunk)], w_ref[pl.ds(c * chunk, chunk), :],
                             preferred_element_type=f32)

    acc = jax.lax.fori_loop(0, a_ref.shape[1] // chunk, step, jnp.zeros(o_ref.shape, f32))
    out = x_ref[...].astype(f32) + gate_ref[...].astype(f32) * (acc + b_ref[...].astype(f32)[None])
    o_ref[...] = out.astype(o_ref.dtype)


def prepare_params(params: dict) -> dict:
    """The block's arrays (reference.block_params) with the width zero-padded to a power of two: call once per
    set of weights, outside the loops that call the block (a planner's CEM iterations)."""
    width = params["norm1_scale"].shape[0]
    padded = pl.next_power_of_2(width)
    if params["qkv_kernel"].shape[0] == padded:
        return params
    rows = {"norm1_scale", "norm1_bias", "norm2_scale", "norm2_bias", "qkv_kernel", "fc1_kernel", "out_bias",
            "fc2_bias"}
    columns = {"out_kernel", "fc2_kernel"}

    def pad(name, a):
        axis = 0 if name in rows else 1 if name in columns else None
        if axis is None:
            return a
        return jnp.pad(a, [(0, padded - width if i == axis else 0) for i in range(a.ndim)])

    return {name: pad(name, a) for name, a in params.items()}


def _check(width: int, tokens: int, modulation_shape, params: dict, heads: int, head_dim: int, layout: str):
    if layout not in LAYOUTS:
        raise ValueError(f"adaln_block layout must be one of {LAYOUTS}, got {layout!r}.")
    inner, padded = heads * head_dim, pl.next_power_of_2(width)
    if params["qkv_kernel"].shape not in ((width, 3 * inner), (padded, 3 * inner)):
        raise ValueError(f"adaln_block needs a [w, 3 * heads * head_dim] qkv kernel; got width {width}, "
                         f"qkv {params['qkv_kernel'].shape}, heads {heads}, head_dim {head_dim}.")
    if modulation_shape[-1] != 6 * width:
        raise ValueError(f"adaln_block needs modulation [B, n, 6w] for width {width}; got {modulation_shape}.")
    mlp = params["fc1_kernel"].shape[1]
    if head_dim < 16 or head_dim & (head_dim - 1) or _tile(mlp, FC2_CHUNK) < 16:
        raise ValueError(f"adaln_block needs a power-of-two head_dim >= 16 and an mlp_dim that a power of two "
                         f">= 16 divides; got head_dim {head_dim}, mlp_dim {mlp}.")


def _block(xp, modp, p, *, width, heads, head_dim, tokens, real_tokens, causal, layout, eps, rows, interpret,
           num_warps, num_stages):
    """One block on padded operands: xp [M, Wp], modp [M, 6 Wp], p = prepare_params(...) -> [M, Wp]."""
    m, wp = xp.shape
    inner, mlp = heads * head_dim, p["fc1_kernel"].shape[1]
    compiler_params = None
    if not interpret:
        from jax.experimental.pallas import triton as pl_triton
        compiler_params = pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages)
    call = functools.partial(pl.pallas_call, interpret=interpret, compiler_params=compiler_params)
    row_tile = lambda cols: pl.BlockSpec((rows, cols), lambda i, j: (i, 0))
    whole_vector = pl.BlockSpec((wp,), lambda i, j: (0,))
    res_cols = _tile(wp, RESIDUAL_COLUMNS)
    # modulation part k (shift1, scale1, gate1, shift2, scale2, gate2) of the row tile: whole, or column tile j
    mod_whole = lambda k: pl.BlockSpec((rows, wp), lambda i, j, k=k: (i, k))
    mod_tile = lambda k: pl.BlockSpec((rows, res_cols), lambda i, j, k=k: (i, k * (wp // res_cols) + j))

    def norm_matmul(x, shift, scale, ns, nb, w, b, gelu):
        n = w.shape[1]
        cols = _tile(n, NORM_COLUMNS)
        kernel = functools.partial(_norm_matmul_kernel, width=width, layout=layout, eps=eps, bias=b is not None,
                                   gelu=gelu)
        specs = [row_tile(wp), mod_whole(shift), mod_whole(scale), whole_vector, whole_vector,
                 pl.BlockSpec((wp, cols), lambda i, j: (0, j))]
        specs += [] if b is None else [pl.BlockSpec((cols,), lambda i, j: (j,))]
        return call(kernel, grid=(m // rows, n // cols), in_specs=specs,
                    out_specs=pl.BlockSpec((rows, cols), lambda i, j: (i, j)),
                    out_shape=jax.ShapeDtypeStruct((m, n), w.dtype))(
            *[a for a in (x, modp, modp, ns, nb, w, b) if a is not None])

    residual_grid = (m // rows, wp // res_cols)
    out_tile = pl.BlockSpec((rows, res_cols), lambda i, j: (i, j))
    vector = pl.BlockSpec((res_cols,), lambda i, j: (j,))
    qkv = norm_matmul(xp, 0, 1, p["norm1_scale"], p["norm1_bias"], p["qkv_kernel"], None, gelu=False)
    attention = functools.partial(_attention_out_kernel, heads=heads, head_dim=head_dim, tokens=tokens,
                                  real_tokens=real_tokens, causal=causal)
    xp = call(attention, grid=residual_grid,
              in_specs=[row_tile(3 * inner), out_tile, mod_tile(2),
                        pl.BlockSpec((inner, res_cols), lambda i, j: (0, j)), vector],
              out_specs=out_tile, out_shape=jax.ShapeDtypeStruct(xp.shape, xp.dtype))(
        qkv, xp, modp, p["out_kernel"], p["out_bias"])
    hidden = norm_matmul(xp, 3, 4, p["norm2_scale"], p["norm2_bias"], p["fc1_kernel"], p["fc1_bias"], gelu=True)
    return call(functools.partial(_matmul_residual_kernel, chunk=_tile(mlp, FC2_CHUNK)), grid=residual_grid,
                in_specs=[row_tile(mlp), out_tile, mod_tile(5),
                          pl.BlockSpec((mlp, res_cols), lambda i, j: (0, j)), vector],
                out_specs=out_tile, out_shape=jax.ShapeDtypeStruct(xp.shape, xp.dtype))(
        hidden, xp, modp, p["fc2_kernel"], p["fc2_bias"])


@functools.partial(jax.jit, static_argnames=("heads", "head_dim", "causal", "layout", "eps", "samples_per_tile",
                                             "interpret", "num_warps", "num_stages"))
def adaln_blocks(x, modulations, params_list, *, heads: int, head_dim: int, causal: bool = True,
                 layout: str = "dit", eps: float = 1e-6, samples_per_tile: int = SAMPLES_PER_TILE,
                 interpret: bool = False, num_warps: int = 4, num_stages: int = 2):
    """A stack of blocks: x [B, n, w], modulations [depth] of [B, n, 6w], params_list [depth] of block_params
    (raw or prepare_params'd) -> [B, n, w]. Tokens, batch and width are padded once for the whole stack."""
    batch, tokens, width = x.shape
    if len(modulations) != len(params_list):
        raise ValueError(f"adaln_blocks needs one modulation per block; got {len(modulations)} modulations and "
                         f"{len(params_list)} blocks.")
    for modulation, params in zip(modulations, params_list):
        _check(width, tokens, modulation.shape, params, heads, head_dim, layout)
        if modulation.shape != (batch, tokens, 6 * width):
            raise ValueError(f"adaln_block needs modulation [B, n, 6w] = {(batch, tokens, 6 * width)}; got "
                             f"{modulation.shape}.")
    P, Wp = pl.next_power_of_2(tokens), pl.next_power_of_2(width)
    S = max(samples_per_tile, pl.cdiv(16, P))                 # >= 16 rows per tile for the tensor-core dots
    B = pl.cdiv(batch, S) * S
    xp = jnp.pad(x, ((0, B - batch), (0, P - tokens), (0, Wp - width))).reshape(B * P, Wp)
    mods = jnp.stack(modulations).reshape(len(modulations), batch, tokens, 6, width)
    mods = jnp.pad(mods, ((0, 0), (0, B - batch), (0, P - tokens), (0, 0), (0, Wp - width)))
    mods = mods.reshape(len(modulations), B * P, 6 * Wp).astype(x.dtype)
    for depth, params in enumerate(params_list):
        xp = _block(xp, mods[depth], prepare_params(params), width=width, heads=heads, head_dim=head_dim,
                    tokens=P, real_tokens=tokens, causal=causal, layout=layout, eps=eps, rows=S * P,
                    interpret=interpret, num_warps=num_warps, num_stages=num_stages)
    return xp.reshape(B, P, Wp)[:batch, :tokens, :width]


def adaln_block(x, modulation, params: dict, *, heads: int, head_dim: int, causal: bool = True,
                layout: str = "dit", eps: float = 1e-6, samples_per_tile: int = SAMPLES_PER_TILE,
                interpret: bool = False):
    """x [B, n, w], modulation [B, n, 6w] (shift1, scale1, gate1, shift2, scale2, gate2), params as
    reference.block_params -> [B, n, w]; the same contract as reference.adaln_block."""
    return adaln_blocks(x, [modulation], [params], heads=heads, head_dim=head_dim, causal=causal, layout=layout,
                        eps=eps, samples_per_tile=samples_per_tile, interpret=interpret)
