"""CPU analysis of the H200-trained walker2d `medium` model (runs/dmpc_keep/walker2d/model.npz): proposal and
dynamics fit on fresh episodes of the medium snapshot (not the training episodes)."""
import json, time
import jax, numpy as np
from flax import nnx
from benchmarks import common
from core import diffusion
from papers.dmpc import data as data_lib, envs as envs_lib, experts, models, pipeline, diagnostics
from papers.dmpc.segments import Segments
t0 = time.time()
config = common.load_config("dmpc/locomotion", "env=walker2d")
env = envs_lib.make("walker2d")
run = experts.load_run("runs/dmpc_keep/walker2d/expert.pkl", env, config.ppo)
keep = json.load(open("runs/dmpc_keep/walker2d.json"))
medium = keep["ppo"]["medium_snapshot"]
eps = data_lib.collect(env, run.policy_fn, run.params(medium), jax.random.key(123), 64, 300, chunk=64)
print("collected", eps.lengths.sum(), "steps", f"{time.time()-t0:.0f}s", flush=True)
seg = Segments(eps, config.model.history, config.model.horizon, config.value.discount, config.value.terminal_penalty)
model = models.load_params(models.DMPCModels(pipeline.model_dims(env, config), nnx.Rngs(0)),
                           "runs/dmpc_keep/walker2d/model.npz")
model.eval()
batch = seg.batch(np.random.default_rng(0), 512)
sched = diffusion.cosine_schedule(config.model.diffusion_steps)
out = {"proposal": diagnostics.proposal_fit(model, batch, jax.random.key(1), config.plan, sched),
       "dynamics": diagnostics.dynamics_fit(model, batch, jax.random.key(2), config.plan, sched)}
for steps in (10, 32, 100):
    cfg = config.plan.copy_and_resolve_references(); cfg.dynamics_steps = steps
    out[f"dynamics_ddim{steps}"] = diagnostics.dynamics_fit(model, batch, jax.random.key(2), cfg, sched)
print(json.dumps(out, indent=1), f"{time.time()-t0:.0f}s", flush=True)
