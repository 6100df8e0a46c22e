"""D-MPC on MJX halfcheetah / hopper / walker2d, data generated in-framework (brax PPO experts).

Variants: default = the GPU settings, run in stages of one 10-minute command each (benchmarks/dmpc.py): PPO
runs until a wall-clock budget (`benchmarks.dmpc --ppo_budget_s`) or `num_timesteps`, whichever comes first,
keeping a snapshot every ~655k env steps; `smoke` = the toy env on CPU (brax PPO's training program compiles
for about a minute on a 2-core CPU, so not < 1 min); `smoke,lite=True` = the smoke run cut to what a demo
shows (one dataset, D-MPC / MBOP / BC), for the demo table and the notebook.
Usage: get_config("smoke"), get_config("smoke,lite=True"), get_config("env=hopper").
"""

import ml_collections

from core.config import parse_arg
from core.train import optim_config, train_config

# brax PPO settings per env, after the brax example settings. num_timesteps is an upper bound: on the GPU the
# experts stage stops PPO at its time budget. 100 snapshot points: one per ~655k env steps (4 training steps
# of 163,840 at batch 256, 2 of 327,680 at batch 512).
PPO = {
    "halfcheetah": dict(num_timesteps=50_000_000, reward_scaling=1.0, discounting=0.95, unroll_length=20,
                        num_updates_per_batch=8, learning_rate=3e-4, entropy_cost=1e-3, batch_size=512),
    "hopper": dict(num_timesteps=50_000_000, reward_scaling=5.0, discounting=0.997, unroll_length=20,
                   num_updates_per_batch=4, learning_rate=6e-4, entropy_cost=1e-2, batch_size=256),
    "walker2d": dict(num_timesteps=50_000_000, reward_scaling=5.0, discounting=0.99, unroll_length=20,
                     num_updates_per_batch=4, learning_rate=3e-4, entropy_cost=1e-3, batch_size=256),
    "toy": dict(num_timesteps=20_000, reward_scaling=1.0, discounting=0.97, unroll_length=10,
                num_updates_per_batch=2, learning_rate=3e-3, entropy_cost=1e-3, batch_size=32),
}

# D4RL's dataset sizes (transitions): medium 1M for every env; medium-replay is the SAC replay buffer up to the
# medium policy, 202k / 402k / 302k (halfcheetah / hopper / walker2d). Sessions 11-14 used 200 episodes per
# dataset (14k-200k transitions), and every learned head memorised them.
REPLAY_TRANSITIONS = {"halfcheetah": 202_000, "hopper": 402_000, "walker2d": 302_000, "toy": 0}


