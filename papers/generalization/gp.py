"""E2: an exact GP (classification as regression on one-hot targets) fits corrupted labels, and its log
marginal likelihood falls as more labels are corrupted (Wilson & Izmailov 2020; Wilson 2025 Fig. 1d).

RBF kernel with fixed hyperparameters (lengthscale from the median pairwise distance, chosen before any label
is seen), noise variance sigma^2; the 10 centred one-hot columns are independent GP outputs sharing the kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def rbf(a: jax.Array, b: jax.Array, lengthscale: float) -> jax.Array:
    sq = jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T
    return jnp.exp(-0.5 * jnp.maximum(sq, 0.0) / lengthscale ** 2)


def median_lengthscale(x: np.ndarray, max_points: int = 1000) -> float:
    x = np.asarray(x[:max_points], np.float64)
    sq = np.sum(x * x, 1)[:, None] + np.sum(x * x, 1)[None, :] - 2 * x @ x.T
    return float(np.sqrt(np.median(np.maximum(sq[np.triu_indices(len(x), 1)], 0.0))))


def targets(labels: np.ndarray, num_classes: int = 10) -> np.ndarray:
    return np.eye(num_classes)[labels] - 1.0 / num_classes


@jax.jit
def fit_and_evaluate(x_tr, y_tr, x_te, lengthscale, noise):
    """(log marginal likelihood summed over outputs, posterior mean at train, posterior mean at test)."""
    n = x_tr.shape[0]
    k = rbf(x_tr, x_tr, lengthscale)
    chol = jnp.linalg.cholesky(k + noise * jnp.eye(n, dtype=k.dtype))
    alpha = jax.scipy.linalg.cho_solve((chol, True), y_tr)
    lml = -0.5 * jnp.sum(y_tr * alpha) - y_tr.shape[1] * (jnp.sum(jnp.log(jnp.diagonal(chol))) + 0.5 * n * jnp.log(2 * jnp.pi))
    return lml, k @ alpha, rbf(x_te, x_tr, lengthscale) @ alpha


def corruption_sweep(x_tr, y_tr, x_te, y_te, fractions, noise: float, seed: int) -> list[dict]:
    from papers.generalization.data import corrupt_labels
    x_tr = jnp.asarray(x_tr.reshape(len(x_tr), -1), jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    x_te = jnp.asarray(x_te.reshape(len(x_te), -1), x_tr.dtype)
    lengthscale = median_lengthscale(np.asarray(x_tr))
    rows = []
    for fraction in fractions:
        labels = corrupt_labels(np.asarray(y_tr), fraction, 10, seed)
        lml, mean_tr, mean_te = fit_and_evaluate(x_tr, jnp.asarray(targets(labels), x_tr.dtype), x_te, lengthscale, noise)
        rows.append(dict(corruption=float(fraction), log_marginal_likelihood=float(lml),
                         lml_per_point=float(lml) / len(labels),
                         train_accuracy=float(np.mean(np.argmax(np.asarray(mean_tr), 1) == labels)),
                         test_accuracy=float(np.mean(np.argmax(np.asarray(mean_te), 1) == np.asarray(y_te)))))
    return rows
