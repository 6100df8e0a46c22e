"""Wilson (2025), "Deep learning is not so mysterious": compression bounds and Fig. 1's experiments, offline.

    python -m benchmarks.generalization            # one H200: benchmarks/results/generalization.json + PNGs
    python -m benchmarks.generalization --smoke    # CPU, sklearn digits, tiny sizes: generalization_smoke.json

Phases (the JSON is rewritten after each, so a run cut short keeps what it measured):
  compression    Lotfi et al. (2022) subspace + quantisation + range-coding bounds on MNIST and Fashion-MNIST
                 (kl-inverse, delta 0.05, data-independent prior, log2(grid) bits charged); bound vs d figure.
  random_labels  the same CNN trained on all its parameters fits random labels; its bound is vacuous.
  poly (E1), gp (E2), random_features (E3), double_descent (E4), width_compression (E6): Fig. 1 panels.
"""

from __future__ import annotations

import os
import time

import numpy as np

from benchmarks import common
from core import metrics
from papers.generalization import figures


def run_compression(config, dataset_override: str | None = None) -> dict:
    from papers.generalization import compress, data
    arrays = data.load_arrays(config.data)
    rows = []
    for dim in config.grid.dims:
        for row in compress.compress_levels(config, arrays, dim, list(config.grid.levels)):
            levels = row["levels"]
            print(f"  {row['dataset']:14s} d={row['dim']:5d} L={levels:3d} train_err={row['train_error']:.4f} "
                  f"test_err={row['test_error']:.4f} bits={row['bits']:.0f} bound={row['bound_kl']:.4f} "
                  f"({row['seconds']:.1f} s)", flush=True)
            rows.append(row)
    best = min(rows, key=lambda r: r["bound_kl"])
    return dict(rows=rows, best=best)


def run_random_labels(config) -> dict:
    """True vs random labels on the same subset: all-parameter fit (identity projection) and the subspace fit."""
    from papers.generalization import compress, data
    rl = config.random_labels
    out = {}
    for name, noise in (("true_labels", 0.0), ("random_labels", 1.0)):
        cfg = config.copy_and_resolve_references()
        cfg.data.train_size, cfg.data.label_noise = rl.train_size, noise
        arrays = data.load_arrays(cfg.data)
        full = cfg.copy_and_resolve_references()
        full.compress.update(projection="identity", steps=rl.steps, learning_rate=rl.learning_rate,
                             qat_steps=rl.qat_steps, qat_learning_rate=rl.learning_rate / 10)
        full_row = compress.compress_and_bound(full, arrays, num_levels=rl.levels)
        sub_row = compress.compress_and_bound(cfg, arrays)
        out[name] = dict(all_parameters=full_row, subspace=sub_row,
                         best_bound=min(full_row["bound_kl"], sub_row["bound_kl"]))
        print(f"  {name}: all-params train_acc={1 - full_row['continuous_train_error']:.3f} "
              f"bound={full_row['bound_kl']:.3f}; subspace train_err={sub_row['train_error']:.3f} "
              f"bound={sub_row['bound_kl']:.3f}", flush=True)
    return out


def run_poly(config) -> dict:
    from papers.generalization import polyreg
    c = config.poly
    rows = []
    for kind in ("simple", "structured", "noise"):
        for seed in c.seeds:
            x, y, f = polyreg.make_data(kind, c.n, seed)
            x_test = np.linspace(-1, 1, c.n_test)
            target = f(x_test) if kind != "noise" else np.zeros_like(x_test)
            fits = {f"gamma={g}": polyreg.fit(x, y, c.degree, g, c.lam) for g in c.gammas}
            fits["min_norm"] = polyreg.fit_min_norm(x, y, c.degree)
            fits[f"degree {c.low_degree}"] = polyreg.fit(x, y, c.low_degree, 1.0, 0.0)
            for name, w in fits.items():
                rows.append(dict(data=kind, seed=seed, model=name,
                                 train_mse=float(np.mean((polyreg.predict(w, x) - y) ** 2)),
                                 test_mse=float(np.mean((polyreg.predict(w, x_test) - target) ** 2))))
    return dict(rows=rows, summary=_mean_se(rows, ("data", "model"), ("train_mse", "test_mse")))


def run_gp(config) -> dict:
    import jax
    from papers.generalization import data, gp
    c = config.gp
    arrays = data.load_arrays(c.data)
    rows = []
    with jax.enable_x64(True):
        for seed in c.seeds:
            for row in gp.corruption_sweep(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                                           c.corruptions, c.noise, seed):
                rows.append(dict(row, seed=seed))
    return dict(rows=rows, summary=_mean_se(rows, ("corruption",), ("lml_per_point", "train_accuracy", "test_accuracy")))


def run_random_features(config) -> dict:
    from papers.generalization import random_features as rf
    c = config.random_features
    rows = []
    for seed in c.seeds:
        x_tr, y_tr, x_te, y_te = rf.teacher_data(c.n, c.n_test, c.input_dim, c.noise, seed)
        for ratio in c.ratios:
            rows.append(dict(rf.fit_features(x_tr, y_tr, x_te, y_te, max(1, int(round(ratio * c.n))), seed + 100, c.z),
                             ratio=ratio, seed=seed))
    return dict(rows=rows, summary=_mean_se(rows, ("ratio",), ("train_mse", "test_mse", "effective_dimension")))