def get_config(arg=None):
    args = parse_arg(arg, smoke=False, env="", lite=False, dynamics="mlp")
    smoke = args.smoke
    env = args.env or ("toy" if smoke else "hopper")
    if env not in PPO:
        raise ValueError(f"Unknown env {env!r}; choose one of {sorted(PPO)}.")
    c = ml_collections.ConfigDict()
    c.env = env
    c.seed = 0
    c.max_steps = 40 if smoke else 1000
    # `lite` (the demo table and the notebook): one dataset and three planners, so the CI runs that only show
    # the pipeline compile less than the pipeline test, which runs everything
    c.lite = ml_collections.ConfigDict(dict(datasets=("medium",), methods=("dmpc", "mbop", "bc")))
    c.datasets = c.lite.datasets if args.lite else ("medium", "medium_replay")
    # dmpc_zero: D-MPC's argmax over futures from the dynamics' zero DDIM start (its central prediction; session 17)
    # dmpc_crn / dmpc_softmax / dmpc_lcb: D-MPC's ranking with shared dynamics noise / softmax-weighted first
    # actions / softmax over J's ensemble lower bound (papers/dmpc/planning.py); the smoke pipeline keeps the
    # paper's five plus dmpc_softmax, so the batched variants (plan.batch_variants) run there too
    c.methods = c.lite.methods if args.lite else (
        ("dmpc", "dmpc_softmax", "dmpc_zero", "onestep", "gaussian", "mbop", "bc") if smoke
        else ("dmpc", "dmpc_crn", "dmpc_softmax", "dmpc_lcb", "dmpc_zero", "onestep", "gaussian", "mbop", "bc"))
    c.adaptation_env = "toy" if smoke else "walker2d"
    # training seeds per dataset, trained as one vmapped program (core.train's train.members) and each scored on
    # its own eval.num_episodes; a row's score is the mean over seeds ± the s.e. over seeds (the issue: >= 3)
    c.seeds = 1 if smoke else 3
    # held-out states at which each dynamics model's within-state ranking of the planner's candidates is
    # checked against simulated futures (diagnostics.candidate_ranking; a row's `candidate_ranking`)
    c.ranking_states = 4 if smoke else 32
    # run_evals=False: brax's evaluator would roll 1000 sequential steps at every snapshot (most of PPO's time
    # on MJX); papers.dmpc.experts.evaluate_snapshots scores all snapshots afterwards in one rollout instead.
    ppo = dict(num_envs=16 if smoke else 2048, episode_length=c.max_steps, normalize_observations=True,
               num_minibatches=4 if smoke else 32, num_evals=5 if smoke else 101, run_evals=False,
               num_eval_envs=16, policy_hidden=(32, 32) if smoke else (64, 64, 64))
    ppo.update(PPO[env])
    c.ppo = ml_collections.ConfigDict(ppo)
    c.data = ml_collections.ConfigDict(dict(
        reference_episodes=16 if smoke else 100, medium_fraction=1 / 3, medium_episodes=24 if smoke else 200,
        # transition targets (0: the episode counts alone); episodes per dataset are raised to reach them, from
        # each behaviour policy's mean episode length, up to max_episodes
        medium_transitions=0 if smoke else 1_000_000, replay_transitions=0 if smoke else REPLAY_TRANSITIONS[env],
        max_episodes=30_000,
        # batch 2048 at lr 1e-3: the GPU step is overhead-bound, and the 48-dim diffusion proposal was over-dispersed
        # at batch 256 / lr 3e-4 (CPU check on MJX halfcheetah data, papers/dmpc/README.md)
        replay_episodes=24 if smoke else 200, batch_size=32 if smoke else 2048,
        # episodes per snapshot when scoring them; episodes per rollout program (all behaviour policies share it)
        snapshot_episodes=8 if smoke else 32, chunk=64 if smoke else 2048,
        # episodes kept out of training (papers/dmpc/README.md: every head memorised the rest); with
        # select_heads_on_held_out, half of them pick each head's early-stopping point (an evaluation every
        # train.eval_every steps), the other half score the fit diagnostics. Session 13 measured J's held-out
        # 1 - R^2 at 0.13-0.63 against ~0 on its training segments.
        held_out_fraction=0.1, select_heads_on_held_out=True))
    # ensemble: members of the value and one-step heads (MBOP's ensembles; D-MPC's J scored by their mean, or
    # by mean - plan.value_pessimism * std in dmpc_lcb). Session 13: one J memorised its training returns.
    # prediction "x0" (Diffuser's choice for locomotion; sessions 12-17 ran "v"): on CPU-trained walker2d heads the
    # dynamics' 8-step error of one draw fell from 0.275 (v) to 0.137 and its draws' spread from 0.110 to 0.016,
    # the proposal's fit unchanged (benchmarks/results/logs/dmpc_cpu_s17_*). ε-prediction is out: the proposal
    # ignored the history (first-action MSE of one sample 0.25 vs the data's variance 0.44 and BC's 2e-5 after
    # 60k steps on MJX halfcheetah data; papers/dmpc/README.md)
    # dynamics_arch ("dynamics=dit"): the dynamics denoiser as papers.dmpc.models.StepDenoiser, one token per step with
    # causal attention, instead of the flat MLP, whose futures ranked halfcheetah's candidates poorly (session 21)
    c.model = ml_collections.ConfigDict(dict(history=2, horizon=4 if smoke else 8, hidden=32 if smoke else 256,
                                             depth=1 if smoke else 3, diffusion_steps=100 if smoke else 1000,
                                             prediction="x0", ensemble=2 if smoke else 5,
                                             dynamics_arch=args.dynamics))
    c.value = ml_collections.ConfigDict(dict(discount=0.99, terminal_penalty=-100.0))
    # The paper: N=64 candidates, 32 DDIM steps for the proposal, 10 for the dynamics. softmax_temperature (in
    # units of the value's std): MBOP's and dmpc_softmax's first-action weights exp(score / (T * value_std))
    # clip_x0: DDIM's clean-sample estimate clipped to the data's range (actions [-1, 1], dynamics deltas their
    # range in the data); without it the cosine-1000 schedule's first step (ᾱ_T ≈ 2e-9) wrecks the samples
    c.plan = ml_collections.ConfigDict(dict(num_samples=8 if smoke else 64, proposal_steps=4 if smoke else 32,
                                            dynamics_steps=2 if smoke else 10, mbop_noise=0.2, softmax_temperature=0.1,
                                            clip_x0=True, value_pessimism=1.0,
                                            # the learned-J D-MPC variants of one model in one vmapped batch
                                            # (planning.make_variants_policy): fewer, larger kernels per step
                                            batch_variants=True))
    c.eval = ml_collections.ConfigDict(dict(num_episodes=4 if smoke else 50, max_steps=c.max_steps))
    c.ankle = ml_collections.ConfigDict(dict(gear_scale=0.25, dataset="medium", play_episodes=8 if smoke else 100,
                                             finetune_steps=20 if smoke else 2000))
    # flatten: Adam on one raveled vector instead of 144 small leaves (training ran at ~140 steps/s alone on the
    # H200, about 7 ms of tiny kernels per step); the compiled CPU step shrinks from 2,562 to 1,644 HLO ops
    # (tests/train_test.py checks the same drop on a toy, and equal parameters); the GPU gain is not measured yet
    c.optim = optim_config(name="adam", learning_rate=1e-3, warmup_steps=10 if smoke else 200,
                           total_steps=60 if smoke else 10_000, end_learning_rate_fraction=0.1, grad_clip=10.0,
                           b2=0.999, flatten=True)
    # steps_per_call: the models are small, so one step is shorter than the host's per-call work; a scan of 100
    # steps per call ran 4.4x more steps/s on the H200 (310 vs 70)
    c.train = train_config(num_steps=60 if smoke else 10_000, log_every=20 if smoke else 1000,
                           eval_every=20 if smoke else 500, checkpoint_every=10**9, compute_dtype="float32", async_checkpoint=False,
                           steps_per_call=10 if smoke else 100,
                           # a dataset's training killed at a command's limit resumes from here in the next
                           # command on the same machine (pipeline.train_models' fingerprint)
                           resume_every=20 if smoke else 2000)
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    return c
