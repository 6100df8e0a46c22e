"""Pallas kernel (Triton lowering): the decode GEMV split over K, with wide coalesced weight tiles.

Why a second kernel: kernel.py gives each program a [d, 32]-column slab, one program per SM, streamed in
[256, 32] tiles (64-byte rows, two tiles in flight). On the H200 that reads weights at 1.0-1.7 TB/s of the 4.2
measured (benchmarks/results/decode_roofline.json), slower than XLA's GEMVs. A GEMV is bound by how many
weight bytes are in flight per SM, so here:

  * each program reads a [K / split, block_n] slab in [block_k, block_n] tiles with block_n >= 64 columns, so
    every tile row is >= 128 contiguous bytes (coalesced) and the grid has (n / block_n) x split programs,
    several per SM;
  * one row (batch 1, the SD engine's and the roofline's case) is a broadcast multiply accumulated in a
    [block_k, block_n] f32 register tile and reduced once at the end (no tensor core, no padding to 16 rows);
    2-16 rows are padded to 16 and use the tensor-core dot;
  * each split writes its f32 partial sums [split, rows, n]; the epilogue (sum over splits, SwiGLU, cast,
    residual) is one small XLA fusion after the kernel. The RMSNorm statistic is computed in the kernel from
    x (a few KB), as in kernel.py.

Same contract and roundings as reference.fused_gemv. The block sizes are tuning knobs, swept on the GPU by
`python -m benchmarks.gemv`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels_pallas.fused_gemv import kernel as kernel_lib

DOT_ROWS = 16
TARGET_PROGRAMS = 256          # about two per SM of an H100 / H200 (132 SMs)


def largest_pow2_divisor(n: int, cap: int) -> int:
    block = 1
    while block * 2 <= cap and n % (block * 2) == 0:
        block *= 2
    return block


def default_split(dim: int, width: int, block_n: int, block_k: int) -> int:
    """Smallest power-of-two split giving >= TARGET_PROGRAMS programs, while each split keeps >= one tile."""
    split = 1
    while (width // block_n) * split < TARGET_PROGRAMS and dim % (2 * split) == 0 and dim // (2 * split) >= block_k:
        split *= 2
    return split


def _kernel(*refs, norm: bool, swiglu: bool, rows: int, block_k: int, slab: int, eps: float, norm_block: int):
    refs = list(refs)
    x_ref = refs.pop(0)
    scale_ref = refs.pop(0) if norm else None
    w_ref = refs.pop(0)
    up_ref = refs.pop(0) if swiglu else None
    out_refs = refs
    dim = x_ref.shape[1]
    start = pl.program_id(1) * slab

    # One row is read as a vector (ref[0, ...]), so the batch-1 path has no unit dimensions to squeeze.
    load_x = (lambda at, size: x_ref[0, pl.ds(at, size)]) if rows == 1 else (lambda at, size: x_ref[:, pl.ds(at, size)])
    inv = None
    if norm:
        def sum_squares(k, total):
            xk = load_x(k * norm_block, norm_block).astype(jnp.float32)
            return total + jnp.sum(xk * xk, axis=-1)
        zero = jnp.zeros((), jnp.float32) if rows == 1 else jnp.zeros((rows,), jnp.float32)
        total = jax.lax.fori_loop(0, dim // norm_block, sum_squares, zero)
        inv = jax.lax.rsqrt(total / dim + eps)
        inv = inv if rows == 1 else inv[:, None]

    def x_tile(t):
        at = start + t * block_k
        xk = load_x(at, block_k)
        if norm:      # the reference's rounding: normalise in f32, round to x's dtype, then to the weight's
            normed = xk.astype(jnp.float32) * inv * scale_ref[pl.ds(at, block_k)].astype(jnp.float32)
            xk = normed.astype(x_ref.dtype)
        return xk.astype(w_ref.dtype)

    weights = [w_ref] + ([up_ref] if swiglu else [])
    num_tiles = slab // block_k
    block_n = out_refs[0].shape[-1]
    if rows == 1:
        def body(t, accs):
            xk = x_tile(t).astype(jnp.float32)[:, None]
            return tuple(acc + xk * ref[pl.ds(t * block_k, block_k), :].astype(jnp.float32)
                         for acc, ref in zip(accs, weights))
        init = tuple(jnp.zeros((block_k, block_n), jnp.float32) for _ in weights)
        for out_ref, acc in zip(out_refs, jax.lax.fori_loop(0, num_tiles, body, init)):
            out_ref[0, 0, :] = jnp.sum(acc, axis=0)
    else:
        def body(t, accs):
            xk = x_tile(t)
            return tuple(acc + jnp.dot(xk, ref[pl.ds(t * block_k, block_k), :], preferred_element_type=jnp.float32)
                         for acc, ref in zip(accs, weights))
        init = tuple(jnp.zeros((rows, block_n), jnp.float32) for _ in weights)
        for out_ref, acc in zip(out_refs, jax.lax.fori_loop(0, num_tiles, body, init)):
            out_ref[0, :, :] = acc


@functools.partial(jax.jit, static_argnames=("swiglu", "eps", "block_n", "block_k", "split", "num_warps",
                                             "num_stages", "interpret"))
def fused_gemv_splitk(x, w, norm_scale=None, residual=None, up=None, *, swiglu: bool = False, eps: float = 1e-5,
                      block_n: int = 128, block_k: int = 64, split: int | None = None, num_warps: int = 4,
                      num_stages: int = 3, interpret: bool = False):
    """Same contract as reference.fused_gemv. block_n: output columns per program (at most; the largest power of
    two dividing the output width is used); block_k: weight rows per tile (at most; a power of two dividing the
    K slab); split: programs along K (None: enough for ~2 programs per SM)."""
    batch, dim = x.shape
    if up is not None and (not swiglu or up.shape != w.shape):
        raise ValueError(f"fused_gemv_splitk's up matrix needs swiglu=True and w's shape; got up {up.shape}, "
                         f"w {w.shape}.")
    width = w.shape[1] // 2 if swiglu and up is None else w.shape[1]
    block_n = largest_pow2_divisor(width, block_n)     # e.g. a small vocabulary's head in the tests
    if split is None:
        split = default_split(dim, width, block_n, min(block_k, dim))
    slab = dim // split if dim % split == 0 else 0
    block_k = largest_pow2_divisor(slab, block_k) if slab else block_k
    if not slab or w.shape[0] != dim or (block_k < 16 and batch > 1) or slab % block_k:
        raise ValueError(f"fused_gemv_splitk needs x [B, d] and w [d, n] with d % split == 0 and a K slab of >= 16 "
                         f"rows for more than one row; got x {x.shape}, w {w.shape}, "
                         f"block_n {block_n}, block_k {block_k}, split {split}.")
    rows = 1 if batch == 1 else max(DOT_ROWS, pl.next_power_of_2(batch))
    operands = [jnp.pad(x, ((0, rows - batch), (0, 0)))]
    in_specs = [pl.BlockSpec((rows, dim), lambda j, s: (0, 0))]
    norm = norm_scale is not None
    if norm:
        operands.append(norm_scale)
        in_specs.append(pl.BlockSpec((dim,), lambda j, s: (0,)))
    operands.append(w)
    in_specs.append(pl.BlockSpec((slab, block_n), lambda j, s: (s, j)))
    if swiglu and up is not None:
        operands.append(up)
        in_specs.append(pl.BlockSpec((slab, block_n), lambda j, s: (s, j)))
    elif swiglu:              # the up half of [gate | up]: the same array, column blocks shifted by width
        operands.append(w)
        in_specs.append(pl.BlockSpec((slab, block_n), lambda j, s: (s, j + width // block_n)))
    partial = jax.ShapeDtypeStruct((split, rows, width), jnp.float32)
    out_spec = pl.BlockSpec((1, rows, block_n), lambda j, s: (s, 0, j))
    kernel = functools.partial(_kernel, norm=norm, swiglu=swiglu, rows=rows, block_k=block_k, slab=slab, eps=eps,
                               norm_block=largest_pow2_divisor(dim, 1024))
    outs = pl.pallas_call(
        kernel,
        grid=(width // block_n, split),
        in_specs=in_specs,
        out_specs=[out_spec] * (2 if swiglu else 1),
        out_shape=[partial] * (2 if swiglu else 1),
        interpret=interpret,
        compiler_params=None if interpret else kernel_lib.triton_params(num_warps, num_stages),
    )(*operands)
    sums = [o[:, :batch].sum(0) for o in outs]
    y = jax.nn.silu(sums[0]) * sums[1] if swiglu else sums[0]
    y = y.astype(x.dtype)
    return y if residual is None else residual + y
