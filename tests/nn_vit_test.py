"""ViT: the encoder maps pixels to CLS features that depend on every patch."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core.nn import vit


def test_vit_features_depend_on_every_patch():
    config = vit.ViTConfig(image_size=28, patch_size=14, width=16, depth=1, heads=2, mlp_dim=32)
    model = vit.ViT(config, nnx.Rngs(0))
    pixels = jax.random.normal(jax.random.key(0), (1, 28, 28, 3))
    base = model(pixels)
    assert base.shape == (1, 16)
    for row, col in ((0, 0), (20, 20)):      # first and last patch both reach the CLS token
        moved = model(pixels.at[0, row, col].add(5.0))
        assert float(jnp.abs(moved - base).max()) > 1e-4


def test_padding_the_tokens_once_leaves_the_features_unchanged():
    base = dict(image_size=28, patch_size=14, width=16, depth=2, heads=2, mlp_dim=32, attention_pad_multiple=8)
    per_layer = vit.ViT(vit.ViTConfig(**base), nnx.Rngs(0))
    once = vit.ViT(vit.ViTConfig(**base, pad_tokens_once=True), nnx.Rngs(0))
    pixels = jax.random.normal(jax.random.key(0), (3, 28, 28, 3))
    np.testing.assert_allclose(once(pixels), per_layer(pixels), atol=1e-5, rtol=1e-5)
