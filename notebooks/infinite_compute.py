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
# # Pre-training under infinite compute (Kim et al. 2025), at smoke scale
# A fixed D-token train set from the offline corpus; the standard recipe (wd 0.1, epochs swept), the
# regularised recipe (local search over lr, wd, epochs), logit-averaged ensembles trained as one vmapped
# program, sequence-level distillation, and the power-law fits. Here on the `smoke` config (CPU, tiny
# sizes): the numbers only show the pipeline runs; the GPU sweep is `python -m benchmarks.infinite_compute`.

# %%
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.abspath(".."))  # run from notebooks/ or from the repo root
sys.path.insert(0, os.path.abspath("."))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from configs.infinite_compute import sweep as sweep_config
from papers.infinite_compute import analysis
from papers.infinite_compute import data as data_lib
from papers.infinite_compute import demo, fits
from papers.infinite_compute import sweep as sweep_lib

workdir = os.environ.get("INFINITE_COMPUTE_WORKDIR", "runs/notebook_infinite_compute")
config = demo.with_workdir_data(sweep_config.get_config("smoke"), workdir)
data_lib.ensure_fixed_token_set(config)
print(data_lib.load_manifest(config.data.dir)["counts"])

# %% [markdown]
# Run the sweep (re-running resumes: finished points are read back, not retrained).

# %%
summary = sweep_lib.Sweep(config, os.path.join(workdir, "sweep")).run()
result = analysis.analyze(config, os.path.join(workdir, "sweep"))
for key in ("asymptote_standard", "asymptote_regularized", "asymptote_ensemble", "asymptote_joint",
            "distill_retention"):
    print(key, None if not result[key] else round(result[key]["value"], 4))

# %% [markdown]
# Loss against non-embedding parameters, best point per size and recipe, with the fitted A/N^alpha + E.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
ax = axes[0]
sizes = result["sizes"]
for name, color in (("standard", "C0"), ("regularized", "C1")):
    pts = [(s["non_embedding_params"], s[name]["loss"]) for s in sizes.values() if s.get(name)]
    ax.plot(*zip(*pts), "o", color=color, label=name)
    fit = (result[f"asymptote_{name}"] or {}).get("fit")
    if fit:
        law = fits.PowerLaw(**fit["law"])
        grid = np.geomspace(min(p[0] for p in pts), max(p[0] for p in pts) * 10, 50)
        ax.plot(grid, law(grid), "--", color=color)
ax.set_xscale("log")
ax.set_xlabel("non-embedding params")
ax.set_ylabel("validation loss")
ax.legend()
ax = axes[1]
for i, (name, e) in enumerate(result["ensembles"].items()):
    ax.plot(e["K"], e["loss_by_K"], "o", color=f"C{i}", label=f"{name} E={e['E']:.3f}")
    ks = np.linspace(1, 8, 50)
    ax.plot(ks, fits.PowerLaw(**e["law"])(ks), "--", color=f"C{i}")
ax.set_xlabel("ensemble members K")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(workdir, "fits.png"))
