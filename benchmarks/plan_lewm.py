"""GPU benchmark: train LeWM for a wall-clock budget, then success vs training steps (paper protocol, 50
episodes, 95% Wilson intervals), one-plan time and surprise p-values, in one command.

    python -m benchmarks.plan_lewm --tworoom_minutes 4 --pusht_minutes 2     # GPU
    python -m benchmarks.plan_lewm --smoke                                   # CPU check
    python -m benchmarks.plan_lewm --oracle --envs pusht,tworoom             # CEM over the true simulator
    python -m benchmarks.plan_lewm --envs reacher --reacher_minutes 3.5 --steps_per_s 22 --evals 2   # Reacher (GPU)

`--oracle` trains nothing: it plans the protocol's episodes (eval.seed, Wilson intervals) with the same CEM but
the true simulator as the model and a state cost (papers.lewm.planning.simulator_planner), i.e. what the environment
and protocol allow with a perfect model, and writes lewm_oracle.json (top-level `oracle.<env>`).

The evaluation is papers.lewm.evaluate.evaluate_workdir (what launch/eval_lewm.py runs). The JSON
(lewm.json) is rewritten after each environment, so a run cut short still reports what it finished.
"""

from __future__ import annotations

import json
import os
import time

from benchmarks import common

PER_ENV_KEYS = ("success", "success_vs_steps", "success_by_plan_dtype", "plan_s", "plan_s_per_env_step",
                "plan_s_batched", "surprise", "surprise_curves", "seconds", "config")


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


