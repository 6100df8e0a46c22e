"""The compression bound pipeline (Lotfi et al. 2022, data-independent prior):

  1. train w in a random subspace theta = theta0 + P w with core.train's step (cross-entropy, Adam);
  2. initialise L levels by k-means on w, then quantisation-aware fine-tuning of w and the levels;
  3. the prefix code of the quantised w (papers.generalization.coding: header + range-coded indices);
  4. the kl-inverse bound on the 0-1 error with bits = code length + log2(size of the hyperparameter grid).
The prior is fixed before seeing data: architecture, theta0 seed, projection seed and the grid.
"""

from __future__ import annotations

import functools
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
        momentum: float = 0.9, steps_per_call: int = 100) -> tuple[nnx.Module, list[float]]:
    """`num_steps` steps (Adam by default) of core.train's jitted step on shuffled epochs of (x, y)."""
    name = "adamw" if optimizer == "adam" and weight_decay else optimizer
    config = ml_collections.ConfigDict(dict(
        optim=train_lib.optim_config(name=name, learning_rate=learning_rate, b1=momentum if name == "sgd" else 0.9,
                                     weight_decay=weight_decay, warmup_steps=max(1, num_steps // 20),
                                     total_steps=num_steps, grad_clip=0.0, b2=0.999, end_learning_rate_fraction=0.01),
        train=train_lib.train_config(seed=seed, compute_dtype="float32")))
    setup = train_lib.setup_training(config, model, loss_fn, mesh=single_device_mesh())
    rng = np.random.default_rng(seed)
    n, batch_size = int(y.shape[0]), min(batch_size, int(y.shape[0]))
    per_epoch = n // batch_size
    epochs = [rng.permutation(n)[:per_epoch * batch_size].reshape(per_epoch, batch_size)
              for _ in range(-(-num_steps // per_epoch))]
    indices = np.concatenate(epochs)[:num_steps].astype(np.int32)

    # Many steps per dispatch: a scan over core.train's step, batches gathered on device.
    @functools.partial(jax.jit, donate_argnums=(0,))
    def run_chunk(state, x, y, idx):
        def body(state, i):
            state, metrics = setup.step_fn(state, (x[i], y[i]))
            return state, metrics["loss"]
        return jax.lax.scan(body, state, idx)

    state, losses = setup.state, []
    for start in range(0, num_steps, steps_per_call):
        state, chunk_losses = run_chunk(state, x, y, jnp.asarray(indices[start:start + steps_per_call]))
        losses.append(chunk_losses)
    losses = np.concatenate([np.asarray(l) for l in jax.device_get(losses)]) if losses else np.zeros(0)
    return train_lib.merge_model(setup.graphdef, state), [float(v) for v in losses]


@functools.cache
def _mistakes_fn(graphdef: nnx.GraphDef):
    """One jitted counter per architecture (GraphDefs compare by structure), so every row reuses its compile."""
    @jax.jit
    def mistakes(state, xb, yb):
        return jnp.sum(jnp.argmax(nnx.merge(graphdef, state)(xb), -1) != yb)
    return mistakes


def error_rate(model: nnx.Module, x: jax.Array, y: jax.Array, chunk: int = 10000) -> float:
    if isinstance(model, subspace.SubspaceModel):
        model = model.base_model()
    graphdef, state = nnx.split(model)
    mistakes = _mistakes_fn(graphdef)
    wrong = sum(int(mistakes(state, x[i:i + chunk], y[i:i + chunk])) for i in range(0, int(y.shape[0]), chunk))
    return wrong / int(y.shape[0])


def compress_and_bound(config: ml_collections.ConfigDict, arrays: dict, dim: int | None = None,
                       num_levels: int | None = None) -> dict:
    """Runs steps 1-4 for one (d, L) of the grid on `arrays` (train for the bound, test for reference)."""
    return compress_levels(config, arrays, dim, [config.compress.levels if num_levels is None else num_levels])[0]


def compress_levels(config: ml_collections.ConfigDict, arrays: dict, dim: int | None,
                    levels_grid: list[int]) -> list[dict]:
    """Step 1 once for subspace dimension `dim`, then steps 2-4 for every L in `levels_grid`; one row per L."""
    c = config.compress
    dim = c.dim if dim is None else dim
    start = time.perf_counter()
    x_tr, y_tr = jnp.asarray(arrays["x_train"]), jnp.asarray(arrays["y_train"])
    x_te, y_te = jnp.asarray(arrays["x_test"]), jnp.asarray(arrays["y_test"])
    side = int(x_tr.shape[1])
    kind = c.projection
    if kind == "identity":
        dim = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(make_base(config.model, side), nnx.Param)))
    model = subspace.SubspaceModel(make_base(config.model, side), dim, kind, c.projection_seed)
    model, losses = fit(model, x_tr, y_tr, c.steps, c.batch_size, c.learning_rate, c.seed)
    continuous_train_error = error_rate(model, x_tr, y_tr)
    w = np.asarray(model.w[...])
    train_seconds = time.perf_counter() - start
    rows = []
    for num_levels in levels_grid:
        start = time.perf_counter()
        qmodel = subspace.SubspaceModel(make_base(config.model, side), dim, kind, c.projection_seed,
                                        levels=subspace.kmeans_levels(w, num_levels), w=w)
        qmodel, qat_losses = fit(qmodel, x_tr, y_tr, c.qat_steps, c.batch_size, c.qat_learning_rate, c.seed + 1)
        # What the decoder rebuilds: float16 levels indexed by the nearest-level symbols.
        levels16 = np.asarray(qmodel.levels[...]).astype(np.float16)
        symbols = np.asarray(subspace.nearest_level(qmodel.w[...], jnp.asarray(levels16, jnp.float32)))
        decoded = subspace.SubspaceModel(make_base(config.model, side), dim, kind, c.projection_seed,
                                         w=levels16.astype(np.float32)[symbols])
        train_error = error_rate(decoded, x_tr, y_tr)
        test_error = error_rate(decoded, x_te, y_te)
        code = coding.code_length_bits(symbols, num_levels)
        bits = bounds.total_bits(code["total_bits"], config.bound.search_bits)
        n = int(y_tr.shape[0])
        rows.append(dict(
            dataset=config.data.name, n=n, full_dim=decoded.full_dim, dim=int(symbols.size), levels=num_levels,
            projection=kind, continuous_train_error=continuous_train_error,
            continuous_test_error=error_rate(model, x_te, y_te), train_error=train_error,
            test_error=test_error, code_bits=code["total_bits"], payload_bits=code["payload_bits"],
            entropy_bits=code["entropy_bits"], search_bits=config.bound.search_bits, bits=bits,
            bound_kl=bounds.kl_bound(train_error, bits, n, config.bound.delta),
            bound_occam=bounds.occam_bound(train_error, bits, n, config.bound.delta),
            final_loss=float(np.mean(losses[-20:])), final_qat_loss=float(np.mean(qat_losses[-20:])),
            train_seconds=train_seconds, seconds=train_seconds + time.perf_counter() - start))
    return rows


def search_bits(grid_size: int) -> float:
    """Bits that pay for choosing the best of `grid_size` configurations (a uniform prior over the grid)."""
    return math.log2(max(grid_size, 1))
