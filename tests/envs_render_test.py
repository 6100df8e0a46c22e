"""The SDF rasterizer: exact distances, area-preserving anti-aliasing, byte layout."""
import math

import jax.numpy as jnp
import numpy as np

from core.envs import render


def test_box_sdf_exact_values():
    x = jnp.array([0.0, 3.0, 4.0, 0.0, 5.0])
    y = jnp.array([0.0, 0.0, 5.0, 1.0, 6.0])
    sdf = render.axis_box_sdf(x, y, (0.0, 0.0), (2.0, 2.0))
    np.testing.assert_allclose(sdf, [-2.0, 1.0, math.hypot(2, 3), -1.0, 5.0], atol=1e-6)


def test_oriented_box_sdf_rotates_with_the_body():
    # A 10 x 2 box turned by 90 degrees is 2 wide along x and 10 tall along y.
    sdf = render.oriented_box_sdf(jnp.array([0.0, 3.0]), jnp.array([4.0, 0.0]), jnp.zeros(2), jnp.pi / 2,
                                  (5.0, 1.0))
    np.testing.assert_allclose(sdf, [-1.0, 2.0], atol=1e-5)


def _coverage_plane(image_size, world, sdf_fn):
    g = render.grid(image_size, world)
    return np.asarray(render.coverage(sdf_fn(g.x, g.y), g.pixel_size))[:, ::3]


def test_coverage_integrates_to_the_shape_area():
    # 1-pixel anti-aliasing keeps areas: the summed coverage matches the exact area to a fraction of a pixel row.
    pixel = 512 / 224
    circle = _coverage_plane(224, 512.0, lambda x, y: render.circle_sdf(x, y, jnp.array([251.3, 260.7]), 40.0))
    np.testing.assert_allclose(circle.sum() * pixel ** 2, math.pi * 40.0 ** 2, rtol=5e-3)
    box = _coverage_plane(224, 512.0, lambda x, y: render.oriented_box_sdf(
        x, y, jnp.array([240.2, 270.9]), jnp.array(0.6), (60.0, 15.0)))
    np.testing.assert_allclose(box.sum() * pixel ** 2, 120.0 * 30.0, rtol=5e-3)
    edge = (circle > 0) & (circle < 1)
    assert edge.sum() > 2 * math.pi * 40 / pixel * 0.8  # a ramp all around the rim, not a hard step


def test_grid_is_the_rgb_byte_layout():
    g = render.grid(8, 8.0)
    image = render.to_uint8(g, render.background(g, render.rgb(255, 128, 0)))
    assert image.shape == (8, 8, 3) and image.dtype == jnp.uint8
    np.testing.assert_array_equal(np.asarray(image).reshape(-1, 3), np.tile([255, 128, 0], (64, 1)))
    # x of byte (i, 3 j + c) is pixel j's centre, for every channel c.
    np.testing.assert_allclose(np.asarray(g.x)[0, :6], [0.5, 0.5, 0.5, 1.5, 1.5, 1.5])


def test_blend_paints_only_where_alpha():
    g = render.grid(4, 4.0)
    alpha = jnp.where(g.x < 2.0, 1.0, 0.0) * jnp.ones_like(g.y)
    image = np.asarray(render.to_uint8(g, render.blend(g, render.background(g, (1.0, 1.0, 1.0)), alpha,
                                                       (0.0, 0.0, 1.0))))
    np.testing.assert_array_equal(image[:, :2], np.tile([0, 0, 255], (4, 2, 1)))
    np.testing.assert_array_equal(image[:, 2:], np.full((4, 2, 3), 255))


def test_gaussian_dot_peak_and_width():
    d = render.gaussian_dot(jnp.array([10.0, 17.0]), jnp.array([10.0, 10.0]), jnp.array([10.0, 10.0]), 7.0)
    np.testing.assert_allclose(d, [1.0, math.exp(-0.5)], rtol=1e-6)
