"""The compression bound pipeline (Lotfi et al. 2022, data-independent prior):

  1. train w in a random subspace theta = theta0 + P w with core.train's step (cross-entropy, Adam);
  2. initialise L levels by k-means on w, then quantisation-aware fine-tuning of w and the levels;
  3. the prefix code of the quantised w (papers.generalization.coding: header + range-coded indices);
  4. the kl-inverse bound on the 0-1 error with bits = code length + log2(size of the hyperparameter grid).
The prior is fixed before seeing data: architecture, theta0 seed, projection seed and the grid.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from core import sharding
from core import train as train_lib
from papers.generalization import bounds, coding, subspace


def single_device_mesh() -> jax.sharding.Mesh:
    return sharding.make_mesh(sharding.mesh_config(data=1), devices=jax.devices()[:1])


def make_base(model_config: ml_collections.ConfigDict, image_side: int) -> nnx.Module:
    rngs = nnx.Rngs(model_config.init_seed)
    if model_config.kind == "cnn":
        return subspace.SmallCNN(model_config.width, image_side, 10, rngs)
    if model_config.kind == "mlp":
        return subspace.MLP([image_side * image_side, *model_config.hidden, 10], rngs)
    raise ValueError(f"Unknown model kind {model_config.kind!r}; use cnn or mlp.")


def cross_entropy_loss(model: nnx.Module, batch, rng):
    del rng
    x, y = batch
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}


def fit(model: nnx.Module, x: jax.Array, y: jax.Array, num_steps: int, batch_size: int, learning_rate: float,
        seed: int, loss_fn=cross_entropy_loss, weight_decay: float = 0.0, optimizer: str = "adam",
        momentum: float = 0.9) -> tuple[nnx.Module, list[float]]:
    """`num_steps` steps (Adam by default) of core.train's jitted step on shuffled epochs of (x, y)."""
    name = "adamw" if optimizer == "adam" and weight_decay else optimizer
    config = ml_collections.ConfigDict(dict(
        optim=train_lib.optim_config(name=name, learning_rate=learning_rate, b1=momentum if name == "sgd" else 0.9,
                                     weight_decay=weight_decay, warmup_steps=max(1, num_steps // 20),
                                     total_steps=num_steps, grad_clip=0.0, b2=0.999, end_learning_rate_fraction=0.01),
        train=train_lib.train_config(seed=seed, compute_dtype="float32")))
    setup = train_lib.setup_training(config, model, loss_fn, mesh=single_device_mesh())
    state, losses = setup.state, []
    rng = np.random.default_rng(seed)
    n, batch_size = int(y.shape[0]), min(batch_size, int(y.shape[0]))
    order, cursor = rng.permutation(n), 0
    for _ in range(num_steps):
        if cursor + batch_size > n:
            order, cursor = rng.permutation(n), 0
        idx = jnp.asarray(order[cursor:cursor + batch_size])
        cursor += batch_size
        state, metrics = setup.step_fn(state, (x[idx], y[idx]))
        losses.append(metrics["loss"])
    return train_lib.merge_model(setup.graphdef, state), [float(v) for v in jax.device_get(losses)]


def error_rate(model: nnx.Module, x: jax.Array, y: jax.Array, chunk: int = 10000) -> float:
    graphdef, state = nnx.split(model)

    @jax.jit
    def mistakes(state, xb, yb):
        return jnp.sum(jnp.argmax(nnx.merge(graphdef, state)(xb), -1) != yb)

    wrong = sum(int(mistakes(state, x[i:i + chunk], y[i:i + chunk])) for i in range(0, int(y.shape[0]), chunk))
    return wrong / int(y.shape[0])


def compress_and_bound(config: ml_collections.ConfigDict, arrays: dict, dim: int | None = None,
                       num_levels: int | None = None) -> dict:
    """Runs steps 1-4 for one (d, L) of the grid on `arrays` (train for the bound, test for reference)."""
    c = config.compress
    dim = c.dim if dim is None else dim
    num_levels = c.levels if num_levels is None else num_levels
    start = time.perf_counter()
    x_tr, y_tr = jnp.asarray(arrays["x_train"]), jnp.asarray(arrays["y_train"])
    x_te, y_te = jnp.asarray(arrays["x_test"]), jnp.asarray(arrays["y_test"])
    base = make_base(config.model, int(x_tr.shape[1]))
    kind = c.projection
    if kind == "identity":
        dim = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(base, nnx.Param)))
    model = subspace.SubspaceModel(base, dim, kind, c.projection_seed)
    model, losses = fit(model, x_tr, y_tr, c.steps, c.batch_size, c.learning_rate, c.seed)
    continuous_train_error = error_rate(model, x_tr, y_tr)
    w = np.asarray(model.w[...])
    levels = subspace.kmeans_levels(w, num_levels)
    qmodel = subspace.SubspaceModel(make_base(config.model, int(x_tr.shape[1])), dim, kind, c.projection_seed,
                                    levels=levels, w=w)
    qmodel, qat_losses = fit(qmodel, x_tr, y_tr, c.qat_steps, c.batch_size, c.qat_learning_rate, c.seed + 1)
    # What the decoder rebuilds: float16 levels indexed by the nearest-level symbols.
    levels16 = np.asarray(qmodel.levels[...]).astype(np.float16)
    symbols = np.asarray(subspace.nearest_level(qmodel.w[...], jnp.asarray(levels16, jnp.float32)))
    decoded = subspace.SubspaceModel(make_base(config.model, int(x_tr.shape[1])), dim, kind, c.projection_seed,
                                     w=levels16.astype(np.float32)[symbols])
    train_error = error_rate(decoded, x_tr, y_tr)
    test_error = error_rate(decoded, x_te, y_te)
    code = coding.code_length_bits(symbols, num_levels)
    bits = bounds.total_bits(code["total_bits"], config.bound.search_bits)
    n = int(y_tr.shape[0])
    return dict(
        dataset=config.data.name, n=n, full_dim=decoded.full_dim, dim=int(symbols.size), levels=num_levels,
        projection=kind, continuous_train_error=continuous_train_error, train_error=train_error,
        test_error=test_error, code_bits=code["total_bits"], payload_bits=code["payload_bits"],
        entropy_bits=code["entropy_bits"], search_bits=config.bound.search_bits, bits=bits,
        bound_kl=bounds.kl_bound(train_error, bits, n, config.bound.delta),
        bound_occam=bounds.occam_bound(train_error, bits, n, config.bound.delta),
        final_loss=float(np.mean(losses[-20:])), final_qat_loss=float(np.mean(qat_losses[-20:])),
        seconds=time.perf_counter() - start)


def search_bits(grid_size: int) -> float:
    """Bits that pay for choosing the best of `grid_size` configurations (a uniform prior over the grid)."""
    return math.log2(max(grid_size, 1))
