"""Evaluate a trained LeWM: planning success (paper protocol), plan time, surprise; GIF + PNG + JSON.

    python -m launch.eval_lewm --config configs/lewm/tworoom.py:smoke --workdir runs/lewm_smoke
(trains first if the workdir has no checkpoint; --all_checkpoints adds success vs training steps)
"""

import os

from absl import flags

from core import launch, metrics

_ALL = flags.DEFINE_bool("all_checkpoints", False, "Evaluate every checkpoint in the workdir (success vs steps).")


def main(config, workdir, all_checkpoints: bool | None = None):
    from core import checkpoint
    from papers.lewm import artifacts, evaluate, surprise, train

    if all_checkpoints is None:
        all_checkpoints = _ALL.value if flags.FLAGS.is_parsed() else False
    with checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
        steps = ckpt.all_steps()
    if not steps:
        train.train_lewm(config, workdir)
        with checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
            steps = ckpt.all_steps()
    curve, results = evaluate.success_vs_steps(config, workdir, sorted(steps) if all_checkpoints else [max(steps)])
    report = dict(curve[-1], success_vs_steps=curve)
    artifacts.write_gif(results, os.path.join(workdir, "planning.gif"))
    model = train.restore_model(config, workdir, max(steps))
    report["plan_s"] = evaluate.time_one_plan(model, config)
    errors = surprise.surprise_curves(model, config, num_episodes=config.eval.num_episodes)
    report["surprise"] = surprise.paired_tests(errors)
    surprise.plot(errors, os.path.join(workdir, "surprise.png"))
    metrics.write_json(os.path.join(workdir, "eval.json"), report)
    print(report)


if __name__ == "__main__":
    launch.run(main)
