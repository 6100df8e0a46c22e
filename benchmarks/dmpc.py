"""GPU benchmark: D-MPC from nothing on MJX (PPO experts -> D4RL-style datasets -> models -> planners), in
stages that each fit one 10-minute command on a machine that may be lost between commands.

    python -m benchmarks.dmpc --smoke                       # CPU: the toy env through all three stages
    python -m benchmarks.dmpc --envs hopper:experts,walker2d:experts --export $OUT

Stages, per env (`--envs env:stage,...`; an env without a stage gets `--stage`, default auto; auto starts at
most one worker per GPU):
  experts   brax PPO until --ppo_budget_s (or num_timesteps); the snapshots go to <keep>/<env>/expert.pkl as
            they are taken (a killed PPO still leaves them); then one MJX step vs CPU MuJoCo.
  evaluate  (or evaluate/medium, evaluate/medium_replay: one dataset's models and planners; the other rows stay)
            every snapshot scored in one rollout; references; medium / medium_replay re-generated from the
            snapshots (deterministic: same snapshots and seed, same episodes; their sha256 go in the JSON);
            models trained; D-MPC, its two ablations, MBOP-style and BC on 50 episodes per dataset (+ the
            novel-reward D-MPCs on walker2d, whose `medium` model goes to <keep>/walker2d/model.npz as soon as
            it is trained, followed there by D-MPC's ms per step batched over 50 episodes and a GIF).
  ankle     walker2d only: the broken-ankle experiment from model.npz (play data, dynamics-only fine-tune,
            before / after).
  auto      the first of experts / evaluate / ankle that this env has not done (from <keep>).
Workers (one process per task) go round-robin over the visible GPUs and run one at a time per GPU (the next
starts when one ends; `--concurrent` starts them all at once); workers still running at --worker_timeout_s are
killed and tasks not yet started are reported. <keep> (default runs/dmpc_keep) holds only small files (the
PPO snapshots, per-env result JSONs, one model: < 30 MB): `--export DIR` copies it and the results to DIR at
the end, and carrying it back into the next command resumes there. Large things (datasets, checkpoints,
compile cache) stay in --workdir and are re-made when lost. Every command merges all per-env JSONs in <keep>
into benchmarks/results/dmpc.json: `normalized_mean` (D-MPC over the finished medium / medium-replay datasets,
own-reference normalised; D4RL-reference normalised beside it), `mbop_normalized_mean`, `bc_normalized_mean`,
the ablations, `ankle_before`, `ankle_after`, `plan_ms_per_step`, `mjx_vs_cpu_step`.

Session 16 on one H200 (D4RL-size datasets; each command within 30 s of the last so runs/ stays on the warm
machine; --export writes <keep>.tar, <keep>_models.tar and the results to $OUT; the first two commands ran
their workers concurrently, the old default):
  1. python -m benchmarks.dmpc --envs halfcheetah:experts,hopper:experts,walker2d:experts --worker_timeout_s 420   ~400 s
  2. python -m benchmarks.dmpc --envs halfcheetah:evaluate,hopper:evaluate,walker2d:evaluate --worker_timeout_s 545
                                                         554 s (halfcheetah-medium done, the rest cut)
  3. python -m benchmarks.dmpc --envs walker2d:evaluate/medium,hopper:evaluate/medium --worker_timeout_s 525
                                                         534 s (hopper-medium done in 417 s, walker2d cut)
The remaining commands are in papers/dmpc/README.md; benchmarks/results/dmpc_keep.tar (this session's <keep>)
is unpacked when <keep> is missing, so they start from these experts and rows.
(or repeat `python -m benchmarks.dmpc --export $OUT`, the auto stages, until it prints "every stage done").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from typing import Callable

from benchmarks import common
from core import metrics

ENVS = ("halfcheetah", "hopper", "walker2d")
STAGES = ("experts", "evaluate", "ankle")
KEEP_TAR = "benchmarks/results/dmpc_keep.tar"   # the last GPU session's <keep> (experts, finished rows), committed
ADAPTATION_ENV = "walker2d"     # configs/dmpc/locomotion.py's adaptation_env (GPU); the parent reads no config


def next_stage(env_name: str, keep: str) -> str | None:
    """The first stage this env has not done, judged from the files in `keep`."""
    if not os.path.exists(os.path.join(keep, env_name, "expert.pkl")):
        return "experts"
    result = metrics.read_json(os.path.join(keep, f"{env_name}.json"), {})
    if len(result.get("datasets", {})) < 2:
        return "evaluate"
    if env_name in (ADAPTATION_ENV, "toy") and "broken_ankle" not in result:
        return "ankle"
    return None


def run_stage(env_name: str, stage: str, smoke: bool, workdir: str, keep: str, gif_path: str | None,
              ppo_budget_s: float | None, train_steps: int = 0, dynamics: str = "mlp") -> dict:
    """One stage for one env in this process; merges its numbers into <keep>/<env>.json (after every step).
    `train_steps` > 0 replaces the config's training steps (and schedule length) of the models; `dynamics` is
    the config's dynamics denoiser (configs/dmpc/locomotion.py)."""
    from papers.dmpc import envs as envs_lib
    from papers.dmpc import experts, pipeline

    config = common.load_config("dmpc/locomotion", f"env={env_name},dynamics={dynamics}", "smoke" if smoke else "")
    if train_steps > 0:
        config.train.num_steps = config.optim.total_steps = train_steps
    json_path = os.path.join(keep, f"{env_name}.json")
    expert_file = os.path.join(keep, env_name, "expert.pkl")
    model_file = os.path.join(keep, env_name, "model.npz")
    result = metrics.read_json(json_path, {})
    log = lambda s: print(s, flush=True)

    def save(update):
        result.update(update)
        result.setdefault("stage_seconds", {})
        metrics.write_json(json_path, dict(result, config=config.to_dict()))

    started = time.perf_counter()
    if stage == "experts":
        env = envs_lib.make(env_name)
        run = experts.train_expert(env, config.ppo, config.seed, log, path=expert_file, budget_s=ppo_budget_s)
        save({"ppo_training": {"snapshots": len(run.snapshots), "env_steps": run.snapshots[-1][0],
                               "seconds": run.seconds, "finished": run.finished}})
        if env_name in envs_lib.ENV_NAMES:
            from papers.dmpc import checks
            save({"mjx_vs_cpu_step": checks.mjx_vs_cpu_step(env_name)})
    elif stage.split("/")[0] in ("evaluate", "ankle"):
        stage, _, dataset = stage.partition("/")
        if dataset:                                   # evaluate/medium: that dataset only
            if dataset not in config.datasets:
                raise ValueError(f"Unknown dataset {dataset!r}; choose from {tuple(config.datasets)}.")
            config.datasets = (dataset,)
        previous = {k: v for k, v in result.items() if k != "config"}
        out = pipeline.run_env(env_name, config, os.path.join(workdir, env_name), log=log,
                               checkpoint_fn=lambda partial: save(partial), stages=(stage,),
                               expert_file=expert_file, model_file=model_file, previous=previous,
                               train_if_missing=smoke, planner_report=True, gif_path=gif_path)
        save(out)
    else:
        raise ValueError(f"Unknown stage {stage!r}; choose one of {STAGES}, evaluate/<dataset> or auto.")
    result["stage_seconds"][stage] = time.perf_counter() - started
    save({})
    return result


