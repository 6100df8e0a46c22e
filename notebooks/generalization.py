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
# # Deep learning is not so mysterious (Wilson 2025): a compression bound on CPU
# Train a small CNN in a random subspace theta = theta0 + P w, quantise w to learned levels, range-code it,
# and turn the code length into a PAC-Bayes / Occam bound on the 0-1 error (Lotfi et al. 2022). Then the
# order-dependent polynomial of Fig. 1(a-c). Data: sklearn digits (inside scikit-learn).

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

from core import config as config_lib
from papers.generalization import bounds, compress, data, polyreg

workdir = os.environ.get("GENERALIZATION_WORKDIR", "runs/notebook_generalization")
os.makedirs(workdir, exist_ok=True)
repo = os.path.dirname(os.path.abspath(compress.__file__)).rsplit(os.sep, 2)[0]
config = config_lib.load_config(os.path.join(repo, "configs/generalization/compression.py:smoke"))
config.data.tfds_dir = os.path.join(workdir, "tfds", "digits")
arrays = data.load_arrays(config.data)
print({k: v.shape for k, v in arrays.items()})

# %% [markdown]
# ## Subspace training, quantisation, coding, bound

# %%
result = compress.compress_and_bound(config, arrays)
for key in ("dim", "full_dim", "levels", "train_error", "test_error", "code_bits", "entropy_bits", "bits",
            "bound_kl", "bound_occam", "seconds"):
    print(f"{key:16s} {result[key]}")

# %% [markdown]
# The same code length with random labels cannot be this short: a hypothesis that fits n random labels needs
# about n log2(10) bits, so its bound is vacuous. The bound as a function of the bits spent:

# %%
bits = np.linspace(100, 5000, 50)
fig, ax = plt.subplots(figsize=(5, 3.5))
for error in (0.0, 0.05, 0.2):
    ax.plot(bits, [bounds.kl_bound(error, b, result["n"]) for b in bits], label=f"train error {error}")
ax.axvline(result["bits"], color="k", ls=":", label="this model")
ax.set(xlabel="code length (bits)", ylabel="kl error bound", title=f"n = {result['n']}")
ax.legend()
fig.savefig(os.path.join(workdir, "bound_vs_bits.png"))

# %% [markdown]
# ## Fig. 1(a-c): a degree-150 polynomial with order-dependent regularisation

# %%
grid = np.linspace(-1, 1, 400)
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for ax, kind in zip(axes, ("simple", "structured", "noise")):
    x, y, f = polyreg.make_data(kind, 30, seed=0)
    w = polyreg.fit(x, y, 150, gamma=1.1, lam=1e-4)
    ax.plot(x, y, "ko", ms=3)
    ax.plot(grid, polyreg.predict(w, grid))
    ax.set(title=f"{kind}: train MSE {np.mean((polyreg.predict(w, x) - y) ** 2):.3f}", ylim=(y.min() - 1, y.max() + 1))
fig.savefig(os.path.join(workdir, "polynomial.png"))
print("wrote", workdir)
