"""AdaLN-zero blocks: the elementwise short-sequence attention equals XLA's dot-product attention."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core.nn.adaln import short_sequence_attention


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("n", [1, 3, 8])
def test_short_sequence_attention_matches_dot_product_attention(causal, n):
    q, k, v = (jax.random.normal(jax.random.key(i), (5, n, 4, 16)) for i in range(3))
    want = jax.nn.dot_product_attention(q, k, v, is_causal=causal)
    np.testing.assert_allclose(short_sequence_attention(q, k, v, causal), want, atol=1e-5, rtol=1e-5)


def test_short_sequence_attention_keeps_bf16_and_its_gradients_match():
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 3, 2, 8)) for i in range(3))
    assert short_sequence_attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), True).dtype == jnp.bfloat16
    ours = jax.grad(lambda q: short_sequence_attention(q, k, v, True).sum())(q)
    want = jax.grad(lambda q: jax.nn.dot_product_attention(q, k, v, is_causal=True).sum())(q)
    np.testing.assert_allclose(ours, want, atol=1e-5)


def test_official_layout_normalises_after_the_modulation_and_keeps_the_parameters():
    from flax import nnx

    from core.nn.adaln import AdaLNZeroBlock
    blocks = {layout: AdaLNZeroBlock(16, 2, 8, 32, 0.0, nnx.Rngs(0), layout=layout) for layout in ("dit", "official")}
    shapes = {k: jax.tree.map(jnp.shape, nnx.state(b, nnx.Param)) for k, b in blocks.items()}
    assert shapes["dit"] == shapes["official"]          # same parameters: checkpoints load in either layout
    x = 3.0 * jax.random.normal(jax.random.key(1), (2, 3, 16)) + 1.0
    shift, scale = (jax.random.normal(jax.random.key(i), (2, 3, 16)) for i in (2, 3))
    official = blocks["official"]._modulated_norm(blocks["official"].norm1, x, shift, scale)
    dit = blocks["dit"]._modulated_norm(blocks["dit"].norm1, x, shift, scale)
    # LN_affine (identity at init) comes last: the branch input is normalised whatever the modulation does
    np.testing.assert_allclose(official.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(official.var(-1), 1.0, atol=1e-3)
    assert np.abs(dit.var(-1) - 1.0).max() > 0.5        # DiT's modulation rescales it
    with pytest.raises(ValueError, match="layout"):
        AdaLNZeroBlock(16, 2, 8, 32, 0.0, nnx.Rngs(0), layout="post")


def test_attention_probability_dropout_is_unbiased_and_off_without_a_key():
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 3, 2, 8)) for i in range(3))
    plain = short_sequence_attention(q, k, v, True)
    np.testing.assert_array_equal(short_sequence_attention(q, k, v, True, 0.5, None), plain)
    dropped = jax.vmap(lambda key: short_sequence_attention(q, k, v, True, 0.5, key))(
        jax.random.split(jax.random.key(9), 4000))
    assert np.abs(dropped[0] - plain).max() > 0.1        # a single draw really drops
    np.testing.assert_allclose(dropped.mean(0), plain, atol=0.08)   # inverted dropout: unbiased in expectation


def test_stacked_modulations_equal_each_blocks_own_and_save_matmuls():
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx
    from core.nn.adaln import AdaLNZeroBlock, stacked_modulations
    blocks = [AdaLNZeroBlock(16, 2, 8, 32, 0.0, nnx.Rngs(i)) for i in range(4)]
    for i, block in enumerate(blocks):     # zero-initialised: give them weights so a mix-up shows
        block.modulation.kernel[...] = jax.random.normal(jax.random.key(i), block.modulation.kernel.shape)
        block.modulation.bias[...] = jax.random.normal(jax.random.key(10 + i), block.modulation.bias.shape)
    condition = jax.random.normal(jax.random.key(20), (2, 3, 16))
    stacked = stacked_modulations(blocks, condition)
    for block, got in zip(blocks, stacked):
        np.testing.assert_allclose(got, block.modulation(jax.nn.silu(condition)), rtol=1e-5, atol=1e-5)
    x = jax.random.normal(jax.random.key(21), (2, 3, 16))
    np.testing.assert_allclose(blocks[0](x, condition, modulation=stacked[0]), blocks[0](x, condition),
                               rtol=1e-5, atol=1e-5)

    def dots(fn):
        text = jax.jit(fn).lower(condition).as_text()
        return text.count("dot_general")
    assert dots(lambda c: stacked_modulations(blocks, c)) == 1
    assert dots(lambda c: [b.modulation(jax.nn.silu(c)) for b in blocks]) == 4
