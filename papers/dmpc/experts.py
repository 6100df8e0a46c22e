"""Behaviour policies for the offline datasets: brax's PPO on the MJX envs, with a params snapshot at every
"eval" point, saved to disk as it goes.

    run = train_expert(env, ppo_config, seed, path="expert.pkl", budget_s=420)  # stops cleanly at the budget
    run = load_run("expert.pkl", env, ppo_config)                               # the same, from disk
    run.policy_fn(params, obs, key)      # stochastic actions, as D4RL sampled its SAC policies
    run.snapshots                        # [(env_steps, params)], in training order
    returns = evaluate_snapshots(env, run, key, ...)   # every snapshot (and uniform random) in ONE rollout

Why PPO runs with brax's evaluator off (`run_evals=False`): brax's evaluator rolls 128 episodes for the full
episode_length (1000 sequential env steps) at every eval, and an MJX step costs about the same wall time at
128 envs as at 2048 (kernel latency, not batch size, bounds it). With 10 evals over 3M steps at 2048 envs that
was 10,000 sequential eval steps against ~1,500 sequential training steps: ~87% of PPO's env-step time went to
evaluation. Here the snapshots are scored afterwards, all together, by `evaluate_snapshots` (one 1000-step
rollout for every snapshot), so snapshots are free and can be frequent.

The file written by `train_expert` holds every snapshot's (normaliser, policy) params, the last full params
(with the value net) to resume from, env steps and wall time; it is rewritten atomically after every
snapshot, so a PPO killed at a time limit still leaves every snapshot up to the last one.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from brax.training.acme import running_statistics
from brax.training.agents.ppo import networks as ppo_networks
from brax.training.agents.ppo import train as ppo

from core import fileio
from papers.dmpc import brax_compat
from papers.dmpc import data as data_lib

FORMAT_VERSION = 2


@dataclasses.dataclass
class ExpertRun:
    policy_fn: Callable[[Any, jax.Array, jax.Array], jax.Array]
    snapshots: list[tuple[int, Any]]          # (env_steps, {"ppo": (normaliser, policy), "random": 0})
    seconds: float
    finished: bool = True                     # reached num_timesteps (False: stopped by the budget or killed)
    returns: np.ndarray | None = None         # per snapshot, set by evaluate_snapshots
    returns_random: float | None = None       # the uniform-random policy's, set by evaluate_snapshots
    lengths: np.ndarray | None = None         # per snapshot, mean episode length, set by evaluate_snapshots

    def _returns(self) -> np.ndarray:
        if self.returns is None:
            raise ValueError("The snapshots have no returns yet; call experts.evaluate_snapshots first.")
        return np.asarray(self.returns)

    @property
    def expert_index(self) -> int:
        return int(np.argmax(self._returns()))

    def medium_index(self, fraction: float, random_return: float) -> int:
        """The snapshot (up to the expert) whose return is closest to random + fraction * (expert - random)."""
        returns = self._returns()
        target = random_return + fraction * (returns[self.expert_index] - random_return)
        return int(np.argmin(np.abs(returns[:self.expert_index + 1] - target)))

    def params(self, i: int) -> dict:
        return self.snapshots[i][1]


def _policy_fn(make_policy):
    def policy_fn(params, obs, key):
        # params = {"ppo": brax params, "random": 0/1}: one compiled collector serves PPO and uniform actions
        ppo_action = make_policy(params["ppo"], deterministic=False)(obs, key)[0]
        uniform = jax.random.uniform(jax.random.fold_in(key, 1), ppo_action.shape, minval=-1.0, maxval=1.0)
        return jnp.where(params["random"] > 0, uniform, ppo_action)
    return policy_fn


def _network(env, config: ml_collections.ConfigDict):
    normalize = running_statistics.normalize if config.normalize_observations else (lambda x, y: x)
    return ppo_networks.make_ppo_networks((env.observation_size,), env.action_size,
                                          preprocess_observations_fn=normalize,
                                          policy_hidden_layer_sizes=tuple(config.policy_hidden))


def _write(path: str, payload: dict) -> None:
    with fileio.atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(payload, f)


def _read(path: str) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"No PPO snapshots at {path}; run the experts stage first "
                                "(python -m benchmarks.dmpc --stage experts).")
    with open(path, "rb") as f:
        payload = pickle.load(f)
    if payload.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} was written by another version of papers.dmpc.experts; delete it and rerun "
                         "the experts stage.")
    return payload


def load_run(path: str, env, config: ml_collections.ConfigDict) -> ExpertRun:
    """The snapshots saved by `train_expert`, with the policy network rebuilt as brax's PPO builds it."""
    payload = _read(path)
    if payload["env"] != env.name:
        raise ValueError(f"{path} holds PPO snapshots of {payload['env']!r}, not {env.name!r}; point to the right "
                         "workdir.")
    return ExpertRun(policy_fn=_policy_fn(ppo_networks.make_inference_fn(_network(env, config))),
                     snapshots=[(s, {"ppo": p, "random": np.float32(0.0)}) for s, p in payload["snapshots"]],
                     seconds=payload["seconds"], finished=payload["finished"])


