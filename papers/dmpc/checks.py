"""One MJX env step against MuJoCo's CPU simulator from the same state and action (used by the tests and
recorded by the benchmark on the GPU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from papers.dmpc import envs


def mjx_vs_cpu_step(name: str, seed: int = 0, ankle_gear_scale: float = 1.0) -> dict:
    """Max |qpos|, |qvel| difference after one control step (frame_skip physics steps) from a reset state."""
    env = envs.make_env(name, ankle_gear_scale)
    state = jax.jit(env.reset)(jax.random.key(seed))
    action = jnp.linspace(-0.8, 0.8, env.action_size)
    after = jax.jit(env.step)(state, action)
    model = envs.load_mj_model(name, ankle_gear_scale)
    data = mujoco.MjData(model)
    data.qpos[:] = np.asarray(state.pipeline_state.q, np.float64)
    data.qvel[:] = np.asarray(state.pipeline_state.qd, np.float64)
    data.ctrl[:] = np.asarray(action, np.float64)
    mujoco.mj_step(model, data, nstep=env.spec.frame_skip)
    return {"qpos": float(np.abs(data.qpos - np.asarray(after.pipeline_state.q)).max()),
            "qvel": float(np.abs(data.qvel - np.asarray(after.pipeline_state.qd)).max()),
            "reward": float(after.reward), "done": float(after.done)}
