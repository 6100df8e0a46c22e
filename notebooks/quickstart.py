# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # paperclub quickstart
# Build a small offline corpus, train the smoke LM on CPU, plot its loss and sample text.
# Everything comes from `core/`; the config is the `smoke` LM config.

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

from core import config as config_lib
from core import lm

workdir = os.environ.get("QUICKSTART_WORKDIR", "runs/quickstart")
repo = os.path.dirname(os.path.abspath(lm.__file__)).rsplit(os.sep, 1)[0]
config = config_lib.load_config(os.path.join(repo, "configs/lm/smoke.py"))
config = config_lib.apply_overrides(config, {"data.corpus_dir": os.path.join(workdir, "corpus")})
print(jax.devices())
print(config.model)

# %% [markdown]
# Train (the corpus and tokenizer are built on first use, deterministically).

# %%
result = lm.train_lm(config, os.path.join(workdir, "train"))
train_rows = [r for r in result.history if "loss" in r]
eval_rows = [r for r in result.history if "eval/loss" in r]
print(train_rows[-1], eval_rows[-1])

# %%
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label="train")
ax.plot([r["step"] for r in eval_rows], [r["eval/loss"] for r in eval_rows], "o-", label="validation")
ax.set_xlabel("step")
ax.set_ylabel("loss (nats/token)")
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(workdir, "loss.png"))

# %% [markdown]
# Sample from the trained model.

# %%
from core import train as train_lib
from core.data import tokenizer as tokenizer_lib
import jax.numpy as jnp
import numpy as np

tokenizer = tokenizer_lib.load_tokenizer(config.data.corpus_dir)
model = train_lib.merge_model(result.graphdef, result.state)
prompt = jnp.asarray([tokenizer.encode("def ").ids], jnp.int32)
tokens = lm.generate(model, prompt, 32, jax.random.key(0), temperature=0.8)
print("def " + tokenizer.decode(np.asarray(tokens[0]).tolist()))