def random_params(params: dict) -> dict:
    """The same policy params with the uniform-random switch on (D4RL's `--random` behaviour)."""
    return {"ppo": params["ppo"], "random": np.float32(1.0)}


class _BudgetReached(Exception):
    pass


def train_expert(env, config: ml_collections.ConfigDict, seed: int = 0, log: Callable[[str], None] = print,
                 path: str | None = None, budget_s: float | None = None) -> ExpertRun:
    """brax PPO (config keys are ppo.train's arguments, plus policy_hidden) keeping the (normaliser, policy)
    params at each of its `num_evals` points. With `path`, the snapshots are written there after every one
    (atomically), and an unfinished file there is resumed from its last full params (a fresh Adam state: brax
    restores params, not optimiser state). With `budget_s`, PPO stops at the first snapshot past that many
    seconds and the run is returned as it stands (finished=False)."""
    brax_compat.install()
    started = time.perf_counter()
    previous = _read(path) if path and os.path.exists(path) else None
    if previous is not None and previous["env"] != env.name:
        raise ValueError(f"{path} holds PPO snapshots of {previous['env']!r}, not {env.name!r}.")
    snapshots = list(previous["snapshots"]) if previous else []
    offset = snapshots[-1][0] if snapshots else 0
    seconds_before = previous["seconds"] if previous else 0.0
    state = {"make_policy": None, "full": previous["resume_params"] if previous else None, "finished": False}
    kwargs = dict(config.to_dict())
    hidden = tuple(kwargs.pop("policy_hidden"))
    total = kwargs["num_timesteps"]
    if previous is not None:
        if previous["finished"] or offset >= total:
            log(f"  ppo {env.name}: finished run restored from {path}")
            return load_run(path, env, config)
        kwargs["num_timesteps"] = total - offset
        log(f"  ppo {env.name}: resuming from {path} at step {offset:,} (fresh Adam state)")

    def save():
        if path:
            _write(path, {"format": FORMAT_VERSION, "env": env.name, "snapshots": snapshots,
                          "resume_params": state["full"], "finished": state["finished"],
                          "seconds": seconds_before + time.perf_counter() - started, "ppo": config.to_dict()})

    def keep_params(step, make_policy, params):
        state["make_policy"] = make_policy
        step = offset + int(step)
        if previous is not None and step == offset:
            return                                   # the restored params, already kept
        params = jax.device_get(params)
        snapshots.append((step, (params[0], params[1])))
        state["full"] = params
        elapsed = time.perf_counter() - started
        log(f"  ppo {env.name} step {step:>11,}  snapshot {len(snapshots) - 1:>3}  {elapsed:6.1f}s")
        save()
        if budget_s is not None and elapsed > budget_s and step < total:
            raise _BudgetReached

    try:
        ppo.train(environment=env, seed=seed + len(snapshots), policy_params_fn=keep_params,
                  max_devices_per_host=1, restore_params=state["full"] if previous is not None else None,
                  network_factory=functools.partial(ppo_networks.make_ppo_networks, policy_hidden_layer_sizes=hidden),
                  **kwargs)
        state["finished"] = True
    except _BudgetReached:
        log(f"  ppo {env.name}: stopped at its {budget_s:.0f}s budget after {snapshots[-1][0]:,} env steps")
    save()
    if not snapshots:
        raise RuntimeError("PPO produced no snapshot; set ppo.num_evals >= 2.")
    return ExpertRun(policy_fn=_policy_fn(state["make_policy"]),
                     snapshots=[(s, {"ppo": p, "random": np.float32(0.0)}) for s, p in snapshots],
                     seconds=seconds_before + time.perf_counter() - started, finished=state["finished"])


def collect_from_snapshots(env, run: ExpertRun, groups: list[tuple[int, int]], key: jax.Array, max_steps: int,
                           chunk: int) -> list["data_lib.Episodes"]:
    """groups: (snapshot index, episodes); index len(run.snapshots) is the uniform-random policy. Every call
    stacks the same policies, so every call reuses one compiled rollout."""
    policies = [p for _, p in run.snapshots] + [random_params(run.params(0))]
    return data_lib.collect_mixture(env, run.policy_fn, policies, groups, key, max_steps, chunk)


def evaluate_snapshots(env, run: ExpertRun, key: jax.Array, episodes: int, random_episodes: int,
                       max_steps: int, chunk: int) -> np.ndarray:
    """Every snapshot's mean return over `episodes` stochastic episodes, and the uniform-random policy's over
    `random_episodes`, in one shared rollout. Sets run.returns, run.lengths and run.returns_random; returns
    run.returns."""
    count = len(run.snapshots)
    groups = collect_from_snapshots(env, run, [(i, episodes) for i in range(count)] + [(count, random_episodes)],
                                    key, max_steps, chunk)
    run.returns = np.array([g.returns.mean() for g in groups[:-1]])
    run.lengths = np.array([g.lengths.mean() for g in groups[:-1]])
    run.returns_random = float(groups[-1].returns.mean())
    return run.returns
