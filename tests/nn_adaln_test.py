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
