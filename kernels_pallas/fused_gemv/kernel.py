"""Pallas kernel (Triton lowering): one decode-step GEMV with its neighbours fused in.

Batch-1..16 decode reads every weight once per token, so each matmul is a GEMV bound by its weight bytes,
and around it XLA launches separate small kernels (RMSNorm, SwiGLU, residual add), each a few µs of launch
and drain inside the decode loop. This kernel does norm -> GEMV -> epilogue in one launch:

  * grid over output column blocks (block_n columns per program); each program streams its [d, block_n]
    slab of the weight in [block_k, block_n] tiles (the only large read);
  * the RMSNorm statistic is a first pass over x (B x d, tiny and cached), recomputed per program rather
    than launched separately; x is normalised tile by tile and cast to the weight dtype for the dot;
  * swiglu: the same program reads the gate tile and the matching up tile (w = [gate | up]) and writes
    silu(gate) * up, so the [B, 2m] pre-activation never leaves registers;
  * residual: the output block is residual + y.

Rows (the batch) are padded to 16 for the tensor-core dot. Pallas' Triton backend is deprecated in favour of
Mosaic GPU; the structure ports directly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

MIN_ROWS = 16


def _kernel(*refs, norm: bool, swiglu: bool, residual: bool, block_k: int, eps: float):
    refs = list(refs)
    x_ref = refs.pop(0)
    scale_ref = refs.pop(0) if norm else None
    w_ref = refs.pop(0)
    up_ref = refs.pop(0) if swiglu else None
    res_ref = refs.pop(0) if residual else None
    (o_ref,) = refs
    rows, dim = x_ref.shape
    num_k = dim // block_k

    inv = None
    if norm:
        def sum_squares(k, total):
            xk = x_ref[:, pl.ds(k * block_k, block_k)].astype(jnp.float32)
            return total + jnp.sum(xk * xk, axis=1)
        total = jax.lax.fori_loop(0, num_k, sum_squares, jnp.zeros((rows,), jnp.float32))
        inv = jax.lax.rsqrt(total / dim + eps)

    def tile(k):
        xk = x_ref[:, pl.ds(k * block_k, block_k)]
        if norm:
            # Same rounding as the reference: normalise in f32, round to x's dtype, then to the weight's.
            normed = xk.astype(jnp.float32) * inv[:, None] * scale_ref[pl.ds(k * block_k, block_k)].astype(jnp.float32)
            xk = normed.astype(x_ref.dtype)
        return xk.astype(w_ref.dtype)

    def body(k, accs):
        xk = tile(k)
        out = [accs[0] + jnp.dot(xk, w_ref[pl.ds(k * block_k, block_k), :], preferred_element_type=jnp.float32)]
        if swiglu:
            out.append(accs[1] + jnp.dot(xk, up_ref[pl.ds(k * block_k, block_k), :],
                                         preferred_element_type=jnp.float32))
        return tuple(out)

    block_n = o_ref.shape[1]
    init = tuple(jnp.zeros((rows, block_n), jnp.float32) for _ in range(2 if swiglu else 1))
    accs = jax.lax.fori_loop(0, num_k, body, init)
    y = accs[0]
    if swiglu:
        y = jax.nn.silu(y) * accs[1]
    y = y.astype(o_ref.dtype)
    if residual:
        y = res_ref[...] + y
    o_ref[...] = y


@functools.partial(jax.jit, static_argnames=("swiglu", "eps", "block_n", "block_k", "interpret", "num_warps",
                                             "row_block"))
def fused_gemv(x, w, norm_scale=None, residual=None, up=None, *, swiglu: bool = False, eps: float = 1e-5,
               block_n: int | None = None, block_k: int = 256, interpret: bool = False, num_warps: int = 4,
               row_block: int | None = None):
    """Same contract as reference.fused_gemv; d must be a multiple of block_k and the output width (m for
    swiglu) of block_n. block_n None: 32 columns per program where that still gives >= 128 programs (about
    one per SM of an H100/H200, so every SM streams weights), else 16.

    up: with swiglu, the up matrix [d, m] as its own array (w is then the gate [d, m]), else w = [gate | up].
    row_block: None pads all rows into one tile (rows = next power of two >= 16). An int R tiles the rows in
    blocks of R (a second grid axis): every row is then computed by the same [R, block_k] x [block_k, block_n]
    program whatever the number of rows, so a row's result does not depend on how many rows the call has
    (batch-invariant; core.nn.transformer's numerics="invariant")."""
    batch, dim = x.shape
    if up is not None and (not swiglu or up.shape != w.shape):
        raise ValueError(f"fused_gemv's up matrix needs swiglu=True and w's shape; got up {up.shape}, w {w.shape}.")
    width = w.shape[1] // 2 if swiglu and up is None else w.shape[1]
    block_k = min(block_k, dim)
    if block_n is None:
        block_n = 32 if width % 32 == 0 and width // 32 >= 128 else 16
    if dim % block_k or width % block_n or w.shape[0] != dim:
        raise ValueError(f"fused_gemv needs x [B, d] and w [d, n] with d % block_k == 0 and the output width % "
                         f"block_n == 0; got x {x.shape}, w {w.shape}, block_k {block_k}, block_n {block_n}.")
    if row_block is None:
        rows = tile_rows = max(MIN_ROWS, pl.next_power_of_2(batch))
    else:
        tile_rows, rows = row_block, -(-batch // row_block) * row_block
    pad = lambda a: jnp.pad(a, ((0, rows - batch), (0, 0)))
    norm, res = norm_scale is not None, residual is not None
    operands = [pad(x)]
    in_specs = [pl.BlockSpec((tile_rows, dim), lambda i, j: (i, 0))]
    if norm:
        operands.append(norm_scale)
        in_specs.append(pl.BlockSpec((dim,), lambda i, j: (0,)))
    operands.append(w)
    in_specs.append(pl.BlockSpec((dim, block_n), lambda i, j: (0, j)))
    if swiglu and up is not None:
        operands.append(up)
        in_specs.append(pl.BlockSpec((dim, block_n), lambda i, j: (0, j)))
    elif swiglu:                    # the up half of [gate | up]: same array, blocks shifted by width
        operands.append(w)
        in_specs.append(pl.BlockSpec((dim, block_n), lambda i, j: (0, j + width // block_n)))
    if res:
        operands.append(pad(residual.astype(x.dtype)))
        in_specs.append(pl.BlockSpec((tile_rows, block_n), lambda i, j: (i, j)))
    kernel = functools.partial(_kernel, norm=norm, swiglu=swiglu, residual=res, block_k=block_k, eps=eps)
    out = pl.pallas_call(
        kernel,
        grid=(rows // tile_rows, width // block_n),
        in_specs=in_specs,
        out_specs=pl.BlockSpec((tile_rows, block_n), lambda i, j: (i, j)),
        out_shape=jax.ShapeDtypeStruct((rows, width), x.dtype),
        interpret=interpret,
        compiler_params=None if interpret else triton_params(num_warps),
    )(*operands)
    return out[:batch]


def triton_params(num_warps: int, num_stages: int = 2):
    from jax.experimental.pallas import triton as pl_triton
    return pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages)
