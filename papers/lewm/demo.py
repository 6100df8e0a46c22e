"""LeWM smoke pipeline for launch/demo.py: train the smoke model on TwoRoom clips, then plan with CEM."""

from __future__ import annotations

import os

import ml_collections

from papers.lewm import evaluate, train as lewm_train


def smoke_pipeline(config: ml_collections.ConfigDict, workdir: str) -> list[tuple[str, str]]:
    result = lewm_train.train_lewm(config, os.path.join(workdir, "train"))
    rows = [r for r in result.history if "pred_loss" in r]
    model = lewm_train.restore_model(config, os.path.join(workdir, "train"))
    report = evaluate.evaluate_success(model, config)
    return [("pred loss first -> last", f"{rows[0]['pred_loss']:.3f} -> {rows[-1]['pred_loss']:.3f}"),
            ("SIGReg last (Gaussian floor ~1)", f"{rows[-1]['sigreg']:.2f}"),
            (f"CEM success ({report['episodes']} episodes, untrained-scale model)",
             f"{report['success']:.2f} [{report['ci_low']:.2f}, {report['ci_high']:.2f}]")]
