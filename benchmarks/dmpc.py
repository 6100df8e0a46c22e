"""GPU benchmark: D-MPC from nothing on MJX (PPO experts -> D4RL-style datasets -> models -> planners), one command.

    python -m benchmarks.dmpc            # one H200: three env workers in parallel (halfcheetah, hopper, walker2d)
    python -m benchmarks.dmpc --smoke    # CPU: the toy env, seconds to minutes

Each worker runs papers.dmpc.pipeline.run_env for its env and writes <workdir>/<env>.json; the parent merges
them into benchmarks/results/dmpc.json (rewritten as workers finish, so a run cut short keeps what finished)
with `normalized_mean` (D-MPC over the medium / medium-replay datasets, own-reference normalised; D4RL-reference
normalised numbers are beside it), `mbop_normalized_mean`, `bc_normalized_mean`, the ablations, `ankle_before`,
`ankle_after` and `plan_ms_per_step` (D-MPC planner batched over 50 episodes), and a GIF of a walker episode.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

from benchmarks import common

ENVS = ("halfcheetah", "hopper", "walker2d")


def worker(env_name: str, smoke: bool, workdir: str, out_json: str, gif_path: str | None) -> dict:
    import jax
    from flax import nnx

    from core import diffusion
    from papers.dmpc import envs as envs_lib
    from papers.dmpc import figures, pipeline, planning

    config = common.load_config("dmpc/locomotion", f"env={env_name}", "smoke" if smoke else "")
    def save(result):
        os.makedirs(os.path.dirname(out_json), exist_ok=True)
        with open(out_json + ".tmp", "w") as f:
            json.dump(dict(result, config=config.to_dict()), f, indent=1, default=float)
        os.replace(out_json + ".tmp", out_json)

    trained = {}
    result = pipeline.run_env(env_name, config, os.path.join(workdir, env_name),
                              log=lambda s: print(s, flush=True), models_out=trained, checkpoint_fn=save)
    save(result)
    if env_name == config.adaptation_env:
        model = trained[config.datasets[0]]
        graphdef, state = nnx.split(model)
        schedule = diffusion.cosine_schedule(config.model.diffusion_steps)
        policy = planning.make_policy(graphdef, "dmpc", config.plan, schedule)
        env = envs_lib.make(env_name)
        resets = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), config.eval.num_episodes))
        histories = jax.numpy.repeat(resets.obs[:, None], config.model.history, 1)
        result["plan_ms_per_step"] = planning.plan_ms_per_step(policy, state, histories)
        result["plan_batch_episodes"] = config.eval.num_episodes
        if gif_path:
            import numpy as np
            qpos = np.asarray(result["first_episode_qpos"]["dmpc"])
            figures.episode_gif(env_name, qpos[: min(len(qpos), 300)], gif_path)
            result["gif"] = gif_path
        save(result)
    if env_name in envs_lib.ENV_NAMES:
        from papers.dmpc import checks
        result["mjx_vs_cpu_step"] = checks.mjx_vs_cpu_step(env_name)
    save(result)
    return result


def summarize(per_env: dict, smoke: bool) -> dict:
    """The headline keys over every (env, dataset) that finished."""
    import numpy as np
    rows = [(env, kind, r) for env, res in per_env.items() for kind, r in res.get("datasets", {}).items()]
    out = {"datasets_finished": [f"{env}-{kind}" for env, kind, _ in rows]}
    for method, key in (("dmpc", "normalized_mean"), ("mbop", "mbop_normalized_mean"), ("bc", "bc_normalized_mean"),
                        ("onestep", "onestep_normalized_mean"), ("gaussian", "gaussian_normalized_mean")):
        values = [r[method]["normalized_own"]["mean"] for _, _, r in rows if method in r]
        out[key] = float(np.mean(values)) if values else None
        d4rl = [r[method]["normalized_d4rl_ref"]["mean"] for _, _, r in rows if "normalized_d4rl_ref" in r.get(method, {})]
        out[key.replace("normalized_mean", "normalized_mean_d4rl_ref")] = float(np.mean(d4rl)) if d4rl else None
        out.setdefault("per_dataset", {})[method] = {f"{env}-{kind}": r[method]["normalized_own"]["mean"]
                                                     for env, kind, r in rows if method in r}
    for res in per_env.values():
        if "broken_ankle" in res:
            out["ankle_before"] = res["broken_ankle"]["before"]["normalized_own"]["mean"]
            out["ankle_after"] = res["broken_ankle"]["after"]["normalized_own"]["mean"]
            out["ankle_gear_scale"] = res["broken_ankle"]["gear_scale"]
        for kind, row in res.get("datasets", {}).items():
            if "novel_rewards" in row:
                out.setdefault("novel_rewards", {})[f"{res['env']}-{kind}"] = {
                    policy: {k: v["mean"] for k, v in r.items()} for policy, r in row["novel_rewards"].items()}
        if "mjx_vs_cpu_step" in res:
            out.setdefault("mjx_vs_cpu_step", {})[res["env"]] = res["mjx_vs_cpu_step"]
        if "plan_ms_per_step" in res:
            out["plan_ms_per_step"] = res["plan_ms_per_step"]
    out["paper"] = {"normalized_mean": 65.98, "mbop_normalized_mean": 33.13, "bc_normalized_mean": 41.92,
                    "ankle_before": 22.74, "ankle_after": 30.65,
                    "source": "D-MPC via a secondary summary; MBOP/BC: jannerm/diffuser locomotion_scores.py "
                              "(D4RL v2 datasets, averaged over the 6 medium + medium-replay datasets)"}
    out["normalization"] = ("normalized_* use this run's own references (uniform-random policy, best PPO snapshot; "
                            "per env under per_env.<env>.reference_returns); *_d4rl_ref use D4RL's gym-v2 "
                            "reference returns, which do not match these envs' rewards")
    return out


def _visible_gpus() -> int:
    """GPUs on this machine without initialising a JAX backend in the parent (its workers need the memory)."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 1
    return max(1, sum(line.startswith("GPU ") for line in listing.splitlines()))


