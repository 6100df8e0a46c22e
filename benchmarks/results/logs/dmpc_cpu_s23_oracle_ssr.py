"""Session 23 (P7), CPU: the ceiling of Sample-Score-Rank with a PERFECT proposal and a PERFECT dynamics model.

At every control step, N candidates are F-step rollouts of the behaviour policy itself (the `medium` PPO
snapshot, sampled actions, as the dataset was collected) in the TRUE simulator from the true current state;
each is scored by its F-step reward sum (no value function), and the first action of the best is executed
(replan every step). This isolates what D-MPC's planner can add over the behaviour when neither the proposal
nor the dynamics is learned: if it is far above BC, the learned dynamics' ranking is halfcheetah's bottleneck;
if not, the objective (F-step reward, myopia) is. Own-reference normalised, with the committed PPO snapshots
(benchmarks/results/dmpc_keep.tar unpacked to /tmp/keep).

    PYTHONPATH=. .venv/bin/python benchmarks/results/logs/dmpc_cpu_s23_oracle_ssr.py EPISODES ENV HORIZONS [N] [STEPS]
    e.g. ... 2 halfcheetah 0,8,32 64 300     (horizon 0 = the behaviour itself; STEPS < 1000 scales the return
                                              to 1000 steps for the normalised score, labelled in the JSON)
"""
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from brax.training.agents.ppo import networks as ppo_networks

from configs.dmpc import locomotion
from papers.dmpc import data as data_lib
from papers.dmpc import envs, experts

EPISODES = int(sys.argv[1])
ENV = sys.argv[2]
HORIZONS = [int(h) for h in sys.argv[3].split(",")]
N = int(sys.argv[4]) if len(sys.argv) > 4 else 64
keep = json.load(open(f"/tmp/keep/dmpc_keep/{ENV}.json"))
config = locomotion.get_config(f"env={ENV}")
STEPS = int(sys.argv[5]) if len(sys.argv) > 5 else config.max_steps
env = envs.make(ENV)
run = experts.load_run(f"/tmp/keep/dmpc_keep/{ENV}/expert.pkl", env, config.ppo)
make_policy = ppo_networks.make_inference_fn(experts._network(env, config.ppo))
medium = keep["ppo"]["medium_snapshot"]
policy = make_policy(run.params(medium)["ppo"], deterministic=False)
reference = (keep["reference_returns"]["random"], keep["reference_returns"]["expert"])


def plan_action(state, key, horizon):
    """The first action of the best of N behaviour rollouts of `horizon` steps from `state` (true simulator);
    horizon 0: the behaviour's own sampled action (the baseline, same episodes and steps)."""
    if horizon == 0:
        return jnp.clip(policy(state.obs, key)[0], -1.0, 1.0)
    def candidate(key):
        def step(carry, k):
            s, alive, total, first = carry
            action = jnp.clip(policy(s.obs, k)[0], -1.0, 1.0)
            nxt = env.step(s, action)
            first = jnp.where(jnp.isnan(first[0]), action, first)
            return (nxt, alive * (1 - nxt.done), total + alive * nxt.reward, first), None
        first = jnp.full((env.action_size,), jnp.nan)
        (_, _, total, first), _ = jax.lax.scan(step, (state, 1.0, 0.0, first), jax.random.split(key, horizon))
        return total, first
    totals, firsts = jax.vmap(candidate)(jax.random.split(key, N))
    return firsts[jnp.argmax(totals)]


def episodes(key, horizon):
    def episode(key):
        reset_key, act_key = jax.random.split(key)
        state = env.reset(reset_key)

        def step(carry, k):
            state, alive, total = carry
            nxt = env.step(state, plan_action(state, k, horizon))
            return (nxt, alive * (1 - nxt.done), total + alive * nxt.reward), None
        (_, _, total), _ = jax.lax.scan(step, (state, 1.0, 0.0), jax.random.split(act_key, STEPS))
        return total
    return jax.jit(jax.vmap(episode))(jax.random.split(key, EPISODES))


out = {"env": ENV, "episodes": EPISODES, "steps": STEPS, "score_note": "return x max_steps / steps, normalised", "candidates": N, "medium_snapshot": medium,
       "reference": reference, "rows": []}
for horizon in HORIZONS:
    t0 = time.time()
    returns = np.asarray(jax.device_get(episodes(jax.random.key(0), horizon)))
    scores = data_lib.normalized_score(returns * config.max_steps / STEPS, reference)
    row = {"horizon": horizon, "return": float(returns.mean()), "return_sd": float(returns.std()),
           "normalized_own": float(np.mean(scores)), "normalized_own_se": float(np.std(scores) / np.sqrt(len(scores))),
           "seconds": time.time() - t0}
    out["rows"].append(row)
    print(json.dumps(row), flush=True)
json.dump(out, open(f"benchmarks/results/logs/dmpc_cpu_s23_oracle_ssr_{ENV}_{STEPS}.json", "w"), indent=1)
