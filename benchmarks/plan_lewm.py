"""GPU benchmark: train LeWM for a wall-clock budget, then success vs training steps (paper protocol, 50
episodes, 95% Wilson intervals), one-plan time and surprise p-values, in one command.

    python benchmarks/plan_lewm.py --tworoom_minutes 4 --pusht_minutes 2 --out $OUT

The JSON is rewritten after each environment, so a run cut short still reports what it finished.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

_MINUTES = {env: flags.DEFINE_float(f"{env}_minutes", m, f"Training budget for {env} (0: skip).")
            for env, m in (("tworoom", 4.0), ("pusht", 2.0))}
_STEPS_PER_S = flags.DEFINE_float("steps_per_s", 14.0, "Measured train steps/s (benchmarks/train_lewm.py).")
_LR = flags.DEFINE_float("learning_rate", 3e-4, "Peak learning rate (the paper's 5e-5 is for 10 epochs).")
_EVALS = flags.DEFINE_integer("evals", 3, "Checkpoints evaluated per env (success vs steps).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny config on CPU.")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Output directory.")
_NOTE = flags.DEFINE_string("note", "", "Free text stored in the JSON (e.g. how the checkpoints came about).")
_PLAN_DTYPES = flags.DEFINE_list("plan_dtypes", [], "Also evaluate the last checkpoint planning in these dtypes "
                                 "(e.g. float32), next to the config's eval.compute_dtype.")
_PREVIOUS = flags.DEFINE_string("previous", "", "A lewm.json whose other environments are kept (one env per "
                                "command when the 10-minute limit cannot hold both); its per-env entries "
                                "keep their own date and command under `runs`.")


PER_ENV_KEYS = ("success", "success_vs_steps", "success_by_plan_dtype", "plan_s", "plan_s_per_env_step",
                "plan_s_batched", "surprise", "seconds", "config")


def keep_other_envs(out: dict, previous: dict, ran: set[str]) -> None:
    """Copies `previous`' per-env results for the envs this command does not run into `out`, with the date
    and command that produced them under out["runs"]."""
    out["runs"] = {env: run for env, run in previous.get("runs", {}).items() if env not in ran}
    for env in previous.get("success", {}):
        if env in ran:
            continue
        out["runs"].setdefault(env, dict(date=previous["date"], command=previous["command"]))
        for key in PER_ENV_KEYS:
            if env in previous.get(key, {}):
                out.setdefault(key, {})[env] = previous[key][env]


def main(argv):
    del argv
    from core import config as config_lib, metrics
    from papers.lewm import artifacts, evaluate, surprise, train

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = metrics.run_info("plan_lewm", success={}, note=_NOTE.value, success_vs_steps={}, plan_s={},
                           plan_s_per_env_step={}, surprise={}, seconds={}, config={})
    ran = {env for env, flag in _MINUTES.items() if flag.value > 0}
    if _PREVIOUS.value:
        with open(_PREVIOUS.value) as f:
            keep_other_envs(out, json.load(f), ran)
    out.setdefault("runs", {}).update({env: dict(date=out["date"], command=out["command"]) for env in ran})
    os.makedirs(_OUT.value, exist_ok=True)
    path = os.path.join(_OUT.value, "lewm_smoke.json" if _SMOKE.value else "lewm.json")
    for env, minutes_flag in _MINUTES.items():
        if minutes_flag.value <= 0:
            continue
        config = config_lib.load_config(f"{root}/configs/lewm/{env}.py" + (":smoke" if _SMOKE.value else ""))
        steps = 20 if _SMOKE.value else int(minutes_flag.value * 60 * _STEPS_PER_S.value)
        every = max(1, -(-steps // _EVALS.value))      # ceil: the last evaluation is the final step
        config = config_lib.apply_overrides(config, {
            "train.num_steps": steps, "optim.total_steps": steps, "optim.warmup_steps": max(1, steps // 50),
            "optim.learning_rate": _LR.value, "train.checkpoint_every": every,
            "train.keep_checkpoints": _EVALS.value + 1, "train.log_every": max(1, steps // 20)})
        workdir = f"/tmp/plan_lewm/{env}"
        t0 = time.perf_counter()
        result = train.train_lewm(config, workdir)
        t1 = time.perf_counter()
        saved = os.listdir(os.path.join(workdir, "checkpoints"))      # the checkpoints actually on disk
        eval_steps = sorted(int(d) for d in saved if d.isdigit() and int(d) <= steps)
        curve, results = evaluate.success_vs_steps(config, workdir, eval_steps)
        t2 = time.perf_counter()
        for row in curve:
            print(env, row, flush=True)
        by_dtype = {config.eval.compute_dtype: curve[-1]["success"]}
        for dtype in _PLAN_DTYPES.value:
            other = config_lib.apply_overrides(config, {"eval.compute_dtype": dtype})
            by_dtype[dtype] = evaluate.success_vs_steps(other, workdir, eval_steps[-1:])[0][0]["success"]
        out.setdefault("success_by_plan_dtype", {})[env] = by_dtype
        model = train.restore_model(config, workdir, steps)
        artifacts.write_gif(results, os.path.join(_OUT.value, f"lewm_{env}.gif"))
        plan_s = evaluate.time_one_plan(model, config)
        plan_s_batched = evaluate.time_one_plan(model, config, batch=config.eval.num_episodes)
        t3 = time.perf_counter()
        errors = surprise.surprise_curves(model, config, num_episodes=50)
        surprise.plot(errors, os.path.join(_OUT.value, f"lewm_surprise_{env}.png"))
        out["success_vs_steps"][env] = curve
        out["success"][env] = dict(curve[-1], last_train_row=result.history[-1] if result.history else None)
        out["plan_s"][env] = plan_s
        out.setdefault("plan_s_batched", {})[env] = dict(seconds=plan_s_batched, episodes=config.eval.num_episodes)
        out["plan_s_per_env_step"][env] = plan_s / (config.eval.horizon * config.model.frameskip)
        first = config.model.history                                   # earlier frames lack a full history
        curves = {c: [float(x) for x in errors[i, :, first:].mean(0)] for i, c in enumerate(surprise.CONDITIONS)}
        out["surprise"][env] = dict(surprise.paired_tests(errors), mean_error_per_frame=curves, first_frame=first)
        out["seconds"][env] = dict(train=t1 - t0, success_vs_steps=t2 - t1, plan_timing=t3 - t2,
                                   surprise=time.perf_counter() - t3)
        out["config"][env] = config.to_dict()
        out["plan_s_max"] = max(out["plan_s"].values())
        metrics.write_json(path, out)
        print(json.dumps({k: out[k][env] for k in ("success", "plan_s", "surprise", "seconds")}, default=float),
              flush=True)


if __name__ == "__main__":
    app.run(main)
