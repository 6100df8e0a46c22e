"""Anti-aliased signed-distance rasterizer: the pixel side of the JAX-native environments.

A frame is a sequence of layers composited in painter's order onto a background. Each layer is a colour and
an alpha map; the alpha of a solid shape is its pixel coverage estimated from the signed distance at the pixel
centre, clip(0.5 - sdf / pixel_size, 0, 1): 1 inside, 0 outside and a linear ramp one pixel wide across the
edge (1-pixel anti-aliasing). TwoRoom's agent is a Gaussian dot, exp(-d^2 / 2 sigma^2).

Everything is elementwise on broadcast coordinates (x is [1, W], y is [H, 1]) so that, under ``jit`` and
``vmap``, XLA fuses the whole frame - all SDFs, coverages and blends - into one loop that writes only the
final uint8 pixels; no per-shape full-resolution buffer has to reach memory.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array


def pixel_centres(image_size: int, world_size: float, centre_offset: float = 0.5) -> tuple[Array, Array]:
    """World coordinates of pixel centres: x [1, W] and y [H, 1] (x right, y down, origin top-left).

    Pixel j covers world [j, j + 1) * world_size / image_size; its centre sits at (j + centre_offset) * scale.
    ``centre_offset=0`` puts pixel centres on integer coordinates (TwoRoom's convention).
    """
    scale = world_size / image_size
    coords = (jnp.arange(image_size, dtype=jnp.float32) + centre_offset) * scale
    return coords[None, :], coords[:, None]


def coverage(sdf: Array, pixel_size: float) -> Array:
    """Fraction of the pixel covered by the shape, from the signed distance (world units) at its centre."""
    return jnp.clip(0.5 - sdf / pixel_size, 0.0, 1.0)


def circle_sdf(x: Array, y: Array, centre: Array, radius: Array | float) -> Array:
    return jnp.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2) - radius


def _to_body_frame(x: Array, y: Array, position: Array, angle: Array) -> tuple[Array, Array]:
    """Rotates world points into the frame of a body at `position` turned by `angle` (radians)."""
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    dx, dy = x - position[0], y - position[1]
    return cos * dx + sin * dy, -sin * dx + cos * dy


def axis_box_sdf(x: Array, y: Array, centre: Sequence[float] | Array, half_size: Sequence[float] | Array) -> Array:
    """Exact SDF of an axis-aligned box (negative inside)."""
    qx = jnp.abs(x - centre[0]) - half_size[0]
    qy = jnp.abs(y - centre[1]) - half_size[1]
    outside = jnp.sqrt(jnp.maximum(qx, 0.0) ** 2 + jnp.maximum(qy, 0.0) ** 2)
    inside = jnp.minimum(jnp.maximum(qx, qy), 0.0)
    return outside + inside


def boxes_sdf(x: Array, y: Array, position: Array, angle: Array,
              boxes: Sequence[tuple[tuple[float, float], tuple[float, float]]]) -> Array:
    """SDF of a union of boxes ((centre, half_size) in the body frame) of a body at (position, angle).

    The union's SDF is the min of the boxes' SDFs: exact outside and at the edges, which is all coverage uses.
    """
    bx, by = _to_body_frame(x, y, position, angle)
    sdfs = [axis_box_sdf(bx, by, centre, half) for centre, half in boxes]
    result = sdfs[0]
    for sdf in sdfs[1:]:
        result = jnp.minimum(result, sdf)
    return result


def oriented_box_sdf(x: Array, y: Array, position: Array, angle: Array, half_size: Sequence[float]) -> Array:
    return boxes_sdf(x, y, position, angle, [((0.0, 0.0), tuple(half_size))])


def gaussian_dot(x: Array, y: Array, centre: Array, sigma: Array | float) -> Array:
    """exp(-d^2 / 2 sigma^2): TwoRoom's soft agent (1 at the centre)."""
    d2 = (x - centre[0]) ** 2 + (y - centre[1]) ** 2
    return jnp.exp(-d2 / (2.0 * sigma * sigma))


def blend(canvas: Array, alpha: Array, colour: Array | Sequence[float]) -> Array:
    """Paints `colour` (RGB in [0, 1]) over `canvas` [..., 3] with per-pixel `alpha` [...]."""
    alpha = alpha[..., None]
    return canvas * (1.0 - alpha) + jnp.asarray(colour, canvas.dtype) * alpha


def solid(image_size: int, colour: Array | Sequence[float], dtype=jnp.float32) -> Array:
    """A [1, 1, 3] background that broadcasts against the first layer (no full-size fill is materialised)."""
    return jnp.broadcast_to(jnp.asarray(colour, dtype), (1, 1, 3))


def to_uint8(canvas: Array, image_size: int) -> Array:
    """Rounds a [H, W, 3] (or broadcastable) canvas in [0, 1] to uint8 pixels."""
    canvas = jnp.broadcast_to(canvas, (image_size, image_size, 3))
    return jnp.round(jnp.clip(canvas, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def rgb(r: int, g: int, b: int) -> tuple[float, float, float]:
    """An 8-bit colour as floats in [0, 1]."""
    return (r / 255.0, g / 255.0, b / 255.0)
