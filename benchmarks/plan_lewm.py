"""GPU benchmark: train LeWM for a wall-clock budget, then success vs training steps (paper protocol, 50
episodes), one-plan time and surprise p-values, in one command.

    python benchmarks/plan_lewm.py --tworoom_minutes 3.5 --pusht_minutes 2 --learning_rate 3e-4
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

_MINUTES = {env: flags.DEFINE_float(f"{env}_minutes", m, f"Training budget for {env}.")
            for env, m in (("tworoom", 3.5), ("pusht", 2.0))}
_STEPS_PER_S = flags.DEFINE_float("steps_per_s", 14.0, "Measured train steps/s (benchmarks/train_lewm.py).")
_LR = flags.DEFINE_float("learning_rate", 3e-4, "Peak learning rate (the paper's 5e-5 is for 10 epochs).")
_EVALS = flags.DEFINE_integer("evals", 3, "Checkpoints evaluated per env (success vs steps).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny config on CPU.")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Output directory.")


def main(argv):
    del argv
    import flax
    import jax

    from core import config as config_lib
    from papers.lewm import artifacts, evaluate, surprise, train

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = dict(benchmark="plan_lewm", date=datetime.datetime.now(datetime.UTC).isoformat(),
               device=jax.devices()[0].device_kind, versions=dict(jax=jax.__version__, flax=flax.__version__),
               command="python benchmarks/plan_lewm.py " + " ".join(sys.argv[1:]), success={},
               success_vs_steps={}, plan_s={}, surprise={})
    os.makedirs(_OUT.value, exist_ok=True)
    for env, minutes_flag in _MINUTES.items():
        minutes = minutes_flag.value
        if minutes <= 0:
            continue
        config = config_lib.load_config(f"{root}/configs/lewm/{env}.py" + (":smoke" if _SMOKE.value else ""))
        steps = 20 if _SMOKE.value else int(minutes * 60 * _STEPS_PER_S.value)
        every = max(1, steps // _EVALS.value)
        config = config_lib.apply_overrides(config, {
            "train.num_steps": steps, "optim.total_steps": steps, "optim.warmup_steps": max(1, steps // 50),
            "optim.learning_rate": _LR.value, "train.checkpoint_every": every,
            "train.keep_checkpoints": _EVALS.value + 1, "train.log_every": max(1, steps // 20)})
        workdir = f"/tmp/plan_lewm/{env}"
        t0 = time.perf_counter()
        result = train.train_lewm(config, workdir)
        train_s = time.perf_counter() - t0
        curve = []
        for step in sorted({every * i for i in range(1, _EVALS.value + 1)} | {steps}):
            if step > steps:
                continue
            model = train.restore_model(config, workdir, step)
            report = evaluate.evaluate_success(model, config)
            results = report.pop("results")
            curve.append(dict(step=step, **report))
            print(env, curve[-1], flush=True)
        out["success_vs_steps"][env] = curve
        out["success"][env] = curve[-1]
        out["success"][env]["train_s"] = train_s
        out["success"][env]["last_train_row"] = result.history[-1]
        artifacts.write_gif(results, os.path.join(_OUT.value, f"lewm_{env}.gif"))
        out["plan_s"][env] = evaluate.time_one_plan(model, config)
        errors = surprise.surprise_curves(model, config, num_episodes=50)
        out["surprise"][env] = surprise.paired_tests(errors)
        surprise.plot(errors, os.path.join(_OUT.value, f"lewm_surprise_{env}.png"))
        out["config_" + env] = config.to_dict()
    out["plan_s_max"] = max(out["plan_s"].values())
    path = os.path.join(_OUT.value, "lewm_smoke.json" if _SMOKE.value else "lewm.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=2, default=float)
    os.replace(path + ".tmp", path)
    print(json.dumps({k: out[k] for k in ("success", "plan_s", "surprise")}, indent=1, default=float))


if __name__ == "__main__":
    app.run(main)
