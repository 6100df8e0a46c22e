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


def _policy_fn(make_policy):
    def policy_fn(params, obs, key):
        # params = {"ppo": brax params, "random": 0/1}: one compiled collector serves PPO and uniform actions
        ppo_action = make_policy(params["ppo"], deterministic=False)(obs, key)[0]
        uniform = jax.random.uniform(jax.random.fold_in(key, 1), ppo_action.shape, minval=-1.0, maxval=1.0)
        return jnp.where(params["random"] > 0, uniform, ppo_action)
    return policy_fn


def save_run(run: ExpertRun, path: str) -> None:
    """Snapshots (numpy params and returns) to a pickle, atomically; `load_run` rebuilds the policy."""
    payload = {"snapshots": jax.device_get(run.snapshots), "seconds": run.seconds}
    with open(path + ".tmp", "wb") as f:
        pickle.dump(payload, f)
    os.replace(path + ".tmp", path)


def load_run(path: str, env, config: ml_collections.ConfigDict) -> ExpertRun:
    """The ExpertRun saved by `save_run`, with the policy network rebuilt as brax's PPO builds it."""
    with open(path, "rb") as f:
        payload = pickle.load(f)
    normalize = running_statistics.normalize if config.normalize_observations else (lambda x, y: x)
    network = ppo_networks.make_ppo_networks((env.observation_size,), env.action_size,
                                             preprocess_observations_fn=normalize,
                                             policy_hidden_layer_sizes=tuple(config.policy_hidden))
    return ExpertRun(policy_fn=_policy_fn(ppo_networks.make_inference_fn(network)),
                     snapshots=payload["snapshots"], seconds=payload["seconds"])


def random_params(params: dict) -> dict:
    """The same policy params with the uniform-random switch on (D4RL's `--random` behaviour)."""
    return {"ppo": params["ppo"], "random": np.float32(1.0)}


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
    policy_fn = _policy_fn(policies[0])
    snapshots = [(step, returns[step], {"ppo": params_at[step], "random": np.float32(0.0)})
                 for step in sorted(returns) if step in params_at]
    if not snapshots:
        raise RuntimeError("PPO produced no evaluated snapshot; set ppo.num_evals >= 2.")
    return ExpertRun(policy_fn=policy_fn, snapshots=snapshots, seconds=time.perf_counter() - started)
