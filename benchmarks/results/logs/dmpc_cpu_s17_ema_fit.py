"""CPU check of train.ema_decay on D-MPC's diffusion heads: walker2d medium-snapshot episodes collected on CPU
(256 training, 64 held-out, <= 300 steps), the GPU config's model, 3,000 steps at batch 256; the dynamics' and
proposal's held-out fit from the raw params and from their moving average of the same run."""
import json, pickle, sys, time
import jax, numpy as np
from flax import nnx
from benchmarks import common
from core import diffusion, train as train_lib
from papers.dmpc import envs as envs_lib, models, pipeline, diagnostics
from papers.dmpc.segments import Segments
decay, steps = float(sys.argv[1]), int(sys.argv[2])
prediction = sys.argv[3] if len(sys.argv) > 3 else "v"
t0 = time.time()
eps = pickle.load(open("/tmp/walker_eps.pkl", "rb"))
config = common.load_config("dmpc/locomotion", "env=walker2d")
env = envs_lib.make("walker2d")
config.data.batch_size = 256
config.train.num_steps = config.optim.total_steps = steps
config.train.ema_decay = decay
config.model.prediction = prediction
config.train.log_every = 500
config.train.eval_every = 10 ** 9
config.train.checkpoint_every = steps
config.train.steps_per_call = 50
make = lambda e: Segments(e, config.model.history, config.model.horizon, config.value.discount, config.value.terminal_penalty)
segments, held = make(eps["train"]), make(eps["held"])
model = models.DMPCModels(pipeline.model_dims(env, config), nnx.Rngs(0))
models.set_statistics(model, segments.statistics())
sched = diffusion.cosine_schedule(config.model.diffusion_steps)
weights = {"proposal": 1.0, "dynamics": 1.0, "onestep": 1.0}
result = train_lib.train(config, f"/tmp/ema_run_{decay}_{steps}" + ("" if prediction == "v" else f"_{prediction}"), model, models.make_loss_fn(sched, weights),
                         lambda s: segments.batch(np.random.default_rng([0, s]), 256))
batch = held.batch(np.random.default_rng(0), 512)
out = {"decay": decay, "steps": steps, "prediction": prediction, "train_transitions": int(eps["train"].lengths.sum()),
       "held_out_transitions": int(eps["held"].lengths.sum())}
for name, raw in (("raw", True), ("ema", False)):
    m = train_lib.merge_model(result.graphdef, result.state, raw=raw)
    m.eval()
    out[name] = {"dynamics": diagnostics.dynamics_fit(m, batch, jax.random.key(2), config.plan, sched),
                 "proposal": diagnostics.proposal_fit(m, batch, jax.random.key(1), config.plan, sched)}
out["seconds"] = time.time() - t0
print(json.dumps(out, indent=1), flush=True)
json.dump(out, open(f"/tmp/ema_{decay}_{steps}" + ("" if prediction == "v" else f"_{prediction}") + ".json", "w"), indent=1)