def main(argv=None):
    parser = common.arg_parser(__doc__)
    parser.add_argument("--envs", default=",".join(ENVS), help="comma list (the smoke run uses the toy env)")
    parser.add_argument("--workdir", default="runs/dmpc_bench")
    parser.add_argument("--worker", default="", help="internal: run one env in this process")
    parser.add_argument("--worker_timeout_s", type=float, default=520.0)
    parser.add_argument("--mem_fraction", type=float, default=0.0,
                        help="GPU memory per worker (0: 0.8 / workers sharing a GPU)")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs to spread the workers over (0: all visible)")
    args = parser.parse_args(argv)
    if not args.worker and not args.smoke:
        # the parent only merges JSON: it must not preallocate the GPU memory its workers need
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    gif = common.result_path(args, "dmpc_walker", "gif")
    if args.worker:
        worker(args.worker, args.smoke, args.workdir, os.path.join(args.workdir, f"{args.worker}.json"),
               gif if args.worker == "walker2d" or args.smoke else None)
        return

    envs = ["toy"] if args.smoke else [e for e in args.envs.split(",") if e]
    report = common.Report(common.result_path(args, "dmpc"), common.run_info("dmpc", args))
    started = time.perf_counter()
    per_env = {}
    for e in ENVS:    # envs finished by an earlier command (e.g. one env per 10-minute command) are merged too
        path = os.path.join(args.workdir, f"{e}.json")
        if e not in envs and os.path.exists(path):
            with open(path) as f:
                per_env[e] = json.load(f)
    if args.smoke:
        per_env["toy"] = worker("toy", True, args.workdir, os.path.join(args.workdir, "toy.json"), gif)
    else:
        # One process per env: their compiles run on separate CPU cores and their MJX programs share the GPU.
        # a persistent compile cache makes a re-run (resuming a cut-short run) skip the compiles it already paid
        # Workers go round-robin over the GPUs: processes sharing one GPU are time-sliced, which costs MJX's many
        # small kernels dearly (three workers on one H200 ran PPO at ~6k env steps/s against ~50k alone).
        gpus = args.gpus or _visible_gpus()
        per_gpu = math.ceil(len(envs) / gpus)
        procs = {}
        for i, e in enumerate(envs):
            env_vars = dict(os.environ, XLA_PYTHON_CLIENT_MEM_FRACTION=str(args.mem_fraction or 0.8 / per_gpu),
                            XLA_PYTHON_CLIENT_PREALLOCATE="true", CUDA_VISIBLE_DEVICES=str(i % gpus),
                            JAX_COMPILATION_CACHE_DIR=os.path.abspath(os.path.join(args.workdir, "jax_cache")))
            procs[e] = subprocess.Popen([sys.executable, "-m", "benchmarks.dmpc", "--worker", e, "--workdir",
                                         args.workdir, "--out", args.out], env=env_vars)
        deadline = time.time() + args.worker_timeout_s
        while procs:
            for e, p in list(procs.items()):
                if p.poll() is not None or time.time() > deadline:
                    if p.poll() is None:
                        p.kill()
                        print(f"{e}: worker killed at the {args.worker_timeout_s:.0f}s limit", flush=True)
                    procs.pop(e)
                    path = os.path.join(args.workdir, f"{e}.json")
                    if os.path.exists(path):
                        with open(path) as f:
                            per_env[e] = json.load(f)
                    report.update(per_env=per_env, seconds=time.perf_counter() - started,
                                  **summarize(per_env, args.smoke))
            time.sleep(2)
    report.update(per_env=per_env, seconds=time.perf_counter() - started, **summarize(per_env, args.smoke))
    d = report.data
    print(f"{'metric':32s} {'measured':>10s} {'paper':>8s}")
    for key in ("normalized_mean", "mbop_normalized_mean", "bc_normalized_mean", "ankle_before", "ankle_after"):
        value = d.get(key)
        print(f"{key:32s} {('%.2f' % value) if value is not None else '-':>10s} {d['paper'][key]:>8.2f}")
    for key in ("onestep_normalized_mean", "gaussian_normalized_mean", "plan_ms_per_step"):
        value = d.get(key)
        print(f"{key:32s} {('%.2f' % value) if value is not None else '-':>10s}")
    print(f"wrote {report.path}")


if __name__ == "__main__":
    main()
