"""D-MPC on MJX halfcheetah / hopper / walker2d, data generated in-framework (brax PPO experts).

Variants: default = the one-H200 budget (~9 GPU-minutes for everything: 3 PPO experts, 6 datasets, 6 model
sets, 5 planners x 6 datasets, novel rewards, broken ankle); `smoke` = the toy env on CPU: not < 1 min, because brax PPO's training program alone
compiles for ~1-4 min on a 2-core CPU (the full smoke pipeline took 7-16 min on this session's overloaded
2-core machine, load ~16).
Usage: get_config("smoke"), get_config("env=hopper").
"""

import ml_collections

from core.config import parse_arg
from core.train import optim_config, train_config

# brax PPO settings per env, shrunk from the brax example settings so three experts fit in the budget.
PPO = {
    "halfcheetah": dict(num_timesteps=3_000_000, reward_scaling=1.0, discounting=0.95, unroll_length=20,
                        num_updates_per_batch=8, learning_rate=3e-4, entropy_cost=1e-3, batch_size=512),
    "hopper": dict(num_timesteps=3_000_000, reward_scaling=5.0, discounting=0.997, unroll_length=20,
                   num_updates_per_batch=4, learning_rate=6e-4, entropy_cost=1e-2, batch_size=256),
    "walker2d": dict(num_timesteps=3_000_000, reward_scaling=5.0, discounting=0.99, unroll_length=20,
                     num_updates_per_batch=4, learning_rate=3e-4, entropy_cost=1e-3, batch_size=256),
    "toy": dict(num_timesteps=20_000, reward_scaling=1.0, discounting=0.97, unroll_length=10,
                num_updates_per_batch=2, learning_rate=3e-3, entropy_cost=1e-3, batch_size=32),
}


def get_config(arg=None):
    args = parse_arg(arg, smoke=False, env="")
    smoke = args.smoke
    env = args.env or ("toy" if smoke else "hopper")
    if env not in PPO:
        raise ValueError(f"Unknown env {env!r}; choose one of {sorted(PPO)}.")
    c = ml_collections.ConfigDict()
    c.env = env
    c.seed = 0
    c.max_steps = 40 if smoke else 1000
    c.datasets = ("medium", "medium_replay")
    c.methods = ("dmpc", "onestep", "gaussian", "mbop", "bc")
    c.adaptation_env = "toy" if smoke else "walker2d"
    ppo = dict(num_envs=16 if smoke else 2048, episode_length=c.max_steps, normalize_observations=True,
               num_minibatches=4 if smoke else 32, num_evals=5 if smoke else 10,
               num_eval_envs=16 if smoke else 128, policy_hidden=(32, 32) if smoke else (64, 64, 64))
    ppo.update(PPO[env])
    c.ppo = ml_collections.ConfigDict(ppo)
    c.data = ml_collections.ConfigDict(dict(
        reference_episodes=16 if smoke else 100, medium_fraction=1 / 3, medium_episodes=24 if smoke else 200,
        replay_episodes=24 if smoke else 200, batch_size=32 if smoke else 512))
    c.model = ml_collections.ConfigDict(dict(history=2, horizon=4 if smoke else 8, hidden=32 if smoke else 256,
                                             depth=1 if smoke else 3, diffusion_steps=100 if smoke else 1000))
    c.value = ml_collections.ConfigDict(dict(discount=0.99, terminal_penalty=-100.0))
    # The paper: N=64 candidates, 32 DDIM steps for the proposal, 10 for the dynamics.
    c.plan = ml_collections.ConfigDict(dict(num_samples=8 if smoke else 64, proposal_steps=4 if smoke else 32,
                                            dynamics_steps=2 if smoke else 10, mbop_noise=0.2, mbop_temperature=0.1))
    c.eval = ml_collections.ConfigDict(dict(num_episodes=4 if smoke else 50, max_steps=c.max_steps))
    c.ankle = ml_collections.ConfigDict(dict(gear_scale=0.25, play_episodes=8 if smoke else 100,
                                             finetune_steps=20 if smoke else 2000))
    c.optim = optim_config(name="adam", learning_rate=3e-4 if not smoke else 1e-3, warmup_steps=10 if smoke else 200,
                           total_steps=60 if smoke else 4000, end_learning_rate_fraction=0.1, grad_clip=10.0,
                           b2=0.999)
    c.train = train_config(num_steps=60 if smoke else 4000, log_every=20 if smoke else 1000,
                           eval_every=10**9, checkpoint_every=10**9, compute_dtype="float32", async_checkpoint=False)
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    return c
