"""GPU benchmark: "Pre-training under infinite compute" at small scale, the whole sweep in one command.

    python -m benchmarks.infinite_compute                 # one H200, ~7-8 min; resumes if re-run
    python -m benchmarks.infinite_compute --smoke         # CPU, tiny sizes
    python -m benchmarks.infinite_compute --analyze_only  # refit + redraw from the stored points

Needs the fixed-token set at config.data.dir (data/infinite_compute, 2.8 MB: carry it, or it is built from
the corpus, which needs tfds + tokenizers and ~2-10 min of CPU). Trains the standard, regularised, ensemble,
distillation and data-law points under a wall-clock budget (config budget_seconds), stores each point as it
finishes (runs/infinite_compute/points/*.json + orbax checkpoints), then fits and writes
benchmarks/results/infinite_compute.json and three PNGs.
"""

from __future__ import annotations

import os
import sys
import time

if "--smoke" in sys.argv:      # before JAX is imported (benchmarks.common imports it)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

from benchmarks import common  # noqa: E402

PAPER = dict(asymptote_standard=3.75, asymptote_regularized=3.43, asymptote_ensemble=3.27, asymptote_joint=3.17,
             data_efficiency_joint=5.17, data_efficiency_regularized=2.29, distill_retention=0.83)


def plot(result: dict, config, path_prefix: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from papers.infinite_compute import fits

    written = []
    sizes = result["sizes"]
    # 1. Loss vs non-embedding params per recipe, with the fitted curves.
    fig, ax = plt.subplots(figsize=(6, 4))
    grid = np.geomspace(min(s["non_embedding_params"] for s in sizes.values()) / 1.5,
                        max(s["non_embedding_params"] for s in sizes.values()) * 30, 100)
    for name, color in (("standard", "C0"), ("regularized", "C1")):
        pts = [(s["non_embedding_params"], s[name]["loss"]) for s in sizes.values() if s.get(name)]
        if pts:
            ax.plot(*zip(*pts), "o", color=color, label=f"{name} (best per N)")
        key = f"asymptote_{name}"
        fit = (result.get(key) or {}).get("fit")
        if fit and "law" in fit:
            law = fits.PowerLaw(**fit["law"])
            ax.plot(grid, law(grid), "--", color=color, label=f"{name} fit, E={law.E:.3f}")
    ens = result.get("ensembles") or {}
    if ens:
        xs = [e["non_embedding_params"] for e in ens.values()]
        ax.plot(xs, [e["E"] for e in ens.values()], "s", color="C2", label="ensemble K->inf per N")
        ax.plot(xs, [e["loss_by_K"][-1] for e in ens.values()], "^", color="C2", alpha=0.5,
                label=f"ensemble K={len(next(iter(ens.values()))['K'])}")
    if result.get("asymptote_joint"):
        law = fits.PowerLaw(**result["asymptote_joint"]["fit"])
        ax.plot(grid, law(grid), "--", color="C2", label=f"joint fit, E={law.E:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"D = {result['train_tokens']:,} tokens")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path_prefix + "_loss_vs_params.png", dpi=120)
    written.append(path_prefix + "_loss_vs_params.png")
    plt.close(fig)
    # 2. Loss vs epochs (standard recipe, wd 0.1), one line per size and lr.
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, s) in enumerate(sizes.items()):
        curves = {}
        for key, loss in s["standard_by_epochs"].items():
            lr, epochs = key.split("_e")
            curves.setdefault(lr, []).append((float(epochs), loss))
        for j, (lr, pts) in enumerate(sorted(curves.items())):
            pts.sort()
            ax.plot(*zip(*pts), "o-" if j == 0 else "x:", color=f"C{i}",
                    label=f"{name} N={s['non_embedding_params'] / 1e6:.2f}M {lr}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("epochs")
    ax.set_ylabel("validation loss")
    ax.set_title("standard recipe (wd 0.1)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path_prefix + "_loss_vs_epochs.png", dpi=120)
    written.append(path_prefix + "_loss_vs_epochs.png")
    plt.close(fig)
    # 3. Ensemble loss vs K with the fits.
    if ens:
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (name, e) in enumerate(ens.items()):
            law = fits.PowerLaw(**e["law"])
            ks = np.linspace(1, 16, 100)
            ax.plot(e["K"], e["loss_by_K"], "o", color=f"C{i}", label=f"{name}: E={e['E']:.3f}")
            ax.plot(ks, law(ks), "--", color=f"C{i}")
        ax.set_xlabel("ensemble members K (logit average)")
        ax.set_ylabel("validation loss")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path_prefix + "_ensemble_vs_K.png", dpi=120)
        written.append(path_prefix + "_ensemble_vs_K.png")
        plt.close(fig)
    return written


def main() -> None:
    parser = common.arg_parser(__doc__)
    parser.add_argument("--workdir", default="", help="points and checkpoints (default runs/infinite_compute[_smoke])")
    parser.add_argument("--budget_seconds", type=float, default=None, help="training wall-clock budget")
    parser.add_argument("--analyze_only", action="store_true", help="only refit and redraw from stored points")
    parser.add_argument("--sizes", default="", help="train only these sizes, comma-separated (one share per GPU)")
    parser.add_argument("--checkpoint_dir", default="", help="member checkpoints (default <workdir>/checkpoints)")
    parser.add_argument("--skip_analysis", action="store_true", help="train only (another process fits)")
    parser.add_argument("--stages", default="", help="run only these sweep stages, comma-separated, from "
                        "standard,search1,distill,ensembles,data_law,search2 (default all)")
    parser.add_argument("--update_keys", default="",
                        help="comma-separated top-level keys (e.g. distill_retention) to replace in the existing "
                        "results JSON instead of rewriting it (a partial sweep keeps the full run's figures)")
    args = parser.parse_args()
    from core import metrics
    from papers.infinite_compute import data as data_lib
    from papers.infinite_compute import sweep as sweep_lib

    config = common.load_config("infinite_compute/sweep", "smoke" if args.smoke else "")
    if args.budget_seconds is not None:
        config.budget_seconds = args.budget_seconds
    name = common.result_name("infinite_compute", args.smoke)
    workdir = args.workdir or os.path.join("runs", name)
    started = time.time()
    summary = None
    if not args.analyze_only:
        data_lib.ensure_fixed_token_set(config)
        sweep = sweep_lib.Sweep(config, workdir, deadline=started + config.budget_seconds,
                                sizes=[s for s in args.sizes.split(",") if s], checkpoint_dir=args.checkpoint_dir or None)
        summary = sweep.run([s for s in args.stages.split(",") if s] or sweep_lib.STAGES)
        print(f"sweep: {summary}", flush=True)
        if args.skip_analysis:
            return
    result = sweep_lib.analyze(config, workdir)
    try:     # a partial run (--update_keys) leaves the full run's figures alone
        figures = [] if args.update_keys else plot(result, config, os.path.join(args.out, name))
    except ImportError as error:      # matplotlib missing on the GPU image: redraw with --analyze_only
        figures = [f"not drawn: {error}"]
    efficiency = result.get("data_efficiency") or {}
    payload = common.run_info(
        name, args, config=config.to_dict(), workdir=workdir, paper=PAPER,
        asymptote_standard=result["asymptote_standard"], asymptote_regularized=result["asymptote_regularized"],
        asymptote_ensemble=result["asymptote_ensemble"], asymptote_joint=result["asymptote_joint"],
        data_efficiency=efficiency or None,
        distill_retention=result["distill_retention"],
        draft_acceptance_gain=None,
        draft_acceptance_gain_reason=(
            "not measured: the students are trained on the 4k-BPE fixed-token set (vocab 4096) while the SSD "
            "pair (papers/ssd/pair.py, benchmarks/decode.py) uses the 32k tokenizer of data/corpus, and a draft "
            "must share its target's vocabulary; it needs the distillation stage run on the pair's corpus at the "
            "draft's size (or an SSD target on the 4k corpus)"),
        ordering_holds=_ordering(result),
        sizes=result["sizes"], ensembles=result["ensembles"], data_law=result["data_law"], notes=result["notes"],
        sweep=summary, figures=figures, wall_seconds=time.time() - started)
    path = common.result_path(args, "infinite_compute")
    if args.update_keys:
        payload = _updated(path, payload, [k for k in args.update_keys.split(",") if k])
    metrics.write_json(path, payload)
    rows = [("standard (best finite)", result["asymptote_standard"], PAPER["asymptote_standard"]),
            ("regularized E", result["asymptote_regularized"], PAPER["asymptote_regularized"]),
            ("ensemble E (K->inf)", result["asymptote_ensemble"], PAPER["asymptote_ensemble"]),
            ("joint E (N,K->inf)", result["asymptote_joint"], PAPER["asymptote_joint"]),
            ("distill retention", result["distill_retention"], PAPER["distill_retention"])]
    print(f"\n{'measure':28s} {'ours':>8s} {'interval':>20s} {'paper':>6s}")
    for label, value, paper in rows:
        v = "n/a" if not value else f"{value['value']:.3f}"
        ci = "" if not value or "interval" not in value else "[{:.3f}, {:.3f}]".format(*value["interval"])
        print(f"{label:28s} {v:>8s} {ci:>20s} {paper:6.2f}")
    for key, value in efficiency.items():
        if key != "standard_data_law":
            print(f"data efficiency {key:12s} {value:8.2f}x")
    print(f"wrote {common.result_path(args, 'infinite_compute')} and {len(figures)} figures "
          f"in {time.time() - started:.0f}s")


def _updated(path: str, payload: dict, keys: list[str]) -> dict:
    """The results JSON at `path` with only `keys` taken from this run's `payload` (and the update logged)."""
    import json

    unknown = [k for k in keys if k not in payload]
    if unknown:
        raise ValueError(f"--update_keys {unknown} are not keys of the results JSON; use e.g. distill_retention.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist; run the full sweep first or drop --update_keys.")
    with open(path, encoding="utf-8") as f:
        existing = json.load(f)
    existing.update({k: payload[k] for k in keys})
    existing.setdefault("updates", []).append(dict(
        keys=keys, command=payload["command"], date=payload["date"], workdir=payload["workdir"],
        sweep=payload["sweep"], wall_seconds=payload["wall_seconds"]))
    return existing


def _ordering(result: dict) -> dict:
    """The paper's ordering standard > regularised > ensemble > joint, checked on what was measured."""
    keys = ["asymptote_standard", "asymptote_regularized", "asymptote_ensemble", "asymptote_joint"]
    values = [(k, result[k]["value"]) for k in keys if result.get(k)]
    return dict(checked=[k for k, _ in values],
                holds=all(a[1] > b[1] for a, b in zip(values, values[1:])) if len(values) > 1 else None)


if __name__ == "__main__":
    main()