def main(argv=None):
    parser = common.arg_parser(__doc__)
    for env, minutes in (("tworoom", 4.0), ("pusht", 2.0), ("reacher", 4.0)):
        parser.add_argument(f"--{env}_minutes", type=float, default=minutes, help=f"training budget of {env} (0: skip)")
    parser.add_argument("--steps_per_s", type=float, default=14.0, help="train steps/s (benchmarks.train_lewm)")
    parser.add_argument("--learning_rate", type=float, default=3e-4,
                        help="peak learning rate (the paper's 5e-5 is for 10 epochs)")
    parser.add_argument("--evals", type=int, default=3, help="checkpoints evaluated per env (success vs steps)")
    parser.add_argument("--note", default="", help="free text stored in the JSON (how the checkpoints came about)")
    parser.add_argument("--plan_dtypes", default="", help="comma list: also evaluate the last checkpoint planning "
                        "in these dtypes (e.g. float32), next to the config's eval.compute_dtype")
    parser.add_argument("--previous", default="", help="a lewm.json whose other environments are kept (one env per "
                        "command when the 10-minute limit cannot hold both); its per-env entries keep their own "
                        "date and command under `runs`")
    parser.add_argument("--workdir", default="/tmp/plan_lewm", help="scratch: checkpoints per env")
    parser.add_argument("--oracle", action="store_true", help="CEM over the true simulator instead of a trained model")
    parser.add_argument("--envs", default="pusht,tworoom", help="comma list of environments (trained: those with "
                        "a positive --<env>_minutes)")
    parser.add_argument("--episodes", type=int, default=0, help="--oracle: episodes (0: the config's eval.num_episodes)")
    parser.add_argument("--chunk", type=int, default=0, help="--oracle: episodes per jitted call (0: all at once)")
    parser.add_argument("--max_minutes", type=float, default=0.0,
                        help="--oracle: stop after the chunk that passes this (0: no limit); reports what finished")
    parser.add_argument("--expert_max_action", type=float, default=0.0,
                        help="Push-T: cap on the expert's |action| for the demos the episodes are cut from (0: config)")
    parser.add_argument("--image_size", type=int, default=0,
                        help="encoder input and rendering size for every env (0: the configs' 224, the paper's); a "
                        "multiple of 14. Smaller is faster per step and not the paper's model: the JSON's config says")
    parser.add_argument("--old_protocol", action="store_true",
                        help="--oracle: eval.fixed_goal_ghost=False (the goal ghost the demo drew after its own success)")
    args = parser.parse_args(argv)
    if args.oracle:
        return run_oracle(args)
    from core import config as config_lib, metrics
    from papers.lewm import evaluate, train

    chosen = set(filter(None, args.envs.split(",")))
    minutes = {env: getattr(args, f"{env}_minutes") for env in ("tworoom", "pusht", "reacher") if env in chosen}
    out = common.run_info("plan_lewm", args, success={}, note=args.note, success_vs_steps={}, plan_s={},
                          plan_s_per_env_step={}, surprise={}, seconds={}, config={})
    ran = {env for env, m in minutes.items() if m > 0}
    if args.previous:
        with open(args.previous) as f:
            keep_other_envs(out, json.load(f), ran)
    out.setdefault("runs", {}).update({env: dict(date=out["date"], command=out["command"]) for env in ran})
    path = common.result_path(args, "lewm")
    os.makedirs(args.out, exist_ok=True)          # the GIFs and figures go there before the JSON does
    for env in sorted(ran, key=list(minutes).index):
        config = common.load_config(f"lewm/{env}", "smoke" if args.smoke else "",
                                    f"image_size={args.image_size}" if args.image_size else "")
        steps = 20 if args.smoke else int(minutes[env] * 60 * args.steps_per_s)
        every = max(1, -(-steps // args.evals))      # ceil: the last evaluation is the final step
        config = config_lib.apply_overrides(config, {
            "train.num_steps": steps, "optim.total_steps": steps, "optim.warmup_steps": max(1, steps // 50),
            "optim.learning_rate": args.learning_rate, "train.checkpoint_every": every,
            "train.keep_checkpoints": args.evals + 1, "train.log_every": max(1, steps // 20)})
        workdir = os.path.join(args.workdir + ("_smoke" if args.smoke else ""), env)
        t0 = time.perf_counter()
        result = train.train_lewm(config, workdir)
        train_s = time.perf_counter() - t0
        saved = os.listdir(os.path.join(workdir, "checkpoints"))      # the checkpoints actually on disk
        eval_steps = sorted(int(d) for d in saved if d.isdigit() and int(d) <= steps)
        report = evaluate.evaluate_workdir(config, workdir, eval_steps, args.out,
                                           name=common.result_name(env, args.smoke),
                                           surprise_episodes=None if args.smoke else 50)
        for row in report["success_vs_steps"]:
            print(env, row, flush=True)
        by_dtype = {config.eval.compute_dtype: report["success"]["success"]}
        for dtype in filter(None, args.plan_dtypes.split(",")):
            other = config_lib.apply_overrides(config, {"eval.compute_dtype": dtype})
            by_dtype[dtype] = evaluate.success_vs_steps(other, workdir, eval_steps[-1:])[0][0]["success"]
        out.setdefault("success_by_plan_dtype", {})[env] = by_dtype
        report["success"] = dict(report["success"], last_train_row=result.history[-1] if result.history else None)
        report["seconds"] = dict(train=train_s, **report["seconds"])
        for key in PER_ENV_KEYS:
            if key in report:
                out.setdefault(key, {})[env] = report[key]
        out["config"][env] = config.to_dict()
        out["plan_s_max"] = max(out["plan_s"].values())
        metrics.write_json(path, out)
        print(json.dumps({k: out[k][env] for k in ("success", "plan_s", "surprise", "seconds")}, default=float),
              flush=True)
    print("wrote", path)


def run_oracle(args) -> dict:
    from core import config as config_lib, metrics
    from papers.lewm import evaluate

    out = common.run_info("plan_lewm_oracle", args, oracle={}, config={})
    path = common.result_path(args, "lewm_oracle")
    for env in filter(None, args.envs.split(",")):
        config = common.load_config(f"lewm/{env}", "smoke" if args.smoke else "")
        overrides = {"eval.fixed_goal_ghost": not args.old_protocol}
        if args.expert_max_action and env == "pusht":
            overrides["env.params.expert_max_action"] = args.expert_max_action
        config = config_lib.apply_overrides(config, overrides)
        report = evaluate.evaluate_oracle(config, args.episodes or None, chunk=args.chunk,
                                          max_seconds=args.max_minutes * 60 if args.max_minutes else None)
        report.pop("results")
        out["oracle"][env] = report
        out["config"][env] = config.to_dict()
        metrics.write_json(path, out)
        print(env, json.dumps(report, default=float), flush=True)
    print("wrote", path)
    return out


if __name__ == "__main__":
    main()
