"""Smoke pipeline for launch/demo.py: the whole sweep (standard, regularised, ensembles, distillation, data
law) on three tiny sizes of the smoke corpus, then the fits."""

from __future__ import annotations

import os


def with_workdir_data(config, workdir: str):
    """The config with its corpus and fixed-token set under workdir (so a demo run touches nothing else)."""
    from core import config as config_lib
    return config_lib.apply_overrides(config, {"data.corpus_dir": os.path.join(workdir, "corpus"),
                                               "data.dir": os.path.join(workdir, "tokens")})


def smoke_pipeline(config, workdir: str) -> list[tuple[str, str]]:
    from papers.infinite_compute import data as data_lib
    from papers.infinite_compute import analysis
    from papers.infinite_compute import sweep as sweep_lib

    config = with_workdir_data(config, workdir)
    data_lib.ensure_fixed_token_set(config)
    summary = sweep_lib.Sweep(config, os.path.join(workdir, "sweep")).run()
    result = analysis.analyze(config, os.path.join(workdir, "sweep"))
    fmt = lambda key: "n/a" if not result.get(key) else f"{result[key]['value']:.3f}"
    return [("points trained", str(len([n for n in os.listdir(os.path.join(workdir, "sweep", "points"))]))),
            ("asymptotes std / reg / ens / joint (smoke sizes)",
             " / ".join(fmt(k) for k in ("asymptote_standard", "asymptote_regularized", "asymptote_ensemble",
                                         "asymptote_joint"))),
            ("distill retention (smoke)", fmt("distill_retention")),
            ("achieved GFLOP/s", f"{summary['achieved_flops_per_s'] / 1e9:.1f}")]
