"""Subspace training with d = D equals ordinary training; HVP-Lanczos matches a dense eigendecomposition;
the degree-150 polynomial solves in float64; the GP marginal likelihood falls with label corruption."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from papers.generalization import compress, hessian, polyreg, subspace


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.random((n, 8, 8, 1), np.float32)), jnp.asarray(rng.integers(0, 10, n).astype(np.int32))


def _theta(model):
    return ravel_pytree(nnx.state(model, nnx.Param))[0]


def test_identity_subspace_with_adam_equals_ordinary_training():
    x, y = _data()
    plain, _ = compress.fit(subspace.MLP([64, 6, 10], nnx.Rngs(0)), x, y, 10, 16, 1e-2, seed=3)
    base = subspace.MLP([64, 6, 10], nnx.Rngs(0))
    sub, _ = compress.fit(subspace.SubspaceModel(base, int(_theta(base).size), "identity", 0), x, y, 10, 16, 1e-2, seed=3)
    np.testing.assert_allclose(np.asarray(sub.theta()), np.asarray(_theta(plain)), rtol=1e-5, atol=1e-6)


def test_orthogonal_subspace_with_d_equal_D_and_sgd_equals_ordinary_sgd():
    # theta = theta0 + Q w with Q square orthogonal: the SGD step on w moves theta by Q Q^T g = g.
    x, y = _data()
    base = subspace.MLP([64, 6, 10], nnx.Rngs(1))
    full = int(_theta(base).size)
    plain, _ = compress.fit(subspace.MLP([64, 6, 10], nnx.Rngs(1)), x, y, 10, 16, 0.1, seed=2, optimizer="sgd",
                            momentum=0.0)
    sub, _ = compress.fit(subspace.SubspaceModel(base, full, "dense", 7), x, y, 10, 16, 0.1, seed=2,
                          optimizer="sgd", momentum=0.0)
    np.testing.assert_allclose(np.asarray(sub.theta()), np.asarray(_theta(plain)), atol=2e-4)
    # a genuine low-dimensional subspace does not reproduce it
    low, _ = compress.fit(subspace.SubspaceModel(subspace.MLP([64, 6, 10], nnx.Rngs(1)), 50, "dense", 7), x, y, 10,
                          16, 0.1, seed=2, optimizer="sgd", momentum=0.0)
    assert np.max(np.abs(np.asarray(low.theta()) - np.asarray(_theta(plain)))) > 1e-3


def test_kron_projection_has_unit_norm_columns_and_right_size():
    arrays, coords = subspace.make_projection("kron", 1000, 90, seed=0)
    assert coords >= 90
    basis = jax.vmap(lambda e: subspace.project("kron", arrays, e, 1000))(jnp.eye(coords))
    norms = np.linalg.norm(np.asarray(basis), axis=1)
    assert basis.shape == (coords, 1000) and np.all((norms > 0.9) & (norms <= 1.0 + 1e-5))


def test_quantised_forward_uses_levels_and_passes_gradients_straight_through():
    base = subspace.MLP([64, 4, 10], nnx.Rngs(0))
    model = subspace.SubspaceModel(base, 20, "dense", 0, levels=np.array([-0.5, 0.0, 0.5], np.float32),
                                   w=np.linspace(-1, 1, 20))
    w_eff = np.asarray(model.effective_w())
    assert set(np.round(w_eff, 6)) <= {-0.5, 0.0, 0.5}
    grad = nnx.grad(lambda m: jnp.sum(m.effective_w() * jnp.arange(20.0)))(model)
    np.testing.assert_allclose(np.asarray(grad.w[...]), np.arange(20.0))
    assert float(jnp.sum(jnp.abs(grad.levels[...]))) > 0


def test_lanczos_top_eigenvalues_match_dense_hessian():
    x, y = _data(32, seed=5)
    model = subspace.MLP([64, 5, 3], nnx.Rngs(2))
    graphdef, params = nnx.split(model, nnx.Param)
    flat, unravel = ravel_pytree(params)
    y3 = y % 3

    def loss(theta):
        logits = nnx.merge(graphdef, unravel(theta))(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y3).mean()

    dense = np.sort(np.linalg.eigvalsh(np.asarray(jax.hessian(loss)(flat), np.float64)))[::-1]
    hvp = hessian.make_hvp(loss)
    ritz = hessian.lanczos_eigenvalues(lambda v: hvp(flat, v), int(flat.size), 60, seed=0)
    np.testing.assert_allclose(ritz[:5], dense[:5], rtol=1e-3, atol=1e-5)
    assert hessian.effective_dimension(ritz[:10], 0.01) == pytest.approx(hessian.effective_dimension(dense[:10], 0.01), rel=1e-3)


def test_degree_150_polynomial_solves_in_float64_and_fits_noise():
    x, y, _ = polyreg.make_data("noise", 30, seed=0)
    w = polyreg.fit(x, y, 150, gamma=1.1, lam=1e-4)
    assert w.dtype == np.float64 and w.shape == (151,)
    phi = polyreg.features(x, 150)
    residual = (phi.T @ phi + np.diag(1e-4 * 1.1 ** np.arange(151))) @ w - phi.T @ y
    assert np.max(np.abs(residual)) < 1e-8
    assert np.mean((polyreg.predict(w, x) - y) ** 2) < 0.05 * np.var(y)
    # the same solve in jax with x64 enabled locally agrees
    with jax.enable_x64(True):
        a = jnp.asarray(phi.T @ phi + np.diag(1e-4 * 1.1 ** np.arange(151)))
        w_jax = jnp.linalg.solve(a, jnp.asarray(phi.T @ y))
        assert w_jax.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(w_jax), w, rtol=1e-6, atol=1e-9)


def test_order_dependent_penalty_beats_low_degree_on_structured_data():
    grid = np.linspace(-1, 1, 400)
    errors = {"soft": [], "low": []}
    for seed in range(5):
        x, y, f = polyreg.make_data("structured", 30, seed)
        errors["soft"].append(np.mean((polyreg.predict(polyreg.fit(x, y, 150, 1.1, 1e-4), grid) - f(grid)) ** 2))
        errors["low"].append(np.mean((polyreg.predict(polyreg.fit(x, y, 5, 1.0, 0.0), grid) - f(grid)) ** 2))
    assert np.median(errors["soft"]) < np.median(errors["low"])


def test_gp_fits_corrupted_digits_and_marginal_likelihood_falls():
    pytest.importorskip("sklearn")
    from papers.generalization import data, gp
    arrays = data.read_digits(seed=0)
    x_tr = arrays["x_train"][:300].astype(np.float64) / 255
    x_te = arrays["x_test"][:200].astype(np.float64) / 255
    with jax.enable_x64(True):
        rows = gp.corruption_sweep(x_tr, arrays["y_train"][:300], x_te, arrays["y_test"][:200], [0.0, 0.5, 1.0],
                                   1e-3, seed=0)
    lml = [r["log_marginal_likelihood"] for r in rows]
    assert lml[0] > lml[1] > lml[2]
    assert all(r["train_accuracy"] > 0.99 for r in rows)
    assert rows[0]["test_accuracy"] > 0.9 and rows[2]["test_accuracy"] < 0.3
