"""GPU-only: the padded cuDNN attention of core.nn.vit equals XLA's, values and gradients (bf16)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core.nn import vit


@pytest.mark.gpu
@pytest.mark.parametrize("length", [257, 64])
def test_padded_cudnn_attention_equals_xla(length):
    keys = jax.random.split(jax.random.key(0), 4)
    shape = (8, length, 3, 64)
    q, k, v, cotangent = (jax.random.normal(key, shape, jnp.bfloat16) for key in keys)
    ours = lambda q, k, v: vit.attention(q, k, v)
    xla = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla")
    loss = lambda f: lambda *qkv: (f(*qkv).astype(jnp.float32) * cotangent.astype(jnp.float32)).sum()
    np.testing.assert_allclose(np.asarray(ours(q, k, v), np.float32), np.asarray(xla(q, k, v), np.float32),
                               atol=2e-2, rtol=2e-2)
    for ours_grad, xla_grad in zip(jax.grad(loss(ours), (0, 1, 2))(q, k, v), jax.grad(loss(xla), (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(np.asarray(ours_grad, np.float32), np.asarray(xla_grad, np.float32),
                                   atol=5e-2, rtol=5e-2)
    # The fused kernel appears only after XLA compilation (a cuDNN custom call), not in the StableHLO lowering.
    assert "cudnn" in jax.jit(ours).lower(q, k, v).compile().as_text().lower()
