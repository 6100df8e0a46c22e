"""Plain-jnp reference of the fused decode GEMVs (kernel.py): what XLA runs in core.nn.decode.decode_step.

fused_gemv(x[B, d], w[d, n or 2m], norm_scale=None, residual=None, swiglu=False, eps):
  h = rms_norm(x) * norm_scale (computed in f32, cast back to x's dtype) when norm_scale is given, else x
  y = h @ w                                  (f32 accumulation, x's dtype out)
  swiglu: w = [gate | up] (m columns each)  -> y = silu(h @ gate) * (h @ up); or w = gate and up given
  residual: y = residual + y
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    xf = x.astype(jnp.float32)
    normed = xf * jax.lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + eps) * scale.astype(jnp.float32)
    return normed.astype(x.dtype)


def fused_gemv(x: jax.Array, w: jax.Array, norm_scale: jax.Array | None = None, residual: jax.Array | None = None,
               up: jax.Array | None = None, *, swiglu: bool = False, eps: float = 1e-5) -> jax.Array:
    h = x if norm_scale is None else rms_norm(x, norm_scale, eps)
    if up is not None:      # swiglu with separate gate (w) and up matrices
        w = jnp.concatenate([w, up], 1)
    y = jnp.dot(h, w, preferred_element_type=jnp.float32)
    if swiglu:
        half = w.shape[1] // 2
        y = jax.nn.silu(y[:, :half]) * y[:, half:]
    y = y.astype(x.dtype)
    return y if residual is None else residual + y


def fused_gemv_tiled(x: jax.Array, w: jax.Array, norm_scale: jax.Array | None = None,
                     residual: jax.Array | None = None, up: jax.Array | None = None, *, swiglu: bool = False,
                     eps: float = 1e-5, row_block: int = 16) -> jax.Array:
    """fused_gemv computed one [row_block, d] tile at a time (a lax.map over tiles, one compiled body): a row's
    result does not depend on how many rows the call has, like the kernel with row_block (for CPU runs)."""
    batch = x.shape[0]
    rows = -(-batch // row_block) * row_block
    tiles = lambda a: jnp.pad(a, ((0, rows - batch), (0, 0))).reshape(rows // row_block, row_block, a.shape[1])
    has_residual = residual is not None
    operands = (tiles(x), tiles(residual) if has_residual else jnp.zeros((rows // row_block,), x.dtype))

    def tile(args):
        xt, rt = args
        return fused_gemv(xt, w, norm_scale, rt if has_residual else None, up, swiglu=swiglu, eps=eps)

    out = jax.lax.map(tile, operands)
    return out.reshape(rows, out.shape[-1])[:batch]
