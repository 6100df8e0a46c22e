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


@functools.partial(jax.jit, static_argnames=("swiglu", "eps", "block_n", "block_k", "interpret", "num_warps"))
def fused_gemv(x, w, norm_scale=None, residual=None, *, swiglu: bool = False, eps: float = 1e-5,
               block_n: int | None = None, block_k: int = 256, interpret: bool = False, num_warps: int = 4):
    """Same contract as reference.fused_gemv; d must be a multiple of block_k and the output width (m for
    swiglu) of block_n. block_n None: 32 columns per program where that still gives >= 128 programs (about
    one per SM of an H100/H200, so every SM streams weights), else 16."""
    batch, dim = x.shape
    width = w.shape[1] // 2 if swiglu else w.shape[1]
    block_k = min(block_k, dim)
    if block_n is None:
        block_n = 32 if width % 32 == 0 and width // 32 >= 128 else 16
    if dim % block_k or width % block_n or w.shape[0] != dim:
        raise ValueError(f"fused_gemv needs x [B, d] and w [d, n] with d % block_k == 0 and the output width % "
                         f"block_n == 0; got x {x.shape}, w {w.shape}, block_k {block_k}, block_n {block_n}.")
    rows = max(MIN_ROWS, pl.next_power_of_2(batch))
    pad = lambda a: jnp.pad(a, ((0, rows - batch), (0, 0)))
    norm, res = norm_scale is not None, residual is not None
    operands = [pad(x)]
    in_specs = [pl.BlockSpec((rows, dim), lambda j: (0, 0))]
    if norm:
        operands.append(norm_scale)
        in_specs.append(pl.BlockSpec((dim,), lambda j: (0,)))
    operands.append(w)
    in_specs.append(pl.BlockSpec((dim, block_n), lambda j: (0, j)))
    if swiglu:                      # the up half of [gate | up]: same array, blocks shifted by width
        operands.append(w)
        in_specs.append(pl.BlockSpec((dim, block_n), lambda j: (0, j + width // block_n)))
    if res:
        operands.append(pad(residual.astype(x.dtype)))
        in_specs.append(pl.BlockSpec((rows, block_n), lambda j: (0, j)))
    kernel = functools.partial(_kernel, norm=norm, swiglu=swiglu, residual=res, block_k=block_k, eps=eps)
    out = pl.pallas_call(
        kernel,
        grid=(width // block_n,),
        in_specs=in_specs,
        out_specs=pl.BlockSpec((rows, block_n), lambda j: (0, j)),
        out_shape=jax.ShapeDtypeStruct((rows, width), x.dtype),
        interpret=interpret,
        compiler_params=None if interpret else _triton_params(num_warps),
    )(*operands)
    return out[:batch]


def _triton_params(num_warps: int):
    from jax.experimental.pallas import triton as pl_triton
    return pl_triton.CompilerParams(num_warps=num_warps, num_stages=2)