def run_double_descent(config) -> dict:
    from papers.generalization import data, double_descent
    arrays = data.load_arrays(config.double_descent.data)
    rows = double_descent.width_sweep(config, arrays)
    for r in rows:
        print(f"  width={r['width']:3d} params={r['params']:7d} train_err={r['train_error']:.3f} "
              f"test_err={r['test_error']:.3f} N_eff={r['effective_dimension']:.1f}", flush=True)
    return dict(rows=rows)


def run_width_compression(compression_config, config) -> dict:
    from papers.generalization import compress, data
    c = config.width_compression
    arrays = data.load_arrays(compression_config.data)
    rows = []
    for width in c.widths:
        cfg = compression_config.copy_and_resolve_references()
        cfg.model.width = width
        row = compress.compress_and_bound(cfg, arrays, dim=c.dim, num_levels=c.levels)
        rows.append(dict(row, width=width))
        print(f"  width={width:3d} D={row['full_dim']:7d} bits={row['bits']:.0f} train_err={row['train_error']:.4f} "
              f"bound={row['bound_kl']:.4f}", flush=True)
    return dict(rows=rows)


def _mean_se(rows: list[dict], keys: tuple, values: tuple) -> list[dict]:
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, members in groups.items():
        entry = dict(zip(keys, key), count=len(members))
        for v in values:
            vals = np.asarray([m[v] for m in members], np.float64)
            entry[v] = float(vals.mean())
            entry[f"{v}_se"] = float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else 0.0
        out.append(entry)
    return out


def main() -> None:
    parser = common.arg_parser(__doc__)
    parser.add_argument("--phases", default="compression,random_labels,poly,gp,random_features,double_descent,"
                        "width_compression", help="comma-separated subset of phases to run")
    args = parser.parse_args()
    if args.smoke:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    phases = [p for p in args.phases.split(",") if p]
    smoke = "smoke" if args.smoke else ""
    experiments = common.load_config("generalization/experiments", smoke)
    datasets = ["digits"] if args.smoke else ["mnist", "fashion_mnist"]
    compression = {d: common.load_config("generalization/compression", smoke, f"dataset={d}") for d in datasets}
    os.makedirs(args.out, exist_ok=True)
    figure = lambda name: os.path.join(args.out, f"{common.result_name(f'generalization_{name}', args.smoke)}.png")
    report = common.Report(common.result_path(args, "generalization"), common.run_info(
        "generalization", args, config=dict(experiments=experiments.to_dict(),
                                            compression={d: c.to_dict() for d in datasets for c in [compression[d]]})))
    start = time.perf_counter()
    if "compression" in phases:
        results = {}
        for d in datasets:
            print(f"compression bound: {d}", flush=True)
            results[d] = run_compression(compression[d])
        key = {"mnist": "bound_mnist", "fashion_mnist": "bound_fashion_mnist", "digits": "bound_digits"}
        report.update(compression=results, **{key[d]: results[d]["best"]["bound_kl"] for d in datasets},
                      seconds_per_bound=float(np.median([r["seconds"] for d in datasets for r in results[d]["rows"]])),
                      seconds_per_bound_note="one (d, L): subspace training + quantisation-aware fine-tuning + "
                                             "coding + bound, compiles included")
        figures.plot_compression(results, figure("compression"))
    if "random_labels" in phases:
        print("random labels", flush=True)
        result = run_random_labels(compression[datasets[0]])
        report.update(random_labels=result,
                      random_labels_train_acc=1 - result["random_labels"]["all_parameters"]["continuous_train_error"],
                      random_labels_bound=result["random_labels"]["best_bound"],
                      true_labels_bound_same_subset=result["true_labels"]["best_bound"])
        figures.plot_random_labels(result, figure("random_labels"))
    if "poly" in phases:
        print("E1 polynomial", flush=True)
        report.update(poly=run_poly(experiments))
        figures.plot_poly(experiments, figure("poly"))
    if "gp" in phases:
        print("E2 GP on corrupted labels", flush=True)
        report.update(gp=run_gp(experiments))
        figures.plot_gp(report.data["gp"], figure("gp"))
    if "random_features" in phases:
        print("E3 random-feature double descent", flush=True)
        report.update(random_features=run_random_features(experiments))
        figures.plot_random_features(report.data["random_features"], figure("random_features"))
    if "double_descent" in phases:
        print("E4 CNN width double descent", flush=True)
        report.update(double_descent=run_double_descent(experiments))
        figures.plot_double_descent(report.data["double_descent"], figure("double_descent"))
    if "width_compression" in phases:
        print("E6 compressed size vs width", flush=True)
        report.update(width_compression=run_width_compression(compression[datasets[0]], experiments))
        figures.plot_width_compression(report.data["width_compression"], figure("width_compression"))
    report.update(total_seconds=time.perf_counter() - start)
    _print_table(report.data)
    print("wrote", report.path)


def _print_table(data: dict) -> None:
    print(f"{'quantity':40s} value")
    for key in ("bound_mnist", "bound_fashion_mnist", "bound_digits", "random_labels_train_acc", "random_labels_bound",
                "true_labels_bound_same_subset", "seconds_per_bound", "total_seconds"):
        if key in data:
            print(f"{key:40s} {data[key]:.4f}")


if __name__ == "__main__":
    main()
