"""Session 22 (P7), CPU: how much of halfcheetah's `medium` behaviour is action noise. The committed PPO
snapshots (benchmarks/results/dmpc_keep.tar, unpacked to /tmp/keep) rolled out for 1000 steps with sampled
actions (as the datasets were collected) and with the mean action (what BC learns), own-reference normalised.

    PYTHONPATH=. .venv/bin/python benchmarks/results/logs/dmpc_cpu_s22_medium_noise.py [EPISODES] [ENV]
"""
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs.dmpc import locomotion
from papers.dmpc import envs, experts

EPISODES = int(sys.argv[1]) if len(sys.argv) > 1 else 4
ENV = sys.argv[2] if len(sys.argv) > 2 else "halfcheetah"
keep = json.load(open(f"/tmp/keep/dmpc_keep/{ENV}.json"))
config = locomotion.get_config(f"env={ENV}")
env = envs.make(ENV)
run = experts.load_run(f"/tmp/keep/dmpc_keep/{ENV}/expert.pkl", env, config.ppo)
network = experts._network(env, config.ppo)
from brax.training.agents.ppo import networks as ppo_networks
make_policy = ppo_networks.make_inference_fn(network)

reference = keep["reference_returns"]
print("reference", reference, flush=True)


def rollout(params, deterministic, key):
    policy = make_policy(params, deterministic=deterministic)

    def episode(key):
        reset_key, act_key = jax.random.split(key)
        state = env.reset(reset_key)

        def step(carry, k):
            state, alive, total, sq = carry
            action = jnp.clip(policy(state.obs, k)[0], -1.0, 1.0)
            nxt = env.step(state, action)
            return (nxt, alive * (1 - nxt.done), total + alive * nxt.reward, sq + alive * jnp.mean(action ** 2)), None
        (_, alive, total, sq), _ = jax.lax.scan(step, (state, 1.0, 0.0, 0.0), jax.random.split(act_key, config.max_steps))
        return total, sq / config.max_steps
    return jax.jit(jax.vmap(episode))(jax.random.split(key, EPISODES))


out = {"env": ENV, "episodes": EPISODES, "steps": config.max_steps, "rows": []}
for label, index in (("medium", int(sys.argv[3]) if len(sys.argv) > 3 else 9), ("expert", int(sys.argv[4]) if len(sys.argv) > 4 else 28)):
    for deterministic in (False, True):
        t0 = time.time()
        returns, action_sq = jax.device_get(rollout(run.params(index)["ppo"], deterministic, jax.random.key(0)))
        row = {"policy": label, "snapshot": index, "actions": "mean" if deterministic else "sampled",
               "return": float(np.mean(returns)), "return_sd": float(np.std(returns)), "action_sq": float(np.mean(action_sq)),
               "seconds": time.time() - t0}
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
json.dump(out, open(f"benchmarks/results/logs/dmpc_cpu_s22_medium_noise_{ENV}.json", "w"), indent=1)
