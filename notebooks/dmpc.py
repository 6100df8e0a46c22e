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
# # D-MPC: diffusion model predictive control (smoke config)
# The whole experiment from nothing on the toy runner env (CPU), on the `lite` smoke config: a brax PPO
# expert, its snapshots scored in one rollout, the `medium` dataset written as TFDS array_record, the
# diffusion proposal / dynamics / value heads and the baselines trained by `core.train`, then D-MPC,
# MBOP-style and BC planners scored, and novel rewards swapped in at planning time. The full smoke run
# (`python -m launch.train_dmpc --config configs/dmpc/locomotion.py:smoke`, tests/dmpc_pipeline_test.py) adds
# `medium_replay`, the two ablations and the defect (broken-ankle analogue) fine-tune; the MJX locomotion
# numbers come from `python -m benchmarks.dmpc` on a GPU (papers/dmpc/README.md).

# %%
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.abspath(".."))  # run from notebooks/ or from the repo root
sys.path.insert(0, os.path.abspath("."))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from configs.dmpc import locomotion
from papers.dmpc import pipeline

workdir = os.environ.get("DMPC_WORKDIR", "runs/notebook_dmpc")
config = locomotion.get_config("smoke,lite=True")
result = pipeline.run_env(config.env, config, workdir, stages=("evaluate",))

# %% [markdown]
# The PPO snapshots' returns (stochastic policy, scored after training), and the ones picked as expert and
# medium.

# %%
snapshots = result["ppo"]["snapshots"]
print([(s["env_steps"], round(s["eval_return"], 1)) for s in snapshots])
print("expert", result["ppo"]["expert_snapshot"], "medium", result["ppo"]["medium_snapshot"])

# %% [markdown]
# Normalised scores (100 = this run's expert, 0 = uniform random), mean over the evaluation episodes.

# %%
methods = list(config.methods)
for kind, row in result["datasets"].items():
    print(kind, {m: round(row[m]["normalized_own"]["mean"], 1) for m in methods})
fig, ax = plt.subplots(figsize=(6, 3))
for i, (kind, row) in enumerate(result["datasets"].items()):
    ax.bar([j + 0.4 * i for j in range(len(methods))], [row[m]["normalized_own"]["mean"] for m in methods],
           width=0.4, label=kind)
ax.set_xticks([j + 0.2 for j in range(len(methods))], methods)
ax.set_ylabel("normalised score (own refs)")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(workdir, "scores.png"))

# %% [markdown]
# Novel rewards at planning time (no retraining): the return under each reward, for the D-MPC planning with
# it and for the planners that ignore it.

# %%
first = result["datasets"][config.datasets[0]]
for policy, r in first.get("novel_rewards", {}).items():
    print(policy, {k: round(v["mean"], 1) for k, v in r.items() if k.startswith("return")})
