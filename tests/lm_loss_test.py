"""The chunked cross-entropy (core.lm.chunked_token_nll) equals the plain whole-sequence loss, in value and
gradient, and its compiled program needs less temporary memory."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from core import lm
from core.nn import transformer as tfm


def _inputs(dtype, batch=2, length=37, dim=16, vocab=96, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    hidden = jax.random.normal(k1, (batch, length, dim), jnp.float32).astype(dtype)
    head = (jax.random.normal(k2, (dim, vocab), jnp.float32) * 0.5).astype(dtype)
    labels = jax.random.randint(k3, (batch, length), 0, vocab)
    return hidden, head, labels


def _plain_mean_nll(hidden, head, labels):
    # The pre-existing path: logits in the compute dtype, upcast to f32 for the softmax.
    logits = jnp.einsum("btd,dv->btv", hidden, head).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _chunked_mean_nll(chunk_length, gradient="recompute"):
    if gradient == "forward":
        return lambda hidden, head, labels: lm.chunked_mean_nll(hidden, head, labels, chunk_length)
    return lambda hidden, head, labels: lm.chunked_token_nll(hidden, head, labels, chunk_length).mean()


@pytest.mark.parametrize("chunk_length,gradient", [(8, "recompute"), (37, "recompute"), (8, "forward"),
                                                   (64, "forward")])
def test_f32_loss_and_gradients_equal_the_plain_path(chunk_length, gradient):
    """37 = T; 8 and 64 need padding (which must not count in the mean)."""
    hidden, head, labels = _inputs(jnp.float32)
    grad = lambda f: jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(hidden, head, labels)
    loss, (d_hidden, d_head) = grad(_chunked_mean_nll(chunk_length, gradient))
    want_loss, (want_hidden, want_head) = grad(_plain_mean_nll)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d_hidden, want_hidden, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(d_head, want_head, rtol=1e-5, atol=1e-7)


def test_per_token_values_match_and_padding_is_not_counted():
    hidden, head, labels = _inputs(jnp.float32, length=13)
    nll = jax.jit(lm.chunked_token_nll, static_argnums=3)(hidden, head, labels, 5)
    assert nll.shape == labels.shape and nll.dtype == jnp.float32
    want = optax.softmax_cross_entropy_with_integer_labels(hidden @ head, labels)
    np.testing.assert_allclose(nll, want, rtol=1e-6, atol=1e-6)


def _relative_error(x, reference):
    x, reference = np.asarray(x, np.float32), np.asarray(reference, np.float32)
    return float(np.linalg.norm(x - reference) / np.linalg.norm(reference))


def test_bf16_is_as_close_to_f32_as_the_plain_bf16_path():
    """Tolerance in bf16 (8-bit mantissa): loss within 1e-2 nats and gradients within 2% (relative L2) of the
    f32 result, and never more than 1.5x the plain bf16 path's own error (+ 1e-3)."""
    hidden, head, labels = _inputs(jnp.bfloat16, batch=4, length=64, dim=32, vocab=512, seed=1)
    reference = jax.jit(jax.value_and_grad(_plain_mean_nll, argnums=(0, 1)))(
        hidden.astype(jnp.float32), head.astype(jnp.float32), labels)
    results = {name: jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(hidden, head, labels)
               for name, f in (("plain", _plain_mean_nll), ("recompute", _chunked_mean_nll(16)),
                               ("forward", _chunked_mean_nll(16, "forward")))}
    for name, (loss, grads) in results.items():
        assert grads[0].dtype == jnp.bfloat16 and grads[1].dtype == jnp.bfloat16, name
        assert abs(float(loss) - float(reference[0])) < 1e-2, name
        for got, want in zip(grads, reference[1]):
            assert _relative_error(got, want) < 2e-2, name
        for got, plain, want in zip(grads, results["plain"][1], reference[1]):
            assert _relative_error(got, want) <= 1.5 * _relative_error(plain, want) + 1e-3, name


def test_model_loss_and_parameter_gradients_equal_next_token_loss():
    # Tied embeddings (every LM config): the gradient reaches the embedding through lookup and projection.
    cfg = tfm.TransformerConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16,
                                mlp_dim=64, max_seq_len=32, tie_embeddings=True)
    model = tfm.Transformer(cfg, rngs=nnx.Rngs(0))
    batch = {"tokens": jax.random.randint(jax.random.key(2), (3, 21), 0, cfg.vocab_size)}
    graphdef, params = nnx.split(model)
    grad = lambda f: jax.jit(jax.value_and_grad(lambda p: f(nnx.merge(graphdef, p), batch, None)[0]))(params)
    want_loss, want_grads = grad(lm.make_next_token_loss(0))
    loss, grads = grad(lm.make_next_token_loss(8, "forward"))   # the target config's mode
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, want_grads)


def test_negative_chunk_length_is_one_clear_error():
    with pytest.raises(ValueError, match="chunk_length must be >= 0"):
        lm.make_next_token_loss(-1)
    with pytest.raises(ValueError, match="chunk_gradient must be one of"):
        lm.make_next_token_loss(8, "backward")


def test_compiled_chunked_gradient_needs_less_temporary_memory():
    """XLA's own accounting of the compiled value-and-grad program (CPU): the plain path holds f32 [B, T, V]
    logits (8 MiB here) and their gradient; chunks of 32 positions hold 1/8 of that."""
    hidden, head, labels = _inputs(jnp.float32, batch=4, length=256, dim=64, vocab=2048)

    def temp_bytes(f):
        compiled = jax.jit(jax.value_and_grad(f, argnums=(0, 1))).lower(hidden, head, labels).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    plain = temp_bytes(_plain_mean_nll)
    logits_bytes = 4 * 256 * 2048 * 4
    assert plain >= logits_bytes, (plain, logits_bytes)
    for gradient in lm.CHUNK_GRADIENTS:
        chunked = temp_bytes(_chunked_mean_nll(32, gradient))
        assert chunked < plain / 3, (gradient, chunked, plain)
