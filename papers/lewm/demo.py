"""LeWM smoke pipeline for launch/demo.py: train the smoke model on TwoRoom clips, then plan with CEM."""

from __future__ import annotations

import os


def smoke_pipeline(workdir: str) -> list[tuple[str, str]]:
    from core import config as config_lib
    from papers.lewm import train as lewm_train

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    config = config_lib.load_config(os.path.join(root, "configs", "lewm", "tworoom.py") + ":smoke")
    result = lewm_train.train_lewm(config, os.path.join(workdir, "train"))
    rows = [r for r in result.history if "pred_loss" in r]
    out = [("pred loss first -> last", f"{rows[0]['pred_loss']:.3f} -> {rows[-1]['pred_loss']:.3f}"),
           ("SIGReg last (Gaussian floor ~1)", f"{rows[-1]['sigreg']:.2f}")]
    try:
        from papers.lewm import evaluate
    except ImportError:
        return out + [("planning", "not implemented yet")]
    model = lewm_train.restore_model(config, os.path.join(workdir, "train"))
    report = evaluate.evaluate_success(model, config)
    return out + [(f"CEM success ({report['episodes']} episodes, untrained-scale model)",
                   f"{report['success']:.2f} [{report['ci_low']:.2f}, {report['ci_high']:.2f}]")]
