"""CPU check of per-head early stopping for D-MPC's objective J on walker2d `medium`-like data: 200 fresh
stochastic episodes of the medium PPO snapshot (runs/dmpc_keep/walker2d/expert.pkl), split like the pipeline
(10% held out, half of it selects, half tests); only the value head trained (batch 1024, 4,000 steps, lr 1e-3
as the GPU config), held-out loss every 250 steps; J's 1 - R^2 and Spearman on the test episodes (data futures)
for the last step and the early-stopped head."""
import json, sys, time
import jax, numpy as np
from flax import nnx
from benchmarks import common
from core import diffusion, train as train_lib
from papers.dmpc import data as data_lib, envs as envs_lib, experts, models, pipeline, diagnostics
from papers.dmpc.segments import Segments
t0 = time.time()
config = common.load_config("dmpc/locomotion", "env=walker2d")
env = envs_lib.make("walker2d")
run = experts.load_run("runs/dmpc_keep/walker2d/expert.pkl", env, config.ppo)
medium = json.load(open("runs/dmpc_keep/walker2d.json"))["ppo"]["medium_snapshot"]
eps = data_lib.collect(env, run.policy_fn, run.params(medium), jax.random.key(2024), 200, 1000, chunk=200)
print("collected", int(eps.lengths.sum()), "steps", f"{time.time()-t0:.0f}s", flush=True)
H, F = config.model.history, config.model.horizon
train_eps, held = pipeline.split_episodes(eps, 0.1, config.seed, min_length=F)
test_eps, select_eps = pipeline.split_episodes(held, 0.5, config.seed + 1, min_length=F)
seg = lambda e: Segments(e, H, F, config.value.discount, config.value.terminal_penalty)
train_seg, select_seg, test_seg = seg(train_eps), seg(select_eps), seg(test_eps)
sched = diffusion.cosine_schedule(config.model.diffusion_steps)
model = models.DMPCModels(pipeline.model_dims(env, config), nnx.Rngs(0))
models.set_statistics(model, train_seg.statistics(seed=0))
steps, batch_size = 4000, 1024
cfg = config.copy_and_resolve_references()
cfg.train.num_steps = cfg.optim.total_steps = steps
cfg.train.eval_every, cfg.train.log_every, cfg.train.steps_per_call = 250, 500, 50
cfg.train.checkpoint_every = steps
cfg.optim.warmup_steps = 100
selector = models.HeadSelector(select_seg.batch(np.random.default_rng(5), 2048), sched, jax.random.key(5))
workdir = f"/tmp/dmpc_s13_value_{int(time.time())}"
result = train_lib.train(cfg, workdir, model, models.make_loss_fn(sched, {"value": 1.0}),
                         lambda s: train_seg.batch(np.random.default_rng([7, s]), batch_size), eval_fn=selector.eval_fn)
last = train_lib.merge_model(result.graphdef, result.state)
last.eval()
test_batch = test_seg.batch(np.random.default_rng(9), 2048)
train_batch = train_seg.batch(np.random.default_rng(9), 2048)
fit = lambda m, b: diagnostics.value_fit(m, b, jax.random.key(9), config.plan, sched)["data_future"]
out = {"episodes": {"train": len(train_eps.lengths), "select": len(select_eps.lengths), "test": len(test_eps.lengths)},
       "transitions": int(eps.lengths.sum()), "steps": steps, "batch": batch_size,
       "last": {"test": fit(last, test_batch), "train": fit(last, train_batch)}}
out["selection"] = selector.apply(last)["value"]
out["selected"] = {"test": fit(last, test_batch), "train": fit(last, train_batch)}
out["held_out_value_loss_curve"] = selector.curves["value"]
out["seconds"] = time.time() - t0
print(json.dumps(out, indent=1), flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
