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
    """Ritz values (descending) of a symmetric operator after `num_iters` Lanczos steps. The Krylov basis lives
    on the host in float64 (num_iters x dim is small) so only the HVP runs on the device, at one fixed shape."""
    num_iters = min(num_iters, dim)
    v = np.random.default_rng(seed).standard_normal(dim)
    basis = np.zeros((num_iters, dim))
    basis[0] = v / np.linalg.norm(v)
    alphas, betas = [], []
    for i in range(num_iters):
        w = np.asarray(matvec(jnp.asarray(basis[i], dtype)), np.float64)
        alpha = float(w @ basis[i])
        w = w - alpha * basis[i] - (betas[-1] * basis[i - 1] if i > 0 else 0.0)
        for _ in range(2):  # full reorthogonalisation against the whole basis, twice
            w = w - basis[:i + 1].T @ (basis[:i + 1] @ w)
        alphas.append(alpha)
        beta = float(np.linalg.norm(w))
        if i == num_iters - 1 or beta < 1e-10:
            break
        betas.append(beta)
        basis[i + 1] = w / beta
    k = len(alphas)
    off = np.asarray(betas[:k - 1], np.float64)
    tridiagonal = np.diag(np.asarray(alphas, np.float64)) + np.diag(off, 1) + np.diag(off, -1)
    return np.sort(np.linalg.eigvalsh(tridiagonal))[::-1]


def effective_dimension(eigenvalues: np.ndarray, z: float) -> float:
    lam = np.clip(np.asarray(eigenvalues, np.float64), 0.0, None)
    return float(np.sum(lam / (lam + z)))
