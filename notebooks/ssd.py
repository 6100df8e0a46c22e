# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Speculative speculative decoding (SSD / Saguaro) on two fake CPU devices
# Train the smoke target/draft pair (`configs/ssd/ssd.py:smoke`, `papers/ssd/pair.py`), run SSD with the
# target on device 0 and the draft on device 1 (`papers/ssd/ssd_runtime.py`), check greedy SSD against greedy AR,
# and plot the speculation cache's hit rate against the fan-out. CPU timings mean nothing here; the
# two-GPU figures come from `python -m benchmarks.ssd` (papers/ssd/README.md).

# %%
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.abspath(".."))  # run from notebooks/ or from the repo root
sys.path.insert(0, os.path.abspath("."))

import jax

if os.environ["JAX_PLATFORMS"] == "cpu":   # two fake devices: target on one, draft on the other
    jax.config.update("jax_num_cpu_devices", 2)

import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from flax import nnx

from core import config as config_lib
from core.data import lm_pipeline
from papers.ssd import engine, fanout, pair, ssd, ssd_runtime

workdir = os.environ.get("SSD_WORKDIR", "runs/notebook_ssd")
os.makedirs(workdir, exist_ok=True)
repo = os.path.dirname(os.path.abspath(ssd.__file__)).rsplit(os.sep, 2)[0]
config = config_lib.load_config(os.path.join(repo, "configs/ssd/ssd.py") + ":smoke")
config = config_lib.apply_overrides(config, {"data.corpus_dir": os.path.join(workdir, "corpus")})
print(jax.devices())

# %% [markdown]
# Train the pair: the target on the offline corpus, the draft distilled from it.

# %%
draft_config = pair.draft_config(config, config.draft_model, **config.draft_train)
target, draft = pair.train_pair(config, draft_config, workdir)
print({name: {k: round(v, 3) if isinstance(v, float) else v for k, v in s.items()}
       for name, s in pair.read_summary(workdir).items()})

# %% [markdown]
# Greedy SSD (K = 2, neural fallback, lookup on the draft's device) against greedy AR on held-out prompts.

# %%
batch, prompt_len, new = 4, 16, 24
prompts = np.asarray(next(lm_pipeline.make_lm_iterator(config.data.corpus_dir, "validation", prompt_len, batch,
                                                       seed=0, num_epochs=1))["tokens"][:, :prompt_len], np.int32)
lengths = np.full(batch, prompt_len, np.int32)
graphdef, state = nnx.split(target)
ar_config = engine.DecodeConfig("ar", new)
caches = engine.init_caches(target.config, None, ar_config, batch, prompt_len, jnp.float32)
ar, *_ = engine.make_generate(graphdef, None, ar_config)(state, None, *caches, jnp.asarray(prompts),
                                                          jnp.asarray(lengths), jax.random.key(0))
placement = ssd_runtime.place(1, separate_draft=len(jax.devices()) > 1)
config_ssd = ssd.SSDConfig(num_draft=2, fan_out_hit=fanout.uniform(2, 2), max_new_tokens=new)
result = ssd_runtime.make_ssd(target, draft, config_ssd, placement, cache_dtype=jnp.float32).generate(
    prompts, lengths, jax.random.key(0))
print("placement:", placement)
print("greedy SSD identical to greedy AR:", bool((result.tokens == np.asarray(ar.tokens)).all()))
print({k: result.stats[k] for k in ("hit_rate", "hit_rate_by_accepted", "acceptance", "accepted_on_hit",
                                    "accepted_on_miss", "rounds_by_source")})

# %% [markdown]
# Hit rate against a uniform fan-out F (forks per accepted length), and the power law 1 - p_hit = F^-r.

# %%
fan_outs, hit_rates = [1, 2, 3, 4], []
for f in fan_outs:
    runtime = ssd_runtime.make_ssd(target, draft, ssd.SSDConfig(num_draft=2, fan_out_hit=fanout.uniform(2, f),
                                                        max_new_tokens=new), placement, cache_dtype=jnp.float32)
    hit_rates.append(runtime.generate(prompts, lengths, jax.random.key(0)).stats["hit_rate"])
print(dict(zip(fan_outs, np.round(hit_rates, 3))))
try:
    r = fanout.fit_power_law(fan_outs, hit_rates)
except ValueError:
    r = None
print("power-law exponent r:", r)
print("Theorem 12 geometric fan-out (budget 8, acceptance 0.5):",
      fanout.geometric(2, 8, 0.5, r if r and r > 0 else 1.0))

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(fan_outs, hit_rates, "o-", label="measured (smoke pair)")
if r and r > 0:
    grid = np.linspace(1, max(fan_outs), 50)
    ax.plot(grid, 1 - grid ** -r, "--", label=f"1 - F^-{r:.2f}")
ax.set_xlabel("uniform fan-out F")
ax.set_ylabel("cache hit rate")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(workdir, "hit_rate_vs_fan_out.png"))
