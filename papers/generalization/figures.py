"""PNG figures of the benchmark's results (one function per figure; each takes the results dict it plots)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.png"
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def plot_compression(results: dict, path: str) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.8), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items()):
        for levels in sorted({r["levels"] for r in result["rows"]}):
            rows = sorted((r for r in result["rows"] if r["levels"] == levels), key=lambda r: r["dim"])
            dims = [r["dim"] for r in rows]
            ax.plot(dims, [r["bound_kl"] for r in rows], "o-", label=f"bound, L={levels}")
            ax.plot(dims, [r["train_error"] for r in rows], "x--", alpha=0.6, label=f"train err, L={levels}")
        ax.plot(result["best"]["dim"], result["best"]["test_error"], "k*", ms=12, label="test err (best bound)")
        ax.set(title=f"{name}: best bound {result['best']['bound_kl']:.3f}", xlabel="subspace dimension d",
               ylabel="0-1 error", ylim=(0, None))
        ax.legend(fontsize=7)
    _save(fig, path)


def plot_random_labels(result: dict, path: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    names = ["true_labels", "random_labels"]
    x = np.arange(2)
    for offset, (key, label) in zip((-0.2, 0.2), (("all_parameters", "all parameters"), ("subspace", "subspace d"))):
        ax.bar(x + offset - 0.05, [1 - result[n][key]["continuous_train_error"] for n in names], 0.1,
               label=f"train acc ({label})")
        ax.bar(x + offset + 0.05, [result[n][key]["bound_kl"] for n in names], 0.1, label=f"error bound ({label})")
    ax.axhline(0.9, color="gray", ls=":", label="chance error (0.9)")
    ax.set_xticks(x, names)
    ax.set(ylim=(0, 1.05), title="Same CNN: fits random labels, bound vacuous")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_poly(config, path: str) -> None:
    from papers.generalization import polyreg
    c = config.poly
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    grid = np.linspace(-1, 1, 800)
    for ax, kind in zip(axes, ("simple", "structured", "noise")):
        x, y, f = polyreg.make_data(kind, c.n, c.seeds[0])
        ax.plot(x, y, "ko", ms=4, label="data")
        if kind != "noise":
            ax.plot(grid, f(grid), "k:", label="truth")
        gamma = max(c.gammas)
        ax.plot(grid, polyreg.predict(polyreg.fit(x, y, c.degree, gamma, c.lam), grid), label=f"degree {c.degree}, gamma={gamma}")
        ax.plot(grid, polyreg.predict(polyreg.fit_min_norm(x, y, c.degree), grid), alpha=0.6, label=f"degree {c.degree}, min-norm")
        ax.set(title=f"{kind} data", ylim=(np.min(y) - 1, np.max(y) + 1))
        ax.legend(fontsize=7)
    _save(fig, path)


def plot_gp(result: dict, path: str) -> None:
    s = sorted(result["summary"], key=lambda r: r["corruption"])
    c = [r["corruption"] for r in s]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].errorbar(c, [r["train_accuracy"] for r in s], [r["train_accuracy_se"] for r in s], fmt="o-", label="train")
    axes[0].errorbar(c, [r["test_accuracy"] for r in s], [r["test_accuracy_se"] for r in s], fmt="s-", label="test")
    axes[0].set(xlabel="fraction of labels corrupted", ylabel="accuracy", title="exact GP fits corrupted labels")
    axes[0].legend()
    axes[1].errorbar(c, [r["lml_per_point"] for r in s], [r["lml_per_point_se"] for r in s], fmt="o-")
    axes[1].set(xlabel="fraction of labels corrupted", ylabel="log marginal likelihood / n",
                title="marginal likelihood falls with corruption")
    _save(fig, path)


def plot_random_features(result: dict, path: str) -> None:
    s = sorted(result["summary"], key=lambda r: r["ratio"])
    ratio = [r["ratio"] for r in s]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.errorbar(ratio, [r["test_mse"] for r in s], [r["test_mse_se"] for r in s], fmt="o-", label="test MSE")
    ax.errorbar(ratio, [r["train_mse"] for r in s], [r["train_mse_se"] for r in s], fmt="x--", label="train MSE")
    ax.set(xscale="log", yscale="log", xlabel="features p / n", ylabel="MSE", title="random features: double descent")
    ax2 = ax.twinx()
    ax2.plot(ratio, [r["effective_dimension"] for r in s], "g^-", label="N_eff")
    ax2.set_ylabel("effective dimension", color="g")
    ax.legend(loc="upper right", fontsize=8)
    _save(fig, path)


def plot_double_descent(result: dict, path: str) -> None:
    rows = sorted(result["rows"], key=lambda r: r["width"])
    w = [r["width"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(w, [r["test_error"] for r in rows], "o-", label="test error")
    ax.plot(w, [r["train_error"] for r in rows], "x--", label="train error (noisy labels)")
    ax.set(xscale="log", xlabel="CNN width k", ylabel="0-1 error", title="CNN width double descent")
    ax2 = ax.twinx()
    ax2.plot(w, [r["effective_dimension"] for r in rows], "g^-")
    ax2.set_ylabel("effective dimension (top Hessian eigs)", color="g")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_width_compression(result: dict, path: str) -> None:
    rows = sorted(result["rows"], key=lambda r: r["width"])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot([r["full_dim"] for r in rows], [r["bits"] for r in rows], "o-", label="compressed size (bits)")
    ax.set(xscale="log", xlabel="parameters D", ylabel="bits", title="compressed size vs width (fixed data)")
    ax2 = ax.twinx()
    ax2.plot([r["full_dim"] for r in rows], [r["bound_kl"] for r in rows], "r^-", label="error bound")
    ax2.plot([r["full_dim"] for r in rows], [r["train_error"] for r in rows], "rx--", label="train error")
    ax2.set_ylabel("0-1 error", color="r")
    ax2.legend(fontsize=8, loc="center right")
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, path)
