"""Sampling planners over a cost function: CEM, MPPI and random shooting, each one jitted program.

`cost_fn(plans[N, H, A]) -> costs[N]`; plans are clipped to [lower, upper]. Everything is a `lax.scan`
over iterations, so a planner vmaps over episodes (LeWM plans 50 episodes at once; D-MPC reuses it).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

CostFn = Callable[[jax.Array], jax.Array]


def _sample(key, mean, std, num_samples, lower, upper):
    noise = jax.random.normal(key, (num_samples,) + mean.shape, mean.dtype)
    return jnp.clip(mean + std * noise, lower, upper)


def cem(cost_fn: CostFn, init_mean: jax.Array, init_std: jax.Array | float, key: jax.Array,
        num_samples: int = 300, num_elites: int = 30, num_iters: int = 30, lower: float = -1.0,
        upper: float = 1.0, min_std: float = 1e-3) -> tuple[jax.Array, dict]:
    """Cross-entropy method: refit a diagonal Gaussian to the `num_elites` cheapest samples each iteration.
    Returns the final mean (the plan) and info with the best cost per iteration."""
    if not 0 < num_elites <= num_samples:
        raise ValueError(f"num_elites must be in [1, num_samples={num_samples}], got {num_elites}.")
    init_std = jnp.broadcast_to(jnp.asarray(init_std, init_mean.dtype), init_mean.shape)

    def iteration(carry, key):
        mean, std = carry
        samples = _sample(key, mean, std, num_samples, lower, upper)
        costs = cost_fn(samples)
        _, elite_index = jax.lax.top_k(-costs, num_elites)
        elites = samples[elite_index]
        return (elites.mean(0), jnp.maximum(elites.std(0), min_std)), costs[elite_index[0]]

    (mean, std), best = jax.lax.scan(iteration, (init_mean, init_std), jax.random.split(key, num_iters))
    return mean, {"best_cost": best, "final_std": std}


def mppi(cost_fn: CostFn, init_mean: jax.Array, init_std: jax.Array | float, key: jax.Array,
         num_samples: int = 300, num_iters: int = 30, temperature: float = 1.0, lower: float = -1.0,
         upper: float = 1.0) -> tuple[jax.Array, dict]:
    """MPPI: the mean moves to the exp(-cost / temperature)-weighted average of the samples."""
    std = jnp.broadcast_to(jnp.asarray(init_std, init_mean.dtype), init_mean.shape)

    def iteration(mean, key):
        samples = _sample(key, mean, std, num_samples, lower, upper)
        costs = cost_fn(samples)
        weights = jax.nn.softmax(-(costs - costs.min()) / temperature)
        return jnp.tensordot(weights, samples, axes=1), costs.min()

    mean, best = jax.lax.scan(iteration, init_mean, jax.random.split(key, num_iters))
    return mean, {"best_cost": best}


def random_shooting(cost_fn: CostFn, init_mean: jax.Array, init_std: jax.Array | float, key: jax.Array,
                    num_samples: int = 300, lower: float = -1.0, upper: float = 1.0) -> tuple[jax.Array, dict]:
    """The cheapest of `num_samples` Gaussian samples."""
    std = jnp.broadcast_to(jnp.asarray(init_std, init_mean.dtype), init_mean.shape)
    samples = _sample(key, init_mean, std, num_samples, lower, upper)
    costs = cost_fn(samples)
    return samples[jnp.argmin(costs)], {"best_cost": costs.min()[None]}
