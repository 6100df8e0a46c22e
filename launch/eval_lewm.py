"""Evaluate a trained LeWM: planning success (paper protocol), plan time, surprise; GIF + PNG + JSON.

    python -m launch.eval_lewm --config configs/lewm/tworoom.py:smoke --workdir runs/lewm_smoke
(trains first if the workdir has no checkpoint)
"""

import os

from core import launch


def main(config, workdir):
    from papers.lewm import artifacts, evaluate, surprise, train

    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        train.train_lewm(config, workdir)
    model = train.restore_model(config, workdir)
    report = evaluate.evaluate_success(model, config)
    artifacts.write_gif(report.pop("results"), os.path.join(workdir, "planning.gif"))
    report["plan_s"] = evaluate.time_one_plan(model, config)
    errors = surprise.surprise_curves(model, config, num_episodes=config.eval.num_episodes)
    report["surprise"] = surprise.paired_tests(errors)
    surprise.plot(errors, os.path.join(workdir, "surprise.png"))
    launch.write_json(os.path.join(workdir, "eval.json"), report)
    print({k: v for k, v in report.items()})


if __name__ == "__main__":
    launch.run(main)
