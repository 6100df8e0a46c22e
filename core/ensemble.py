"""Ensembles as `vmap` over a leading member axis: M models trained by the one train step at once.

Each member gets its own init and its own train key (data can be shared or per member); the step is
`core.train.make_train_step`'s under `jax.vmap`, so nothing about the trainer is duplicated.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from core import train as train_lib


def init_ensemble(make_model: Callable[[nnx.Rngs], nnx.Module], optimizer: optax.GradientTransformation,
                  num_members: int, seed: int = 0) -> tuple[nnx.GraphDef, train_lib.TrainState]:
    """Stacks `num_members` independently initialised train states along a new leading axis."""
    graphdef, states = None, []
    for member in range(num_members):
        model = make_model(nnx.Rngs(params=jax.random.fold_in(jax.random.key(seed), member)))
        graphdef, state = train_lib.init_train_state(
            model, optimizer, jax.random.fold_in(jax.random.key(seed + 1), member))
        states.append(state)
    return graphdef, jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def make_ensemble_step(graphdef: nnx.GraphDef, loss_fn: train_lib.LossFn, optimizer: optax.GradientTransformation,
                       compute_dtype: Any = jnp.bfloat16, shared_batch: bool = True) -> Callable:
    """`step(states, batch) -> (states, metrics[M])`; the batch is shared or has a leading member axis."""
    step = train_lib.train_step_fn(graphdef, loss_fn, optimizer, compute_dtype)
    members = train_lib.vmap_members(step, batch_axis=None if shared_batch else 0, reduce_metrics=False)
    return jax.jit(members, donate_argnums=(0,))


def member(state: train_lib.TrainState, index: int) -> train_lib.TrainState:
    """One member's state (for eval or export)."""
    return jax.tree.map(lambda x: x[index], state)


def ensemble_log_probs(graphdef: nnx.GraphDef, states: train_lib.TrainState,
                       apply: Callable[[nnx.Module, Any], jax.Array], inputs: Any) -> jax.Array:
    """log of the mean member probability: the ensemble's predictive distribution."""
    def one(state):
        return jax.nn.log_softmax(apply(train_lib.merge_model(graphdef, state), inputs).astype(jnp.float32))
    log_probs = jax.vmap(one)(states)
    return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(log_probs.shape[0])


def init_members(make_model: Callable[[nnx.Rngs], nnx.Module], optimizer: optax.GradientTransformation,
                 keys: list[jax.Array]) -> train_lib.TrainState:
    """One stacked train state per key (init and train key both derived from it), so a member's run depends
    on its own key only, not on which other members share its program."""
    states = []
    for key in keys:
        model = make_model(nnx.Rngs(params=jax.random.fold_in(key, 0)))
        _, state = train_lib.init_train_state(model, optimizer, jax.random.fold_in(key, 1))
        states.append(state)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def logit_averaged_log_probs(member_logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """log_softmax of the (weighted) mean of member logits [M, ..., V]: the ensemble of "Pre-training under
    infinite compute", p ∝ exp(mean_k z_k), as opposed to `ensemble_log_probs`' mean of probabilities."""
    logits = member_logits.astype(jnp.float32)
    if weights is None:
        mean = logits.mean(0)
    else:
        mean = jnp.tensordot(weights.astype(jnp.float32) / weights.sum(), logits, axes=(0, 0))
    return jax.nn.log_softmax(mean)
