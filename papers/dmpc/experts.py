"""Behaviour policies for the offline datasets: brax's PPO on the MJX envs, with a snapshot at every eval.

    run = train_expert(env, ppo_config, seed)
    run.policy_fn(params, obs, key)      # stochastic actions, as D4RL sampled its SAC policies
    run.snapshots                        # [(env_steps, eval_return, params)], in training order
    run.medium_index                     # the snapshot whose return is closest to medium_fraction * expert

The expert is the best snapshot (its eval return is the reference "expert" return of our own normalisation).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from brax.training.agents.ppo import networks as ppo_networks
from brax.training.agents.ppo import train as ppo

from papers.dmpc import brax_compat


@dataclasses.dataclass
class ExpertRun:
    policy_fn: Callable[[Any, jax.Array, jax.Array], jax.Array]
    snapshots: list[tuple[int, float, Any]]
    seconds: float

    @property
    def returns(self) -> np.ndarray:
        return np.array([r for _, r, _ in self.snapshots])

    @property
    def expert_index(self) -> int:
        return int(np.argmax(self.returns))

    def medium_index(self, fraction: float, random_return: float) -> int:
        """The snapshot (up to the expert) whose return is closest to random + fraction * (expert - random)."""
        target = random_return + fraction * (self.returns[self.expert_index] - random_return)
        candidates = self.returns[:self.expert_index + 1]
        return int(np.argmin(np.abs(candidates - target)))


def train_expert(env, config: ml_collections.ConfigDict, seed: int = 0, log: Callable[[str], None] = print) -> ExpertRun:
    """brax PPO (config keys are ppo.train's arguments) with a params snapshot and eval return per eval."""
    brax_compat.install()
    returns: dict[int, float] = {}
    params_at: dict[int, Any] = {}
    policies: list[Callable] = []
    started = time.perf_counter()

    def progress(step, metrics):
        if "eval/episode_reward" in metrics:
            returns[int(step)] = float(metrics["eval/episode_reward"])
            log(f"  ppo {env.name} step {step:>9,}  eval return {returns[int(step)]:9.1f}  "
                f"{time.perf_counter() - started:6.1f}s")

    def keep_params(step, make_policy, params):
        params_at[int(step)] = jax.device_get(params)
        if not policies:
            policies.append(make_policy)

    kwargs = dict(config.to_dict())
    ppo.train(environment=env, seed=seed, progress_fn=progress, policy_params_fn=keep_params,
              max_devices_per_host=1,
              network_factory=functools.partial(ppo_networks.make_ppo_networks,
                                                policy_hidden_layer_sizes=tuple(kwargs.pop("policy_hidden"))),
              **kwargs)
    make_policy = policies[0]
    policy_fn = lambda params, obs, key: make_policy(params, deterministic=False)(obs, key)[0]
    snapshots = [(step, returns[step], params_at[step]) for step in sorted(returns) if step in params_at]
    if not snapshots:
        raise RuntimeError("PPO produced no evaluated snapshot; set ppo.num_evals >= 2.")
    return ExpertRun(policy_fn=policy_fn, snapshots=snapshots, seconds=time.perf_counter() - started)
