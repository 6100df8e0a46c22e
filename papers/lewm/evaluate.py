"""The paper's evaluation protocol (App. F.1): success rate over fixed-seed episodes with a 95% interval,
and the time of one plan call."""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from papers.lewm import planning
from papers.lewm.train import make_env


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    if trials == 0:
        raise ValueError("A success interval needs at least one episode.")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def run_episodes(model, config: ml_collections.ConfigDict, num_episodes: int | None = None):
    env = make_env(config)
    episode = jax.jit(jax.vmap(planning.make_episode_fn(model, env, config)))
    keys = jax.random.split(jax.random.key(config.eval.seed), num_episodes or config.eval.num_episodes)
    return jax.device_get(episode(keys))


def evaluate_success(model, config: ml_collections.ConfigDict) -> dict:
    results = run_episodes(model, config)
    successes, trials = int(np.sum(results["success"])), len(results["success"])
    low, high = wilson_interval(successes, trials)
    return dict(success=successes / trials, ci_low=low, ci_high=high, episodes=trials,
                final_distance_mean=float(np.mean(results["final_distance"])), results=results)


def time_one_plan(model, config: ml_collections.ConfigDict, repeats: int = 5) -> float:
    """Seconds for one jitted CEM plan at batch 1 (after compilation)."""
    d = config.model.embed_dim
    fa = config.model.frameskip * config.model.action_dim
    h = config.model.history
    plan_fn = jax.jit(lambda z, p, g, k: planning.plan(model, z, p, g, k, config))
    args = (jnp.zeros((h, d)), jnp.zeros((h - 1, fa)), jnp.zeros((d,)))
    jax.block_until_ready(plan_fn(*args, jax.random.key(0)))
    t0 = time.perf_counter()
    for i in range(repeats):
        out = plan_fn(*args, jax.random.key(i))
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / repeats
