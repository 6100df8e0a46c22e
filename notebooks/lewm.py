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
# # LeWorldModel on TwoRoom
# Train the smoke LeWM briefly on clips rendered on device, plan one episode with CEM in its latent space,
# look at the rollout, and draw the violation-of-expectation surprise curve. The smoke config runs on CPU in
# about a minute; `configs/lewm/tworoom.py` without `:smoke` is the paper's setting (GPU).

# %%
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.abspath(".."))  # run from notebooks/ or from the repo root
sys.path.insert(0, os.path.abspath("."))

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from configs.lewm import tworoom
from core import config as config_lib
from papers.lewm import evaluate, surprise, train

workdir = os.environ.get("LEWM_WORKDIR", "runs/notebook_lewm")
os.makedirs(workdir, exist_ok=True)
config = config_lib.apply_overrides(tworoom.get_config("smoke"), {
    "train.num_steps": 6, "train.checkpoint_every": 6, "eval.num_episodes": 2, "eval.budget": 25,
    "eval.cem_iters": 1})
print(jax.devices())
print(config.model)

# %% [markdown]
# Train: teacher-forced latent prediction plus λ·SIGReg on the encoder's embeddings, through the one trainer.

# %%
result = train.train_lewm(config, os.path.join(workdir, "train"))
rows = [r for r in result.history if "pred_loss" in r]
print(rows[-1])

# %% [markdown]
# Plan: CEM over action blocks, cost = distance between the predicted and the goal embedding.

# %%
model = train.restore_model(config, os.path.join(workdir, "train"))
report = evaluate.evaluate_success(model, config)
print({k: report[k] for k in ("success", "ci_low", "ci_high", "start_distance_mean", "final_distance_mean")})
frames = np.asarray(report["results"]["frames"][0])          # one episode: start, then after each block
fig, axes = plt.subplots(1, min(6, len(frames)) + 1, figsize=(2 * (min(6, len(frames)) + 1), 2))
for ax, frame in zip(axes, list(frames[:6]) + [np.asarray(report["results"]["goal_frame"][0])]):
    ax.imshow(frame)
    ax.axis("off")
axes[-1].set_title("goal")
fig.tight_layout()
fig.savefig(os.path.join(workdir, "rollout.png"))

# %% [markdown]
# Surprise: the latent prediction error along expert trajectories left alone, recoloured or teleported at
# the same step (an untrained-scale model shows little; the GPU run in papers/lewm/README.md shows the effect).

# %%
errors = surprise.surprise_curves(model, config, num_episodes=2)
surprise.plot(errors, os.path.join(workdir, "surprise.png"))
print(surprise.paired_tests(errors))