def summarize(per_env: dict) -> dict:
    """The headline keys over every (env, dataset) that finished."""
    import numpy as np
    rows = [(env, kind, r) for env, res in per_env.items() for kind, r in res.get("datasets", {}).items()]
    out = {"datasets_finished": [f"{env}-{kind}" for env, kind, _ in rows],
           # training seeds and diffusion target behind each row (rows from before session 17's code: one seed, v)
           "seeds_per_dataset": {f"{env}-{kind}": int(r.get("seeds", 1)) for env, kind, r in rows},
           "prediction_per_dataset": {f"{env}-{kind}": r.get("model_prediction", "v") for env, kind, r in rows},
           "dynamics_per_dataset": {f"{env}-{kind}": r.get("dynamics_arch", "mlp") for env, kind, r in rows}}
    for method, key in (("dmpc", "normalized_mean"), ("mbop", "mbop_normalized_mean"), ("bc", "bc_normalized_mean"),
                        ("onestep", "onestep_normalized_mean"), ("gaussian", "gaussian_normalized_mean"),
                        ("dmpc_crn", "dmpc_crn_normalized_mean"), ("dmpc_softmax", "dmpc_softmax_normalized_mean"),
                        ("dmpc_lcb", "dmpc_lcb_normalized_mean"), ("dmpc_zero", "dmpc_zero_normalized_mean")):
        values = [r[method]["normalized_own"]["mean"] for _, _, r in rows if method in r]
        out[key] = float(np.mean(values)) if values else None
        d4rl = [r[method]["normalized_d4rl_ref"]["mean"] for _, _, r in rows if "normalized_d4rl_ref" in r.get(method, {})]
        out[key.replace("normalized_mean", "normalized_mean_d4rl_ref")] = float(np.mean(d4rl)) if d4rl else None
        out.setdefault("per_dataset", {})[method] = {f"{env}-{kind}": r[method]["normalized_own"]["mean"]
                                                     for env, kind, r in rows if method in r}
    for env_name, res in per_env.items():
        if "broken_ankle" in res:
            out["ankle_before"] = res["broken_ankle"]["before"]["normalized_own"]["mean"]
            out["ankle_after"] = res["broken_ankle"]["after"]["normalized_own"]["mean"]
            out["ankle_gear_scale"] = res["broken_ankle"]["gear_scale"]
            if "before_softmax" in res["broken_ankle"]:
                out["ankle_softmax_before"] = res["broken_ankle"]["before_softmax"]["normalized_own"]["mean"]
                out["ankle_softmax_after"] = res["broken_ankle"]["after_softmax"]["normalized_own"]["mean"]
        for kind, row in res.get("datasets", {}).items():
            if "novel_rewards" in row:
                out.setdefault("novel_rewards", {})[f"{env_name}-{kind}"] = {
                    policy: {k: v["mean"] for k, v in r.items()} for policy, r in row["novel_rewards"].items()}
        if "mjx_vs_cpu_step" in res:
            out.setdefault("mjx_vs_cpu_step", {})[env_name] = res["mjx_vs_cpu_step"]
        if "plan_ms_per_step" in res:
            out["plan_ms_per_step"] = res["plan_ms_per_step"]
        if "variants_ms_per_step" in res:
            out["variants_ms_per_step"] = res["variants_ms_per_step"]
    out["paper"] = {"normalized_mean": 65.98, "mbop_normalized_mean": 33.13, "bc_normalized_mean": 41.92,
                    "ankle_before": 22.74, "ankle_after": 30.65,
                    "source": "D-MPC via a secondary summary; MBOP/BC: jannerm/diffuser locomotion_scores.py "
                              "(D4RL v2 datasets, averaged over the 6 medium + medium-replay datasets)"}
    out["normalization"] = ("normalized_* use this run's own references (uniform-random policy, best PPO snapshot; "
                            "per env under per_env.<env>.reference_returns); *_d4rl_ref use D4RL's gym-v2 "
                            "reference returns, which do not match these envs' rewards")
    return out


