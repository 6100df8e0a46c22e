"""E3: double descent of min-norm random-feature regression, with the effective dimension of the fitted model.

phi(x) = relu(W x) / sqrt(p), W Gaussian; weights by the minimum-norm least-squares solution (pinv). The
training-loss Hessian is Phi^T Phi; its nonzero eigenvalues are those of Phi Phi^T (min(n, p) of them).
"""

from __future__ import annotations

import numpy as np

from papers.generalization.hessian import effective_dimension


def teacher_data(n: int, n_test: int, input_dim: int, noise: float, seed: int):
    rng = np.random.default_rng(seed)
    beta = rng.standard_normal(input_dim) / np.sqrt(input_dim)
    x = rng.standard_normal((n + n_test, input_dim))
    y = np.tanh(2 * x @ beta) + x @ beta
    y[:n] += noise * rng.standard_normal(n)
    return x[:n], y[:n], x[n:], y[n:]


def fit_features(x_tr, y_tr, x_te, y_te, num_features: int, seed: int, z: float) -> dict:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((x_tr.shape[1], num_features)) / np.sqrt(x_tr.shape[1])
    phi_tr = np.maximum(x_tr @ w, 0.0) / np.sqrt(num_features)
    phi_te = np.maximum(x_te @ w, 0.0) / np.sqrt(num_features)
    coef = np.linalg.pinv(phi_tr, rcond=1e-10) @ y_tr
    eig = np.linalg.eigvalsh(phi_tr @ phi_tr.T if phi_tr.shape[0] <= num_features else phi_tr.T @ phi_tr)
    return dict(num_features=num_features, train_mse=float(np.mean((phi_tr @ coef - y_tr) ** 2)),
                test_mse=float(np.mean((phi_te @ coef - y_te) ** 2)), coef_norm=float(np.linalg.norm(coef)),
                effective_dimension=effective_dimension(eig, z))
