"""Session 22 (P7), CPU: how much of halfcheetah's `medium` behaviour is action noise. The committed PPO
snapshots (benchmarks/results/dmpc_keep.tar, unpacked to /tmp/keep) rolled out for 1000 steps with sampled
actions (as the datasets were collected) and with the mean action (what BC learns), own-reference normalised.

    PYTHONPATH=. .venv/bin/python benchmarks/results/logs/dmpc_cpu_s22_medium_noise.py [EPISODES] [ENV] [MEDIUM] [EXPERT] [SCALES]

SCALES (comma list, e.g. 0.5,0.25): also the medium snapshot with its tanh-Gaussian's std scaled, i.e. what a
less noisy behaviour policy would score (the PPO std itself is the policy's; this is a protocol variant).
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


def scaled_policy(params, noise_scale):
    """brax's PPO sampling (tanh of loc + std * normal) with the std multiplied by noise_scale."""
    def policy(obs, key):
        logits = network.policy_network.apply(params[0], params[1], obs)
        dist = network.parametric_action_distribution
        raw = dist.create_dist(logits)
        return dist.postprocess(raw.loc + noise_scale * raw.scale * jax.random.normal(key, raw.loc.shape)), {}
    return policy


def rollout(params, deterministic, key, noise_scale=None):
    policy = make_policy(params, deterministic=deterministic) if noise_scale is None else scaled_policy(params, noise_scale)

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
medium = int(sys.argv[3]) if len(sys.argv) > 3 else 9
for scale in [float(x) for x in sys.argv[5].split(",")] if len(sys.argv) > 5 else []:
    t0 = time.time()
    returns, action_sq = jax.device_get(rollout(run.params(medium)["ppo"], False, jax.random.key(0), scale))
    row = {"policy": "medium", "snapshot": medium, "actions": f"sampled, std x {scale}", "return": float(np.mean(returns)),
           "return_sd": float(np.std(returns)), "action_sq": float(np.mean(action_sq)), "seconds": time.time() - t0}
    out["rows"].append(row)
    print(json.dumps(row), flush=True)
json.dump(out, open(f"benchmarks/results/logs/dmpc_cpu_s22_medium_noise_{ENV}.json", "w"), indent=1)
