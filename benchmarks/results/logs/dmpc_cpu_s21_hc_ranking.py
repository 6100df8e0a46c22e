"""CPU study (session 21): why D-MPC's argmax fails on halfcheetah. The H200 run's candidate_ranking gave the
diffusion dynamics a within-state Spearman of 0.29 against the one-step MLP's 0.73. Here: the dynamics and
one-step heads trained on 128 halfcheetah medium-snapshot episodes (/tmp/hc/eps.pkl, collected on CPU), then at
32 held-out states 64 candidate chunks (the data's chunk + N(0, 0.3^2), clipped) simulated in MJX and predicted;
per model: `within_r2`, the share of the candidates' spread of true futures (about their mean) the prediction
explains, and `spearman` of predicted vs simulated forward velocity summed over the chunk.
usage: python dmpc_cpu_s21_hc_ranking.py VARIANT STEPS
Results: dmpc_cpu_s21_hc_ranking.json (papers/dmpc/README.md, session 21). VARIANT hNNN sets every head's width;
the `blocks` and `perstep` variants were code changes in papers/dmpc (conditioning added to every residual block;
the dynamics' delta scaled per (k, dim)) that changed nothing and were removed."""
import json, pickle, sys, time
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from scipy import stats
from benchmarks import common
from core import diffusion, train as train_lib
from papers.dmpc import envs as envs_lib, models, pipeline, planning, diagnostics
from papers.dmpc.segments import Segments
variant, steps = sys.argv[1], int(sys.argv[2])
t0 = time.time()
eps = pickle.load(open("/tmp/hc/eps.pkl", "rb"))
config = common.load_config("dmpc/locomotion", "env=halfcheetah")
env = envs_lib.make("halfcheetah")
config.data.batch_size = 256
config.train.num_steps = config.optim.total_steps = steps
config.train.log_every = 500
config.train.eval_every = 10 ** 9
config.train.checkpoint_every = steps
config.train.steps_per_call = 50
if variant == "dit":                   # the dynamics denoiser as models.StepDenoiser
    config.model.dynamics_arch = "dit"
if variant.startswith("h"):            # hNNN: every head's width NNN (only dynamics and one-step are trained)
    config.model.hidden = int(variant[1:])
make = lambda e: Segments(e, config.model.history, config.model.horizon, config.value.discount, config.value.terminal_penalty)
segments, held = make(eps["train"]), make(eps["held"])
model = models.DMPCModels(pipeline.model_dims(env, config), nnx.Rngs(0))
models.set_statistics(model, segments.statistics())
sched = diffusion.cosine_schedule(config.model.diffusion_steps)
weights = {"dynamics": 1.0, "onestep": 1.0}
result = train_lib.train(config, f"/tmp/hc/run_{variant}_{steps}", model, models.make_loss_fn(sched, weights),
                         lambda s: segments.batch(np.random.default_rng([0, s]), 256))
m = train_lib.merge_model(result.graphdef, result.state)
m.eval()
batch = held.batch(np.random.default_rng(0), 512)
out = {"variant": variant, "steps": steps, "train_transitions": int(eps["train"].lengths.sum()),
       "dynamics_fit": diagnostics.dynamics_fit(m, batch, jax.random.key(2), config.plan, sched),
       "train_s": time.time() - t0}
states, N = 32, 64
hist, acts = jnp.asarray(batch["history"][:states]), jnp.asarray(batch["actions"][:states])
noise = 0.3 * jax.random.normal(jax.random.key(3), (states, N) + acts.shape[1:])
cands = jnp.clip(acts[:, None] + noise, -1.0, 1.0)                                  # [states, N, F, A]
true = jax.jit(jax.vmap(lambda h, a: diagnostics.simulate_chunks(env, h[-1], a)[0]))(hist, cands)
preds = {
    "diffusion": jax.jit(jax.vmap(lambda h, a, k: planning.diffusion_states(m, h, a, k, config.plan, sched)))(
        hist, cands, jax.random.split(jax.random.key(4), states)),
    "diffusion_zero": jax.jit(jax.vmap(lambda h, a, k: planning.diffusion_states(m, h, a, k, config.plan, sched,
                                                                               zero_noise=True)))(
        hist, cands, jax.random.split(jax.random.key(4), states)),
    "onestep": jax.jit(jax.vmap(lambda h, a: planning.onestep_states(m, h, a)))(hist, cands)}
norm_true = np.asarray(m.norm(true))
centre = lambda x: x - x.mean(1, keepdims=True)
for name, p in preds.items():
    norm_p = np.asarray(m.norm(p))
    r2 = 1 - np.sum((centre(norm_p) - centre(norm_true)) ** 2) / np.sum(centre(norm_true) ** 2)
    vel_p, vel_t = np.asarray(p[..., 8]).sum(-1), np.asarray(true[..., 8]).sum(-1)   # obs[8]: root x velocity
    rho = np.mean([stats.spearmanr(a, b).statistic for a, b in zip(vel_p, vel_t)])
    per_step = 1 - np.sum((centre(norm_p) - centre(norm_true)) ** 2, (0, 1, 3)) / np.sum(centre(norm_true) ** 2, (0, 1, 3))
    out[name] = {"within_r2": float(r2), "within_r2_per_step": [round(float(x), 3) for x in per_step],
                 "spearman_velocity": float(rho),
                 "mse": float(np.mean((norm_p - norm_true) ** 2))}
out["seconds"] = time.time() - t0
print(json.dumps(out, indent=1), flush=True)
json.dump(out, open(f"/tmp/hc/rank_{variant}_{steps}.json", "w"), indent=1)
