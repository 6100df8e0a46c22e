"""Anti-aliased signed-distance rasterizer: the pixel side of the JAX-native environments.

A frame is a sequence of layers composited in painter's order onto a background. Each layer is a colour and
an alpha map; the alpha of a solid shape is its pixel coverage estimated from the signed distance at the pixel
centre, clip(0.5 - sdf / pixel_size, 0, 1): 1 inside, 0 outside and a linear ramp one pixel wide across the
edge (1-pixel anti-aliasing). TwoRoom's agent is a Gaussian dot, exp(-d^2 / 2 sigma^2).

Everything is elementwise on broadcast coordinates laid out as the output bytes (see ``Grid``) so that,
under ``jit`` and ``vmap``, XLA fuses the whole frame - all SDFs, coverages and blends - into one loop that
writes only the final uint8 pixels; no per-shape full-resolution buffer reaches memory. The price is that
each pixel's geometry is evaluated once per channel (3x the arithmetic), and it needs no scratch memory (an
[H, W] alpha-plane layout wrote f32 planes per frame and ran out of memory at large batches); the measured
trade-off is in papers/lewm/README.md.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array


class Grid(NamedTuple):
    """Pixel-centre coordinates laid out as one flat [H, W * 3] plane of output *bytes*.

    Element (i, 3 j + c) is channel c of pixel (i, j): x [1, 3W] and y [H, 1] hold that pixel's world
    coordinates and ``channel`` [1, 3W] its channel. Computing directly on the byte layout makes the whole
    frame one elementwise expression with no broadcast over channels, which XLA fuses into a single loop
    (a per-pixel alpha reused by three channels would otherwise be materialised, or recomputed anyway).
    """
    x: Array
    y: Array
    channel: Array
    pixel_size: float
    image_size: int


def grid(image_size: int, world_size: float, centre_offset: float = 0.5) -> Grid:
    """Pixel j covers world [j, j + 1) * world_size / image_size; its centre is (j + centre_offset) * scale
    (``centre_offset=0`` puts centres on integer coordinates, TwoRoom's convention). y points down."""
    scale = world_size / image_size
    column = jnp.arange(3 * image_size, dtype=jnp.int32)[None, :]
    x = ((column // 3).astype(jnp.float32) + centre_offset) * scale
    y = ((jnp.arange(image_size, dtype=jnp.float32) + centre_offset) * scale)[:, None]
    return Grid(x, y, column % 3, scale, image_size)


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


def channel_value(g: Grid, colour: Array | Sequence[float]) -> Array:
    """The colour's component for each byte of the grid (a select, no gather)."""
    colour = jnp.asarray(colour, jnp.float32)
    return jnp.where(g.channel == 0, colour[0], jnp.where(g.channel == 1, colour[1], colour[2]))


def blend(g: Grid, canvas: Array, alpha: Array, colour: Array | Sequence[float]) -> Array:
    """Paints `colour` (RGB in [0, 1]) with per-pixel `alpha` over `canvas` (all on the grid's layout)."""
    return canvas + (channel_value(g, colour) - canvas) * alpha


def background(g: Grid, colour: Array | Sequence[float]) -> Array:
    """A uniform canvas, broadcastable to the grid (no full-size fill is materialised)."""
    return channel_value(g, colour)


def to_uint8(g: Grid, canvas: Array) -> Array:
    """Rounds the canvas (values in [0, 1]) to uint8 pixels [H, W, 3]; the reshape is free."""
    canvas = jnp.broadcast_to(canvas, (g.image_size, 3 * g.image_size))
    pixels = jnp.round(jnp.clip(canvas, 0.0, 1.0) * 255.0).astype(jnp.uint8)
    return pixels.reshape(g.image_size, g.image_size, 3)


def rgb(r: int, g: int, b: int) -> tuple[float, float, float]:
    """An 8-bit colour as floats in [0, 1]."""
    return (r / 255.0, g / 255.0, b / 255.0)
