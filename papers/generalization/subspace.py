"""Training in a random subspace, theta = theta0 + P w (Li et al. 2018; Lotfi et al. 2022), with optional
quantisation of w to learned levels (straight-through), as one Flax NNX module whose only Params are w
(and the levels). theta0 and P are regenerated from seeds, so a decoder needs only the seeds and w.

Projections P (D x d, unit-norm columns so a step in w moves theta by about as much):
  * identity: d = D, P = I (ordinary training, for the random-label fits and the equivalence test);
  * dense: orthonormal columns (QR of a Gaussian), memory D * d, for small nets;
  * kron: P = (A kron B) restricted to D rows, A and B small with orthonormal columns; P w = vec(A W B^T)
    costs two small matmuls and memory sqrt(D d), for larger nets (as Lotfi et al.'s `rdkronqr`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree


class Frozen(nnx.Variable):
    """Not trained and not in the code: theta0 and the projection are regenerated from their seeds."""


class SmallCNN(nnx.Module):
    """conv3x3(c) pool conv3x3(2c) pool conv3x3(2c) pool, flatten, linear: about 17k params at c = 16 on 28x28."""

    def __init__(self, width: int, image_side: int, num_classes: int, rngs: nnx.Rngs):
        c = width
        self.convs = nnx.List([nnx.Conv(1, c, (3, 3), rngs=rngs), nnx.Conv(c, 2 * c, (3, 3), rngs=rngs),
                               nnx.Conv(2 * c, 2 * c, (3, 3), rngs=rngs)])
        side = image_side
        for _ in range(3):
            side = max(side // 2, 1)
        self.head = nnx.Linear(side * side * 2 * c, num_classes, rngs=rngs)

    def __call__(self, x):
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
            if x.shape[1] > 1:
                x = nnx.max_pool(x, (2, 2), (2, 2))
        return self.head(x.reshape(x.shape[0], -1))


class MLP(nnx.Module):
    def __init__(self, sizes: list[int], rngs: nnx.Rngs):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


def _orthonormal_columns(key: jax.Array, rows: int, cols: int) -> jax.Array:
    if cols > rows:
        raise ValueError(f"A projection with {cols} columns cannot have orthonormal columns in {rows} dims; lower d.")
    q, r = jnp.linalg.qr(jax.random.normal(key, (rows, cols), jnp.float32))
    return q * jnp.sign(jnp.diagonal(r))[None, :]


def kron_factors(full_dim: int, dim: int) -> tuple[int, int, int, int]:
    """(D1, D2, d1, d2) with D1 D2 >= D and d1 d2 >= d, each factor near a square root."""
    rows_a = math.ceil(math.sqrt(full_dim))
    rows_b = math.ceil(full_dim / rows_a)
    cols_a = math.ceil(math.sqrt(dim))
    cols_b = math.ceil(dim / cols_a)
    return rows_a, rows_b, cols_a, cols_b


def make_projection(kind: str, full_dim: int, dim: int, seed: int) -> tuple[dict, int]:
    """The arrays of P and the number of coordinates of w it takes (d, or d1 d2 for kron)."""
    key = jax.random.key(seed)
    if kind == "identity":
        if dim != full_dim:
            raise ValueError(f"The identity projection needs d = D = {full_dim}, got d = {dim}.")
        return {}, full_dim
    if kind == "dense":
        return {"p": _orthonormal_columns(key, full_dim, dim)}, dim
    if kind == "kron":
        rows_a, rows_b, cols_a, cols_b = kron_factors(full_dim, dim)
        ka, kb = jax.random.split(key)
        return {"a": _orthonormal_columns(ka, rows_a, cols_a), "b": _orthonormal_columns(kb, rows_b, cols_b)}, cols_a * cols_b
    raise ValueError(f"Unknown projection {kind!r}; use identity, dense or kron.")


def project(kind: str, arrays: dict, w: jax.Array, full_dim: int) -> jax.Array:
    if kind == "identity":
        return w
    if kind == "dense":
        return arrays["p"] @ w
    a, b = arrays["a"], arrays["b"]
    return (a @ w.reshape(a.shape[1], b.shape[1]) @ b.T).reshape(-1)[:full_dim]


def nearest_level(w: jax.Array, levels: jax.Array) -> jax.Array:
    return jnp.argmin(jnp.abs(w[:, None] - levels[None, :]), axis=1).astype(jnp.int32)


class SubspaceModel(nnx.Module):
    """base(theta0 + P w); with levels, w is replaced by its nearest level in the forward pass, the gradient
    reaching w straight through and the levels through the gather (quantisation-aware training)."""

    def __init__(self, base: nnx.Module, dim: int, kind: str, projection_seed: int,
                 levels: np.ndarray | None = None, w: np.ndarray | None = None):
        graphdef, params = nnx.split(base, nnx.Param)
        flat, self._unravel = ravel_pytree(params)
        self._graphdef = graphdef
        self.full_dim = int(flat.size)
        self.kind = kind
        arrays, num_coords = make_projection(kind, self.full_dim, dim, projection_seed)
        self.theta0 = Frozen(flat)
        self.projection = Frozen(arrays)
        self.w = nnx.Param(jnp.zeros((num_coords,), jnp.float32) if w is None else jnp.asarray(w, jnp.float32))
        self.levels = nnx.Param(jnp.asarray(levels, jnp.float32)) if levels is not None else None

    def effective_w(self) -> jax.Array:
        w = self.w[...]
        if self.levels is None:
            return w
        levels = self.levels[...]
        return levels[nearest_level(jax.lax.stop_gradient(w), jax.lax.stop_gradient(levels))] + w - jax.lax.stop_gradient(w)

    def theta(self) -> jax.Array:
        return self.theta0[...] + project(self.kind, self.projection.get_value(), self.effective_w(), self.full_dim)

    def base_model(self) -> nnx.Module:
        """The plain network at theta (for evaluation)."""
        return nnx.merge(self._graphdef, self._unravel(self.theta()))

    def __call__(self, x):
        return self.base_model()(x)


def kmeans_levels(w: np.ndarray, num_levels: int, iters: int = 30) -> np.ndarray:
    """1-D k-means (Lloyd) from quantile initialisation; the quantiser's starting levels."""
    w = np.asarray(w, np.float64)
    levels = np.quantile(w, (np.arange(num_levels) + 0.5) / num_levels)
    for _ in range(iters):
        assign = np.argmin(np.abs(w[:, None] - levels[None, :]), axis=1)
        for j in range(num_levels):
            if np.any(assign == j):
                levels[j] = w[assign == j].mean()
    return np.sort(levels).astype(np.float32)
