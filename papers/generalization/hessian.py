"""Hessian spectra by Lanczos over Hessian-vector products, and the effective dimension of Maddox et al. (2020).

hvp(v) = d/dt grad L(theta + t v) at t = 0 (forward-over-reverse, `jax.jvp` of `jax.grad`), never the matrix.
Lanczos with full reorthogonalisation; the Ritz values of the k x k tridiagonal matrix approximate the extreme
eigenvalues. N_eff(z) = sum_i lambda_i / (lambda_i + z) over the (top) eigenvalues.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def make_hvp(loss: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """hvp(theta, v) for a scalar loss of a flat parameter vector."""
    grad = jax.grad(loss)
    return jax.jit(lambda theta, v: jax.jvp(grad, (theta,), (v,))[1])


def lanczos_eigenvalues(matvec: Callable[[jax.Array], jax.Array], dim: int, num_iters: int, seed: int = 0,
                        dtype=jnp.float32) -> np.ndarray:
    """Ritz values (descending) of a symmetric operator after `num_iters` Lanczos steps."""
    num_iters = min(num_iters, dim)
    v = jax.random.normal(jax.random.key(seed), (dim,), dtype)
    v = v / jnp.linalg.norm(v)
    basis = [v]
    alphas, betas = [], []
    for i in range(num_iters):
        w = matvec(basis[-1])
        alpha = jnp.vdot(w, basis[-1])
        w = w - alpha * basis[-1] - (betas[-1] * basis[-2] if i > 0 else 0.0)
        stacked = jnp.stack(basis)
        w = w - stacked.T @ (stacked @ w)  # full reorthogonalisation, twice is enough in float32
        w = w - stacked.T @ (stacked @ w)
        alphas.append(float(alpha))
        beta = float(jnp.linalg.norm(w))
        if i == num_iters - 1 or beta < 1e-10:
            break
        betas.append(beta)
        basis.append(w / beta)
    k = len(alphas)
    tridiagonal = np.diag(np.asarray(alphas, np.float64)) + np.diag(np.asarray(betas[:k - 1], np.float64), 1) \
        + np.diag(np.asarray(betas[:k - 1], np.float64), -1)
    return np.sort(np.linalg.eigvalsh(tridiagonal))[::-1]


def effective_dimension(eigenvalues: np.ndarray, z: float) -> float:
    lam = np.clip(np.asarray(eigenvalues, np.float64), 0.0, None)
    return float(np.sum(lam / (lam + z)))
