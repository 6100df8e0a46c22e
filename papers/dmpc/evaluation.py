"""D-MPC evaluation: the planners of one dataset's models (and of several training seeds at once) run as one
jitted program on the same reset states, their scores (own and D4RL reference normalisation; mean ± s.e. over
episodes or over seeds), the planner's speed, and the novel-reward objectives swapped in at planning time.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core import diffusion
from papers.dmpc import data as data_lib
from papers.dmpc import envs as envs_lib
from papers.dmpc import figures, planning


def summary(values) -> dict:
    values = np.asarray(values, np.float64)
    return {"mean": float(values.mean()), "sem": float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0}


def noise_schedule(config) -> diffusion.NoiseSchedule:
    return diffusion.cosine_schedule(config.model.diffusion_steps)


_EVAL_CACHE: dict = {}


def evaluate_models(env, policies_spec: dict, key, config, reward_fns=None) -> dict:
    """policies_spec: {name: (method, model, objective)} -> evaluate() results per name. The jitted program is
    cached by (env, policies, graphdef), so two datasets of one env share one compile."""
    policies, states = _policies(env, policies_spec, config)
    return planning.evaluate(env, policies, states, key, config.eval.num_episodes, config.eval.max_steps,
                             reward_fns, history=config.model.history)


def evaluate_seed_models(env, spec_for: Callable, seed_models: list, key, config, reward_fns=None) -> list[dict]:
    """`evaluate_models` for the models of several training seeds at once: `spec_for(model)` gives one seed's
    policies_spec; every policy runs vmapped over the seeds' stacked model states (planning.seeds_policy), one
    program at S times the episodes instead of S programs' worth of calls, each seed on its own
    config.eval.num_episodes episodes. Returns one result dict per seed. One seed: `evaluate_models` itself."""
    if len(seed_models) == 1:
        return [evaluate_models(env, spec_for(seed_models[0]), key, config, reward_fns)]
    S, E = len(seed_models), config.eval.num_episodes
    specs = [spec_for(m) for m in seed_models]
    policies, _ = _policies(env, specs[0], config)
    states = {n: jax.tree.map(lambda *xs: jnp.stack(xs), *(nnx.split(spec[n][1])[1] for spec in specs))
              for n in policies}
    wrapped = {n: _seeds_wrapper(p, S) for n, p in policies.items()}
    results = planning.evaluate(env, wrapped, states, key, S * E, config.eval.max_steps, reward_fns,
                                history=config.model.history)
    return [{n: {k: (v if k in planning.FIRST_EPISODES_KEYS else v[s * E:(s + 1) * E]) for k, v in r.items()}
             for n, r in results.items()} for s in range(S)]


_SEED_WRAPPERS: dict = {}


def _seeds_wrapper(policy, seeds: int):
    """One wrapper object per (policy, seeds), so grouped members keep sharing theirs and programs stay cached."""
    if (policy, seeds) not in _SEED_WRAPPERS:
        _SEED_WRAPPERS[(policy, seeds)] = planning.seeds_policy(policy, seeds)
    return _SEED_WRAPPERS[(policy, seeds)]


def _policies(env, policies_spec: dict, config) -> tuple[dict, dict]:
    """The cached policy functions and model states of a policies_spec (the learned-J variants of one model
    grouped into one batched policy)."""
    schedule = noise_schedule(config)
    policies, states = {}, {}
    # the learned-objective D-MPC variants of one model run as one batch (planning.make_variants_policy)
    variants = [n for n, (method, model, objective) in policies_spec.items()
                if config.plan.get("batch_variants", True) and n == method and method in planning.DMPC_VARIANTS
                and (objective is planning.learned_objective or method == "dmpc_lcb")]
    groups = {}
    for name in variants:
        groups.setdefault(id(policies_spec[name][1]), []).append(name)
    groups = {k: sorted(v) for k, v in groups.items()}     # sorted: the same action keys as ungrouped policies
    for members in groups.values():
        if len(members) < 2:
            continue
        graphdef, state = nnx.split(policies_spec[members[0]][1])
        cache_key = (repr(env), tuple(members), "variants", graphdef)
        if cache_key not in _EVAL_CACHE:
            _EVAL_CACHE[cache_key] = planning.make_variants_policy(graphdef, tuple(members), config.plan, schedule)
        for name in members:
            policies[name], states[name] = _EVAL_CACHE[cache_key], state
    for name, (method, model, objective) in policies_spec.items():
        if name in policies:
            continue
        graphdef, state = nnx.split(model)
        cache_key = (repr(env), name, method, objective, graphdef)
        if cache_key not in _EVAL_CACHE:
            _EVAL_CACHE[cache_key] = planning.make_policy(graphdef, method, config.plan, schedule, objective)
        policies[name] = _EVAL_CACHE[cache_key]
        states[name] = state
    return policies, states


def scores(returns, reference, env_name) -> dict:
    out = {"return": summary(returns), "normalized_own": summary(data_lib.normalized_score(returns, reference))}
    if env_name in envs_lib.D4RL_REFERENCE:
        out["normalized_d4rl_ref"] = summary(data_lib.normalized_score(returns, envs_lib.D4RL_REFERENCE[env_name]))
    return out


def seed_scores(per_seed_returns: list, reference, env_name) -> dict:
    """`scores` over training seeds: with one seed, that seed's episodes (mean ± s.e. over episodes); with
    several, the mean of the seeds' episode means ± the s.e. over seeds (seeds are the replicates; episodes
    within a seed share its model), each seed's own scores under `per_seed`."""
    if len(per_seed_returns) == 1:
        return scores(per_seed_returns[0], reference, env_name)
    per_seed = [scores(r, reference, env_name) for r in per_seed_returns]
    out = {key: summary([p[key]["mean"] for p in per_seed]) for key in per_seed[0]}
    out.update(seeds=len(per_seed), episodes_per_seed=int(len(per_seed_returns[0])), per_seed=per_seed)
    return out


