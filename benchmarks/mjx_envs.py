"""GPU benchmark: MJX env steps/s of the D-MPC locomotion envs, per constraint-solver budget, with the accuracy
each budget costs against MuJoCo's CPU simulator at its defaults.

    python -m benchmarks.mjx_envs            # GPU: 2048 envs x 200 steps per (env, solver budget)
    python -m benchmarks.mjx_envs --smoke    # CPU: 8 envs x 5 steps, hopper only

Why: brax PPO on these envs ran at ~3k env steps/s per H200 (benchmarks/results/logs/dmpc_*.log), an order of
magnitude below brax's own MJX hopper; MuJoCo's default solver budget (100 iterations, 50 line-search
iterations) is the suspect, since a vmapped while-loop runs until the slowest env converges.
Writes benchmarks/results/mjx_envs.json: rows of env, solver, steps_per_s, compile_s, and the max |qpos|
difference from the CPU simulator (default solver) after 1 and 25 control steps from the same reset.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from benchmarks import common
from core import metrics
from papers.dmpc import envs

SOLVERS = (None, (8, 8), (4, 8), (2, 4))      # None: the XML's default (100, 50)


def cpu_drift(name: str, env, steps: int) -> float:
    """Max |qpos| gap between the MJX env (its solver budget) and CPU MuJoCo (defaults) after `steps` steps."""
    state = jax.jit(env.reset)(jax.random.key(0))
    actions = 0.8 * jnp.sin(jnp.arange(steps)[:, None] * 0.3 + jnp.arange(env.action_size)[None])
    step = jax.jit(env.step)
    model = envs.load_mj_model(name, solver_iterations=None)
    data = mujoco.MjData(model)
    data.qpos[:] = np.asarray(state.pipeline_state.q, np.float64)
    data.qvel[:] = np.asarray(state.pipeline_state.qd, np.float64)
    for a in actions:
        state = step(state, a)
        data.ctrl[:] = np.asarray(a, np.float64)
        mujoco.mj_step(model, data, nstep=env.spec.frame_skip)
    return float(np.abs(data.qpos - np.asarray(state.pipeline_state.q)).max())


def steps_per_second(env, num_envs: int, steps: int) -> tuple[float, float]:
    @jax.jit
    def rollout(key):
        state = jax.vmap(env.reset)(jax.random.split(key, num_envs))
        def body(s, k):
            a = jax.random.uniform(k, (num_envs, env.action_size), minval=-1.0, maxval=1.0)
            return jax.vmap(env.step)(s, a), None
        state, _ = jax.lax.scan(body, state, jax.random.split(key, steps))
        return state.obs.sum()
    t0 = time.perf_counter()
    rollout(jax.random.key(0)).block_until_ready()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rollout(jax.random.key(1)).block_until_ready()
    return num_envs * steps / (time.perf_counter() - t0), compile_s


def main(argv=None):
    parser = common.arg_parser(__doc__)
    parser.add_argument("--envs", default=",".join(envs.ENV_NAMES))
    args = parser.parse_args(argv)
    names = ["hopper"] if args.smoke else args.envs.split(",")
    num_envs, steps = (8, 5) if args.smoke else (2048, 200)
    rows = []
    path = common.result_path(args, "mjx_envs")
    print(f"{'env':12s} {'solver':>8s} {'steps/s':>11s} {'compile s':>9s} {'drift 1':>9s} {'drift 25':>9s}")
    for name in names:
        for solver in (SOLVERS[:2] if args.smoke else SOLVERS):
            env = envs.make_env(name, solver_iterations=solver)
            rate, compile_s = steps_per_second(env, num_envs, steps)
            row = {"env": name, "solver": list(solver) if solver else "default (100, 50)", "steps_per_s": rate,
                   "compile_s": compile_s, "qpos_drift_1": cpu_drift(name, env, 1),
                   "qpos_drift_25": cpu_drift(name, env, 25), "num_envs": num_envs, "steps": steps}
            rows.append(row)
            print(f"{name:12s} {str(solver):>8s} {rate:11,.0f} {compile_s:9.1f} {row['qpos_drift_1']:9.2e} "
                  f"{row['qpos_drift_25']:9.2e}", flush=True)
            metrics.write_json(path, common.run_info("mjx_envs", args, rows=rows))   # a cut-short run keeps its rows
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