def gpu_queues(tasks: list[tuple[str, str]], gpus: int) -> list[list[tuple[str, str]]]:
    """Tasks round-robin over the GPUs, in order; a GPU works through its queue one worker at a time unless
    --concurrent."""
    return [tasks[g::gpus] for g in range(gpus)]


def run_workers(queues: list[list[tuple[str, str]]], per_gpu: int, timeout_s: float,
                launch: Callable[[int, str, str], subprocess.Popen], on_exit: Callable[[], None] = lambda: None,
                poll_s: float = 2.0) -> dict[str, str]:
    """Runs queues[gpu]'s tasks on that GPU, `per_gpu` at a time, until they end or `timeout_s` passes (running
    workers killed, the rest not started). Calls `on_exit` after each worker ends; returns task -> outcome
    ("done", "failed (exit N)", "killed", "not started")."""
    queues = [list(q) for q in queues]
    procs, outcome = {}, {}
    deadline = time.time() + timeout_s

    def fill(gpu: int) -> None:
        while queues[gpu] and time.time() < deadline and sum(g == gpu for _, g in procs.values()) < per_gpu:
            e, stage = queues[gpu].pop(0)
            procs[f"{e}:{stage}"] = (launch(gpu, e, stage), gpu)

    for gpu in range(len(queues)):
        fill(gpu)
    while procs:
        for task, (p, gpu) in list(procs.items()):
            if p.poll() is not None or time.time() > deadline:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                    outcome[task] = "killed"
                    print(f"{task}: worker killed at the {timeout_s:.0f}s limit", flush=True)
                elif p.returncode:
                    outcome[task] = f"failed (exit {p.returncode})"
                    print(f"{task}: worker failed (exit {p.returncode})", flush=True)
                else:
                    outcome[task] = "done"
                procs.pop(task)
                on_exit()
                fill(gpu)
        time.sleep(poll_s)
    for queue in queues:
        for e, stage in queue:
            outcome[f"{e}:{stage}"] = "not started"
            print(f"{e}:{stage}: not started (the {timeout_s:.0f}s limit came first)", flush=True)
    return outcome


