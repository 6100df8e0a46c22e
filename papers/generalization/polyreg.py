"""E1: a degree-150 polynomial with order-dependent regularisation fits simple, structured and pure-noise data.

f(x) = sum_j w_j P_j(x) with Legendre P_j on [-1, 1] (conditioning), minimising
  ||Phi w - y||^2 + lam * sum_j gamma^j w_j^2,   solved in closed form in float64 (numpy):
  w = (Phi^T Phi + lam diag(gamma^j))^-1 Phi^T y.
gamma > 1 is a soft preference for low orders: every order is allowed, high ones are a priori small.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import legendre


def features(x: np.ndarray, degree: int) -> np.ndarray:
    return legendre.legvander(np.asarray(x, np.float64), degree)


def fit(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, lam: float) -> np.ndarray:
    phi = features(x, degree)
    penalty = lam * np.power(float(gamma), np.arange(degree + 1, dtype=np.float64))
    return np.linalg.solve(phi.T @ phi + np.diag(penalty), phi.T @ np.asarray(y, np.float64))


def fit_min_norm(x: np.ndarray, y: np.ndarray, degree: int) -> np.ndarray:
    """The unregularised minimum-norm least-squares interpolant (the 'hard' alternative)."""
    return np.linalg.lstsq(features(x, degree), np.asarray(y, np.float64), rcond=None)[0]


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return features(x, len(w) - 1) @ w


def make_data(kind: str, n: int, seed: int, noise: float = 0.1) -> tuple[np.ndarray, np.ndarray, callable]:
    """(x, y, true function) for kind simple (one sine), structured (several frequencies and a step) or noise."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-1, 1, n))
    if kind == "simple":
        f = lambda t: np.sin(np.pi * t)
    elif kind == "structured":
        f = lambda t: np.sin(3 * np.pi * t) * 0.6 + 0.5 * np.cos(7 * t) + 0.4 * (t > 0.3)
    elif kind == "noise":
        f = lambda t: np.zeros_like(t)
        noise = 1.0
    else:
        raise ValueError(f"Unknown data kind {kind!r}; use simple, structured or noise.")
    return x, f(x) + noise * rng.standard_normal(n), f
