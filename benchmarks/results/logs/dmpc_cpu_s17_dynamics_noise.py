"""Where the diffusion dynamics' error comes from (CPU, the model of /tmp/ema_train.py): one sample vs the mean
of 16 samples vs one DDIM run from zero noise (x_init = 0), at 10 and 32 DDIM steps; one-step MLP beside."""
import json, pickle, sys
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from benchmarks import common
from core import diffusion, train as train_lib
from papers.dmpc import envs as envs_lib, models, pipeline, planning
from papers.dmpc.segments import Segments
eps = pickle.load(open("/tmp/walker_eps.pkl", "rb"))
config = common.load_config("dmpc/locomotion", "env=walker2d")
config.train.ema_decay = float(sys.argv[1]); steps = int(sys.argv[2])
prediction = sys.argv[3] if len(sys.argv) > 3 else "v"
config.model.prediction = prediction
config.train.num_steps = config.optim.total_steps = steps
env = envs_lib.make("walker2d")
make = lambda e: Segments(e, config.model.history, config.model.horizon, config.value.discount, config.value.terminal_penalty)
held = make(eps["held"])
skeleton = models.DMPCModels(pipeline.model_dims(env, config), nnx.Rngs(0))
model = train_lib.restore_trained_model(config, f"/tmp/ema_run_{sys.argv[1]}_{steps}" + ("" if prediction == "v" else f"_{prediction}"), skeleton)
sched = diffusion.cosine_schedule(config.model.diffusion_steps)
batch = held.batch(np.random.default_rng(0), 512)
h, a = jnp.asarray(batch["history"]), jnp.asarray(batch["actions"])
future = model.norm(jnp.asarray(batch["future"]))
F, S = config.model.horizon, env.observation_size
out = {"prediction": prediction}
for ddim in (10, 32):
    cfg = config.plan.copy_and_resolve_references(); cfg.dynamics_steps = ddim
    one = jax.jit(jax.vmap(lambda hh, aa, k, x: planning.diffusion_states(model, hh, aa[None], k, cfg, sched, x_init=x)[0]))
    keys = jax.random.split(jax.random.key(3), 16 * h.shape[0]).reshape(16, h.shape[0])
    samples = jnp.stack([one(h, a, keys[i], jax.random.normal(jax.random.fold_in(keys[i, 0], 1), (h.shape[0], 1, F * S)))
                         for i in range(16)])
    zero = one(h, a, keys[0], jnp.zeros((h.shape[0], 1, F * S)))
    err = lambda st: float(jnp.square(model.norm(st) - future).mean())
    out[f"ddim{ddim}"] = {"one_sample": err(samples[0]), "mean_of_16": err(samples.mean(0)),
                          "zero_noise": err(zero),
                          "sample_spread": float(jnp.square(model.norm(samples) - model.norm(samples.mean(0))).mean())}
out["onestep"] = float(jnp.square(model.norm(jax.jit(jax.vmap(lambda hh, aa: planning.onestep_states(model, hh, aa[None])[0]))(h, a)) - future).mean())
print(json.dumps(out, indent=1))
