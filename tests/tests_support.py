"""Small models and batches shared by core tests."""

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


class TinyClassifier(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, features: int = 6, classes: int = 3):
        self.dense = nnx.Linear(features, classes, rngs=rngs)

    def __call__(self, x):
        return self.dense(x)


def classification_loss(model, batch, rng):
    del rng
    logits = model(batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), {}


def classification_batch(step: int, batch_size: int = 8):
    rng = np.random.default_rng(step)
    x = rng.normal(size=(batch_size, 6)).astype(np.float32)
    return {"x": jnp.asarray(x), "y": jnp.asarray((x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1))}
