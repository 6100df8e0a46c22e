"""One MJX env step against MuJoCo's CPU simulator from the same state and action (used by the tests and
recorded by the benchmark on the GPU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from papers.dmpc import envs


def _cpu_step(model, state, action, frame_skip: int):
    data = mujoco.MjData(model)
    data.qpos[:] = np.asarray(state.pipeline_state.q, np.float64)
    data.qvel[:] = np.asarray(state.pipeline_state.qd, np.float64)
    data.ctrl[:] = np.asarray(action, np.float64)
    mujoco.mj_step(model, data, nstep=frame_skip)
    return data


def mjx_vs_cpu_step(name: str, seed: int = 0, ankle_gear_scale: float = 1.0,
                    solver_iterations: tuple[int, int] | None = envs.SOLVER_ITERATIONS) -> dict:
    """Max |qpos|, |qvel| difference after one control step (frame_skip physics steps) from a reset state,
    against CPU MuJoCo on the same model (same solver budget: the MJX port's error), and the qpos difference
    against CPU MuJoCo at the XML's default budget (100, 50) (what the cheaper budget costs on top)."""
    env = envs.make_env(name, ankle_gear_scale, solver_iterations)
    state = jax.jit(env.reset)(jax.random.key(seed))
    action = jnp.linspace(-0.8, 0.8, env.action_size)
    after = jax.jit(env.step)(state, action)
    q, qd = np.asarray(after.pipeline_state.q), np.asarray(after.pipeline_state.qd)
    same = _cpu_step(envs.load_mj_model(name, ankle_gear_scale, solver_iterations), state, action, env.spec.frame_skip)
    default = _cpu_step(envs.load_mj_model(name, ankle_gear_scale, None), state, action, env.spec.frame_skip)
    return {"qpos": float(np.abs(same.qpos - q).max()), "qvel": float(np.abs(same.qvel - qd).max()),
            "qpos_vs_default_solver": float(np.abs(default.qpos - q).max()),
            "solver_iterations": list(solver_iterations) if solver_iterations else "xml default",
            "reward": float(after.reward), "done": float(after.done)}