def planner_speed_and_gif(env, model, config, first_episode_qpos, gif_path: str | None) -> dict:
    """D-MPC's milliseconds per control step, batched over config.eval.num_episodes episodes (compile
    excluded), and a GIF of its first evaluation episode (up to 300 steps) at `gif_path`."""
    graphdef, state = nnx.split(model)
    schedule = noise_schedule(config)
    policy = planning.make_policy(graphdef, "dmpc", config.plan, schedule)
    resets = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), config.eval.num_episodes))
    histories = jnp.repeat(resets.obs[:, None], config.model.history, 1)
    out = {"plan_ms_per_step": planning.plan_ms_per_step(policy, state, histories),
           "plan_batch_episodes": config.eval.num_episodes}
    # the learned-J variants in the evaluation: one vmapped batch vs one call per variant, same episodes each
    variants = tuple(sorted(m for m in config.methods if m in planning.DMPC_VARIANTS))
    if len(variants) > 1:
        grouped = planning.make_variants_policy(graphdef, variants, config.plan, schedule)
        many = jnp.tile(histories, (len(variants), 1, 1))
        keyed = lambda fn: (lambda st, h, key: fn(st, h, jax.random.split(key, len(variants))))
        singles = [planning.make_policy(graphdef, v, config.plan, schedule) for v in variants]
        out["variants_ms_per_step"] = {
            "variants": list(variants),
            "batched": planning.plan_ms_per_step(keyed(grouped), state, many),
            "one_call_each": sum(planning.plan_ms_per_step(p, state, histories) for p in singles)}
    if gif_path:
        figures.episode_gif(env.name, np.asarray(first_episode_qpos)[:300], gif_path)
        out["gif"] = gif_path
    return out


_NOVEL_OBJECTIVES: dict = {}


def novel_objective(env_name, reward_name, discount, terminal_penalty):
    """One objective function object per novel reward, so cached evaluation programs are reused. A predicted
    fall ends the score with J's terminal penalty (planning.reward_objective)."""
    key = (env_name, reward_name, discount, terminal_penalty)
    if key not in _NOVEL_OBJECTIVES:
        _NOVEL_OBJECTIVES[key] = planning.reward_objective(
            envs_lib.novel_rewards(env_name)[reward_name], discount,
            healthy_fn=functools.partial(envs_lib.healthy, env_name), terminal_penalty=terminal_penalty)
    return _NOVEL_OBJECTIVES[key]
