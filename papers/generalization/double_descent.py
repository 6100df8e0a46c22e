"""E4: test error of a CNN vs width k under label noise (Nakkiran et al. 2019), with the effective dimension
of its training-loss Hessian (top eigenvalues by Lanczos over HVPs; Maddox et al. 2020)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.flatten_util import ravel_pytree

from papers.generalization import compress, hessian, subspace


def hessian_top_eigenvalues(model: nnx.Module, x: jax.Array, y: jax.Array, num_iters: int, seed: int = 0):
    graphdef, params = nnx.split(model, nnx.Param)
    flat, unravel = ravel_pytree(params)

    def loss(theta):
        logits = nnx.merge(graphdef, unravel(theta))(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    hvp = hessian.make_hvp(loss)
    return hessian.lanczos_eigenvalues(lambda v: hvp(flat, v), int(flat.size), num_iters, seed)


def width_sweep(config: ml_collections.ConfigDict, arrays: dict) -> list[dict]:
    c = config.double_descent
    x_tr, y_tr = jnp.asarray(arrays["x_train"]), jnp.asarray(arrays["y_train"])
    x_te, y_te = jnp.asarray(arrays["x_test"]), jnp.asarray(arrays["y_test"])
    rows = []
    for width in c.widths:
        model = subspace.SmallCNN(width, int(x_tr.shape[1]), 10, nnx.Rngs(c.seed))
        model, losses = compress.fit(model, x_tr, y_tr, c.steps, c.batch_size, c.learning_rate, c.seed)
        eig = hessian_top_eigenvalues(model, x_tr[:c.hessian_points], y_tr[:c.hessian_points], c.lanczos_iters)
        rows.append(dict(width=int(width), params=int(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))),
                         train_error=compress.error_rate(model, x_tr, y_tr), test_error=compress.error_rate(model, x_te, y_te),
                         final_loss=float(sum(losses[-20:]) / 20), top_eigenvalue=float(eig[0]),
                         effective_dimension=hessian.effective_dimension(eig, c.z)))
    return rows