def _visible_gpus() -> int:
    """GPUs on this machine without initialising a JAX backend in the parent (its workers need the memory)."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 1
    return max(1, sum(line.startswith("GPU ") for line in listing.splitlines()))


def parse_tasks(envs: str, default_stage: str, keep: str, max_auto: int) -> list[tuple[str, str]]:
    """'hopper:evaluate,walker2d' -> [(env, stage)]; 'auto' resolves from <keep> (at most `max_auto` auto tasks,
    e.g. one per GPU, in --envs order); envs with nothing left to do drop out."""
    tasks = []
    for item in (e for e in envs.split(",") if e):
        env_name, _, stage = item.partition(":")
        stage = stage or default_stage
        if env_name not in ENVS + ("toy",):
            raise ValueError(f"Unknown env {env_name!r} in --envs; choose from {ENVS}.")
        if stage == "auto":
            stage = next_stage(env_name, keep)
            if stage is None:
                print(f"{env_name}: every stage done (in {keep}); nothing to run", flush=True)
                continue
            if max_auto <= 0:
                continue
            max_auto -= 1
        if stage.split("/")[0] not in STAGES:
            raise ValueError(f"Unknown stage {stage!r} for {env_name}; choose from {STAGES} or auto.")
        tasks.append((env_name, stage))
    return tasks


def restore_keep(keep: str, tar_path: str) -> bool:
    """Unpacks a committed `--export` tar (PPO snapshots, per-env JSONs) as <keep> when <keep> is absent, so a
    fresh machine resumes after the stages that tar records instead of retraining the experts."""
    if os.path.exists(keep) or not tar_path or not os.path.exists(tar_path):
        return False
    parent, name = os.path.split(os.path.normpath(keep))
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
        if not members or any(m.name.split("/")[0] != name or m.name.startswith("/") or ".." in m.name.split("/")
                              for m in members):
            raise ValueError(f"{tar_path} is not an export of a folder named {name!r}; pass --keep_tar ''.")
        scratch = os.path.join(parent or ".", f".{name}.restore")
        shutil.rmtree(scratch, ignore_errors=True)
        tar.extractall(scratch, filter="data")
    os.replace(os.path.join(scratch, name), keep)        # whole or not at all
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"restored {keep} from {tar_path}", flush=True)
    return True


def export(args, paths: list[str]) -> None:
    """Copies <keep> and the result files to --export (e.g. $OUT) as few files as a device command may return
    (8 files of <= 16 MiB): <keep>.tar (PPO snapshots, per-env JSONs), <keep>_models.tar (the saved models) and
    the results, flat. Restore with `tar xf <file> -C <parent of keep>` for both tars."""
    if not args.export:
        return
    os.makedirs(args.export, exist_ok=True)
    parent, name = os.path.split(os.path.normpath(args.keep))
    small_path, models_path = (os.path.join(args.export, f"{name}{s}.tar") for s in ("", "_models"))
    with tarfile.open(small_path + ".tmp", "w") as small, tarfile.open(models_path + ".tmp", "w") as big:
        for root, _, files in os.walk(args.keep):
            for f in sorted(files):
                if not f.endswith(".tmp"):
                    path = os.path.join(root, f)
                    (big if f.endswith(".npz") else small).add(path, arcname=os.path.relpath(path, parent or "."))
    os.replace(small_path + ".tmp", small_path)
    os.replace(models_path + ".tmp", models_path)
    for path in paths:
        if os.path.exists(path):
            shutil.copy2(path, os.path.join(args.export, os.path.basename(path)))


def main(argv=None):
    parser = common.arg_parser(__doc__)
    parser.add_argument("--envs", default=",".join(ENVS), help="comma list of env or env:stage (smoke: toy)")
    parser.add_argument("--stage", default="auto", help=f"stage for envs given without one: {STAGES} or auto")
    parser.add_argument("--workdir", default="", help="large, re-makeable files (default runs/dmpc_bench[_smoke])")
    parser.add_argument("--keep", default="", help="small files carried between commands (default runs/dmpc_keep"
                                                   "[_smoke])")
    parser.add_argument("--export", default="", help="copy <keep> and the results here at the end (e.g. $OUT)")
    parser.add_argument("--ppo_budget_s", type=float, default=330.0,
                        help="PPO stops at its first snapshot past this many seconds")
    parser.add_argument("--train_steps", type=int, default=0,
                        help="training steps of the models per dataset (0: the config's; each row records its own)")
    parser.add_argument("--dynamics", default="mlp", choices=("mlp", "dit"),
                        help="the dynamics denoiser: flat MLP, or one token per step (models.StepDenoiser)")
    parser.add_argument("--worker_timeout_s", type=float, default=480.0,
                        help="workers still running then are killed (their files so far are kept)")
    parser.add_argument("--mem_fraction", type=float, default=0.0,
                        help="GPU memory per worker (0: 0.8 / workers sharing a GPU)")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs to spread the workers over (0: all visible)")
    parser.add_argument("--concurrent", action="store_true",
                        help="start every task at once (sharing GPUs) instead of one worker per GPU at a time")
    parser.add_argument("--keep_tar", default=KEEP_TAR,
                        help="a committed <keep>.tar to start from when <keep> does not exist ('' to start bare)")
    parser.add_argument("--worker", default="", help="internal: env:stage to run in this process")
    args = parser.parse_args(argv)
    suffix = "_smoke" if args.smoke else ""
    args.workdir = args.workdir or f"runs/dmpc_bench{suffix}"
    args.keep = args.keep or f"runs/dmpc_keep{suffix}"
    gif = common.result_path(args, "dmpc_walker", "gif")
    if not args.smoke and not args.worker:
        restore_keep(args.keep, args.keep_tar)
    if args.worker:
        env_name, stage = args.worker.split(":")
        run_stage(env_name, stage, args.smoke, args.workdir, args.keep, gif, args.ppo_budget_s, args.train_steps,
                  args.dynamics)
        return
    if not args.smoke:
        # the parent only merges JSON: it must not preallocate the GPU memory its workers need
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    report = common.Report(common.result_path(args, "dmpc"), common.run_info("dmpc", args))
    started = time.perf_counter()
    names = ("toy",) if args.smoke else ENVS

    def merge():
        # first_episode_qpos (the GIF's source, ~0.2 MB per env) stays in <keep>, out of the results JSON
        per_env = {e: {k: v for k, v in r.items() if k != "first_episode_qpos"}
                   for e in names if (r := metrics.read_json(os.path.join(args.keep, f"{e}.json"), {}))}
        report.update(per_env=per_env, seconds=time.perf_counter() - started, **summarize(per_env))

    if args.smoke:
        # the toy env through the same three stages, in this process (the GPU runs each in its own command),
        # from nothing each time: it is a check of the stage structure, not a run to resume
        for path in (args.workdir, args.keep):
            shutil.rmtree(path, ignore_errors=True)
        for stage in STAGES:
            run_stage("toy", stage, True, args.workdir, args.keep, gif, None, args.train_steps, args.dynamics)
            merge()
    else:
        # Workers go round-robin over the GPUs and, by default, one at a time per GPU: processes sharing one GPU
        # are time-sliced, which costs MJX's many small kernels dearly (three PPO workers on one H200 ran several
        # times slower than one alone; in session 16 a dataset's training ran at 58 steps/s beside a worker that
        # was collecting data and 140 alone), and at the deadline every one of them was cut with nothing done.
        gpus = args.gpus or _visible_gpus()
        tasks = parse_tasks(args.envs, args.stage, args.keep, max_auto=gpus)
        queues = gpu_queues(tasks, gpus)
        per_gpu = max(1, *(len(q) for q in queues)) if args.concurrent else 1
        cache = os.path.abspath(os.path.join(args.workdir, "jax_cache"))

        def launch(gpu: int, env_name: str, stage: str) -> subprocess.Popen:
            env_vars = dict(os.environ, XLA_PYTHON_CLIENT_MEM_FRACTION=str(args.mem_fraction or 0.8 / per_gpu),
                            XLA_PYTHON_CLIENT_PREALLOCATE="true", CUDA_VISIBLE_DEVICES=str(gpu),
                            JAX_COMPILATION_CACHE_DIR=cache)
            print(f"{env_name}: stage {stage} on GPU {gpu}", flush=True)
            return subprocess.Popen(
                [sys.executable, "-m", "benchmarks.dmpc", "--worker", f"{env_name}:{stage}", "--workdir", args.workdir,
                 "--keep", args.keep, "--out", args.out, "--ppo_budget_s", str(args.ppo_budget_s),
                 "--train_steps", str(args.train_steps), "--dynamics", args.dynamics], env=env_vars)

        run_workers(queues, per_gpu, args.worker_timeout_s, launch, on_exit=merge)
    merge()
    export(args, [report.path, gif])
    d = report.data
    print(f"{'metric':32s} {'measured':>10s} {'paper':>8s}")
    for key in ("normalized_mean", "mbop_normalized_mean", "bc_normalized_mean", "ankle_before", "ankle_after"):
        value = d.get(key)
        print(f"{key:32s} {('%.2f' % value) if value is not None else '-':>10s} {d['paper'][key]:>8.2f}")
    for key in ("onestep_normalized_mean", "gaussian_normalized_mean", "dmpc_crn_normalized_mean",
                "dmpc_softmax_normalized_mean", "dmpc_lcb_normalized_mean", "dmpc_zero_normalized_mean",
                "plan_ms_per_step"):
        value = d.get(key)
        print(f"{key:32s} {('%.2f' % value) if value is not None else '-':>10s}")
    for e, res in d.get("per_env", {}).items():
        print(f"{e}: next stage {next_stage(e, args.keep) or 'none (done)'}; "
              f"stage seconds {({k: round(v) for k, v in res.get('stage_seconds', {}).items()})}")
    print(f"wrote {report.path}" + (f"; exported {args.keep} to {args.export}" if args.export else ""))


if __name__ == "__main__":
    main()
