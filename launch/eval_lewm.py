"""Evaluate a trained LeWM: planning success (paper protocol), plan time, surprise; GIF + PNG + JSON.

    .venv/bin/python -m launch.eval_lewm --config configs/lewm/tworoom.py:smoke --workdir runs/lewm_smoke
(trains first if the workdir has no checkpoint; --all_checkpoints adds success vs training steps)
"""

import os

from absl import flags

from core import metrics
from launch import common as launch

_ALL = flags.DEFINE_bool("all_checkpoints", False, "Evaluate every checkpoint in the workdir (success vs steps).")


def main(config, workdir, all_checkpoints: bool | None = None):
    from core import checkpoint
    from papers.lewm import evaluate, train

    if all_checkpoints is None:
        all_checkpoints = _ALL.value if flags.FLAGS.is_parsed() else False
    with checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
        steps = ckpt.all_steps()
    if not steps:
        train.train_lewm(config, workdir)
        with checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
            steps = ckpt.all_steps()
    report = evaluate.evaluate_workdir(config, workdir, sorted(steps) if all_checkpoints else [max(steps)], workdir)
    report = dict(report.pop("success"), **report)     # success, interval, distances at the top level
    metrics.write_json(os.path.join(workdir, "eval.json"), report)
    print({k: report[k] for k in ("success", "ci_low", "ci_high", "plan_s", "surprise")})


if __name__ == "__main__":
    launch.run(main)
