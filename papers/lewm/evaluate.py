"""The paper's evaluation protocol (App. F.1): success rate over fixed-seed episodes with a 95% Wilson
interval, success vs training steps over several checkpoints, and the time of one plan call."""

from __future__ import annotations

import math
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from papers.lewm import artifacts, planning, surprise
from papers.lewm import data as lewm_data
from papers.lewm.train import restore_model


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    if trials == 0:
        raise ValueError("A success interval needs at least one episode.")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def episode_keys(config: ml_collections.ConfigDict, num_episodes: int | None = None) -> jax.Array:
    """The protocol's episode keys (eval.seed); the first k of a longer list are the same episodes."""
    return jax.random.split(jax.random.key(config.eval.seed), num_episodes or config.eval.num_episodes)


def make_evaluator(graphdef, config: ml_collections.ConfigDict, num_episodes: int | None = None) -> Callable:
    """model state -> per-episode results: one jitted program (episodes vmapped, fixed keys from eval.seed),
    compiled once and reused for every checkpoint of the same architecture."""
    env = lewm_data.make_env(config)
    keys = episode_keys(config, num_episodes)

    @jax.jit
    def run(state, keys):
        model = planning.planning_model(graphdef, state, config.eval.compute_dtype)
        episode = planning.make_episode_fn(planning.latent_planner(model, env, config), env, config)
        return jax.vmap(episode)(keys)

    return lambda state: jax.device_get(run(state, keys))


def summarise(results: dict) -> dict:
    successes, trials = int(np.sum(results["success"])), len(results["success"])
    low, high = wilson_interval(successes, trials)
    summary = dict(success=successes / trials, successes=successes, ci_low=low, ci_high=high, episodes=trials,
                   start_distance_mean=float(np.mean(results["start_distance"])),
                   final_distance_mean=float(np.mean(results["final_distance"])),
                   already_solved=float(np.mean(results["already_solved"])))    # start within reach of goal
    for key in ("start_cost", "final_cost", "demo_goal_changed"):            # state cost (px + angle), diagnostic
        if key in results:
            summary[f"{key}_mean"] = float(np.mean(results[key]))
    return summary


def evaluate_oracle(config: ml_collections.ConfigDict, num_episodes: int | None = None, chunk: int = 0,
                    max_seconds: float | None = None) -> dict:
    """The protocol's episodes planned by CEM over the true simulator (planning.simulator_planner, state cost): what
    the environment and protocol allow with a perfect model. Episodes run `chunk` at a time (0: all at once),
    in key order; with max_seconds the run stops after the chunk that passes it and reports the episodes it
    finished. Returns the summary (with `seconds`) and the per-episode `results`."""
    env = lewm_data.make_env(config)
    keys = episode_keys(config, num_episodes)
    chunk = chunk or len(keys)
    run = jax.jit(jax.vmap(planning.make_episode_fn(planning.simulator_planner(env, config), env, config)))
    started, parts = time.perf_counter(), []
    for first in range(0, len(keys), chunk):
        parts.append(jax.device_get(run(keys[first:first + chunk])))
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            break
    results = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return dict(summarise(results), seconds=time.perf_counter() - started, results=results)


def evaluate_success(model, config: ml_collections.ConfigDict, evaluator: Callable | None = None) -> dict:
    """Success rate, Wilson 95% interval and the per-episode `results` (frames for the GIF)."""
    graphdef, state = nnx.split(model)
    evaluator = evaluator or make_evaluator(graphdef, config)
    results = evaluator(state)
    return dict(summarise(results), results=results)


def success_vs_steps(config: ml_collections.ConfigDict, workdir: str, steps: list[int]) -> tuple[list[dict], dict]:
    """Runs the protocol on each listed checkpoint of workdir (one compile for all); returns the curve and
    the per-episode results of the last checkpoint."""
    curve, evaluator, results = [], None, None
    for step in steps:
        model = restore_model(config, workdir, step)
        graphdef, state = nnx.split(model)
        evaluator = evaluator or make_evaluator(graphdef, config)
        results = evaluator(state)
        curve.append(dict(step=int(step), **summarise(results)))
    return curve, results


def time_one_plan(model, config: ml_collections.ConfigDict, repeats: int = 5, batch: int = 0) -> float:
    """Seconds for one jitted CEM replanning call (after compilation): one episode, or `batch` episodes
    planned at once (vmapped, as in evaluation) when batch > 0."""
    d = config.model.embed_dim
    fa = config.model.frameskip * config.model.action_dim
    h = config.model.history
    graphdef, state = nnx.split(model)

    def plan_one(s, z, p, g, k):
        return planning.plan(planning.planning_model(graphdef, s, config.eval.compute_dtype), z, p, g, k,
                             **planning.cem_settings(config))

    args = (jnp.zeros((h, d)), jnp.zeros((h - 1, fa)), jnp.ones((d,)))
    if batch > 0:
        plan_fn = jax.jit(jax.vmap(plan_one, in_axes=(None, 0, 0, 0, 0)))
        args = tuple(jnp.broadcast_to(a, (batch,) + a.shape) for a in args)
        make_key = lambda i: jax.random.split(jax.random.key(i), batch)
    else:
        plan_fn = jax.jit(plan_one)
        make_key = jax.random.key
    jax.block_until_ready(plan_fn(state, *args, make_key(0)))
    keys = jax.block_until_ready([make_key(i + 1) for i in range(repeats)])   # key making is not planning
    t0 = time.perf_counter()
    for key in keys:
        jax.block_until_ready(plan_fn(state, *args, key))
    return (time.perf_counter() - t0) / repeats


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str, steps: list[int], out_dir: str,
                     name: str = "", surprise_episodes: int | None = None) -> dict:
    """The whole evaluation of a trained workdir: success vs the listed checkpoint steps (the last one is the
    model evaluated further), plan time (one episode and batched), and the surprise tests; writes the planning
    GIF and the surprise PNG into out_dir (suffixed by `name`). Returns the report."""
    suffix = f"_{name}" if name else ""
    started = time.perf_counter()
    curve, results = success_vs_steps(config, workdir, steps)
    artifacts.write_gif(results, os.path.join(out_dir, f"planning{suffix}.gif"))
    evaluated = time.perf_counter()
    model = restore_model(config, workdir, steps[-1])
    plan_s = time_one_plan(model, config)
    plan_s_batched = time_one_plan(model, config, batch=config.eval.num_episodes)
    timed = time.perf_counter()
    errors = surprise.surprise_curves(model, config, num_episodes=surprise_episodes or config.eval.num_episodes)
    surprise.plot(errors, os.path.join(out_dir, f"surprise{suffix}.png"))
    first = config.model.history                                   # earlier frames lack a full history
    curves = {c: [float(x) for x in errors[i, :, first:].mean(0)] for i, c in enumerate(surprise.CONDITIONS)}
    return dict(
        success=curve[-1], success_vs_steps=curve, plan_s=plan_s,
        plan_s_batched=dict(seconds=plan_s_batched, episodes=config.eval.num_episodes),
        plan_s_per_env_step=plan_s / (config.eval.horizon * config.model.frameskip),
        surprise=surprise.paired_tests(errors), surprise_curves=dict(mean_error_per_frame=curves, first_frame=first),
        seconds=dict(success_vs_steps=evaluated - started, plan_timing=timed - evaluated,
                     surprise=time.perf_counter() - timed))
