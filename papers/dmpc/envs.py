"""MJX locomotion: HalfCheetah, Hopper, Walker2d built from gymnasium 1.4's v5 XML assets, as brax envs.

Each env is a brax `PipelineEnv` on the `mjx` backend, so brax's PPO trains on it directly and
`jax.vmap(env.step)` runs thousands of episodes inside one `lax.scan`. Observations, rewards, reset noise and
termination follow gymnasium's v5 Python classes (not brax's own envs, whose obs and physics differ):

    halfcheetah  obs 17 = qpos[1:], qvel;               r = vx - 0.1 |a|²;          5 frames, never terminates
    hopper       obs 11 = qpos[1:], clip(qvel, ±10);    r = vx + 1·healthy - 1e-3 |a|²; 4 frames
    walker2d     obs 17 = qpos[1:], clip(qvel, ±10);    r = vx + 1·healthy - 1e-3 |a|²; 4 frames

The broken-ankle walker scales the gear of the right foot actuator (`foot_joint`) by `ankle_gear_scale`.
Novel rewards (`NOVEL_REWARDS`) are functions of (next observation, action) so a planner can score predicted
state sequences with them and the simulator can score the real ones with the same code.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct
import mujoco
from brax.envs.base import Env, PipelineEnv, State
from brax.io import mjcf

ENV_NAMES = ("halfcheetah", "hopper", "walker2d")

# MuJoCo's constraint solver budget (iterations, line-search iterations) for every MJX locomotion env, in place
# of the XML's default (100, 50). MJX runs the solver as a while-loop vmapped over envs, so every step pays for
# the slowest env; at (4, 8) MJX hopper stepped 4.1x faster on an H200 with the same drift from CPU MuJoCo at the
# default budget (benchmarks/results/mjx_envs.json). brax's own locomotion XMLs set iterations="4" too.
SOLVER_ITERATIONS = (4, 8)


@dataclasses.dataclass(frozen=True)
class LocomotionSpec:
    xml: str                       # file name under gymnasium/envs/mujoco/assets
    frame_skip: int
    ctrl_cost: float
    healthy_reward: float = 0.0
    terminates: bool = False
    healthy_z: tuple[float, float] = (-float("inf"), float("inf"))
    healthy_angle: tuple[float, float] = (-float("inf"), float("inf"))
    healthy_state: tuple[float, float] | None = None   # hopper: |qpos[2:], qvel| < 100
    reset_noise: float = 5e-3
    gaussian_qvel_noise: bool = False                 # halfcheetah: qvel noise is N(0, scale²)
    clip_qvel: float | None = 10.0


SPECS = {
    "halfcheetah": LocomotionSpec("half_cheetah.xml", frame_skip=5, ctrl_cost=0.1, reset_noise=0.1,
                                  gaussian_qvel_noise=True, clip_qvel=None),
    "hopper": LocomotionSpec("hopper.xml", frame_skip=4, ctrl_cost=1e-3, healthy_reward=1.0, terminates=True,
                             healthy_z=(0.7, float("inf")), healthy_angle=(-0.2, 0.2),
                             healthy_state=(-100.0, 100.0)),
    "walker2d": LocomotionSpec("walker2d_v5.xml", frame_skip=4, ctrl_cost=1e-3, healthy_reward=1.0,
                               terminates=True, healthy_z=(0.8, 2.0), healthy_angle=(-1.0, 1.0)),
}

# D4RL's reference returns (d4rl/infos.py; v2 datasets inherit the v0 values): (random, expert).
D4RL_REFERENCE = {"halfcheetah": (-280.178953, 12135.0), "hopper": (-20.272305, 3234.3),
                  "walker2d": (1.629008, 4592.3)}


def gymnasium_asset(file_name: str) -> str:
    try:
        import gymnasium
    except ImportError:
        raise ImportError("The MJX locomotion envs read gymnasium's XML assets; pip install gymnasium==1.4.0.") from None
    path = os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", file_name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing; install gymnasium==1.4.0 (its v5 MuJoCo assets).")
    return path


def load_mj_model(name: str, ankle_gear_scale: float = 1.0,
                  solver_iterations: tuple[int, int] | None = SOLVER_ITERATIONS) -> mujoco.MjModel:
    """The CPU MuJoCo model of an env (the MJX env and the CPU reference test share it). `solver_iterations`
    = (iterations, ls_iterations) sets the constraint solver budget; None keeps the XML's (MuJoCo's defaults
    100 / 50)."""
    if name not in SPECS:
        raise ValueError(f"Unknown locomotion env {name!r}; choose one of {ENV_NAMES}.")
    model = mujoco.MjModel.from_xml_path(gymnasium_asset(SPECS[name].xml))
    if solver_iterations is not None:
        model.opt.iterations, model.opt.ls_iterations = solver_iterations
    if ankle_gear_scale != 1.0:
        if name != "walker2d":
            raise ValueError("ankle_gear_scale (the broken ankle) exists only for walker2d.")
        actuator = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, "foot_joint")
        if actuator < 0:   # motors in the v5 XML are unnamed: find the one driving foot_joint
            joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "foot_joint")
            actuator = int(next(i for i in range(model.nu) if model.actuator_trnid[i, 0] == joint))
        model.actuator_gear[actuator, 0] *= ankle_gear_scale
    return model


def _fresh_state(pipeline_state, observe: Callable) -> State:
    """An episode's state at a physics state: no reward yet, not done, zero position / velocity metrics."""
    zero = jnp.zeros(())
    return State(pipeline_state, observe(pipeline_state), zero, zero, {"x_position": zero, "x_velocity": zero})


class Locomotion(PipelineEnv):
    """One of ENV_NAMES on MJX with gymnasium v5 semantics (see module docstring)."""

    def __init__(self, name: str, ankle_gear_scale: float = 1.0, backend: str = "mjx",
                 solver_iterations: tuple[int, int] | None = SOLVER_ITERATIONS):
        self.name = name
        self.spec = SPECS[name] if name in SPECS else None
        mj_model = load_mj_model(name, ankle_gear_scale, solver_iterations)
        self.ankle_gear_scale = ankle_gear_scale
        self.solver_iterations = solver_iterations
        super().__init__(sys=mjcf.load_model(mj_model), backend=backend, n_frames=SPECS[name].frame_skip)

    def reset(self, rng: jax.Array) -> State:
        spec = self.spec
        pos_key, vel_key = jax.random.split(rng)
        qpos = self.sys.init_q + jax.random.uniform(pos_key, (self.sys.q_size(),), minval=-spec.reset_noise,
                                                    maxval=spec.reset_noise)
        if spec.gaussian_qvel_noise:
            qvel = spec.reset_noise * jax.random.normal(vel_key, (self.sys.qd_size(),))
        else:
            qvel = jax.random.uniform(vel_key, (self.sys.qd_size(),), minval=-spec.reset_noise,
                                      maxval=spec.reset_noise)
        return _fresh_state(self.pipeline_init(qpos, qvel), self._obs)

    def step(self, state: State, action: jax.Array) -> State:
        spec = self.spec
        before = state.pipeline_state
        after = self.pipeline_step(before, action)
        x_velocity = (after.q[0] - before.q[0]) / self.dt
        healthy = self.is_healthy(after.q, after.qd)
        reward = (x_velocity + spec.healthy_reward * healthy.astype(jnp.float32)
                  - spec.ctrl_cost * jnp.sum(jnp.square(action)))
        done = (1.0 - healthy.astype(jnp.float32)) if spec.terminates else jnp.zeros(())
        metrics = {"x_position": after.q[0], "x_velocity": x_velocity}
        return state.replace(pipeline_state=after, obs=self._obs(after), reward=reward, done=done,
                             metrics={**state.metrics, **metrics})

    def state_from_obs(self, obs: jax.Array) -> State:
        """The simulator state an observation describes, with the x position (not observed; nothing depends on
        it) at 0. Hopper's and walker2d's observed qvel is clipped to ±10, so a state observed at the clip is
        approximate."""
        nq = self.sys.q_size()
        return _fresh_state(self.pipeline_init(jnp.concatenate([jnp.zeros(1), obs[: nq - 1]]), obs[nq - 1:]),
                            self._obs)

    def is_healthy(self, qpos: jax.Array, qvel: jax.Array) -> jax.Array:
        spec = self.spec
        z, angle = qpos[1], qpos[2]
        ok = (spec.healthy_z[0] < z) & (z < spec.healthy_z[1])
        ok &= (spec.healthy_angle[0] < angle) & (angle < spec.healthy_angle[1])
        if spec.healthy_state is not None:
            rest = jnp.concatenate([qpos[2:], qvel])
            ok &= jnp.all((spec.healthy_state[0] < rest) & (rest < spec.healthy_state[1]))
        return ok

    def _obs(self, pipeline_state) -> jax.Array:
        qvel = pipeline_state.qd
        if self.spec.clip_qvel is not None:
            qvel = jnp.clip(qvel, -self.spec.clip_qvel, self.spec.clip_qvel)
        return jnp.concatenate([pipeline_state.q[1:], qvel])

    def __repr__(self) -> str:
        return (f"Locomotion({self.name!r}, ankle_gear_scale={self.ankle_gear_scale}, "
                f"solver_iterations={self.solver_iterations})")


def make_env(name: str, ankle_gear_scale: float = 1.0,
             solver_iterations: tuple[int, int] | None = SOLVER_ITERATIONS) -> Locomotion:
    if name not in SPECS:
        raise ValueError(f"Unknown locomotion env {name!r}; choose one of {ENV_NAMES}.")
    return Locomotion(name, ankle_gear_scale, solver_iterations=solver_iterations)


# Novel rewards: functions of (next observation, action), so the planner scores predicted states with them and
# the simulator scores real ones with the same code. Observation indices of torso height, angle and forward
# velocity per env (obs = qpos[1:], qvel): walker2d z=0, angle=1, vx=8; toy y=0, vx=1.
OBS_INDEX = {"walker2d": {"z": 0, "angle": 1, "vx": 8}, "hopper": {"z": 0, "angle": 1, "vx": 5},
             "halfcheetah": {"z": 0, "angle": 1, "vx": 8}, "toy": {"z": 0, "vx": 1}}


def healthy(name: str, obs: jax.Array) -> jax.Array:
    """1.0 where the env would go on from observation `obs` (its termination rule on the torso), else 0.0."""
    if name == "toy":
        return (jnp.abs(obs[..., 0]) < 1.0).astype(jnp.float32)
    if name not in SPECS or not SPECS[name].terminates:
        return jnp.ones(obs.shape[:-1])
    spec, idx = SPECS[name], OBS_INDEX[name]
    z, angle = obs[..., idx["z"]], obs[..., idx["angle"]]
    return ((spec.healthy_z[0] < z) & (z < spec.healthy_z[1]) & (spec.healthy_angle[0] < angle)
            & (angle < spec.healthy_angle[1])).astype(jnp.float32)


STANDING_HEIGHT = {"walker2d": 1.25, "hopper": 1.25, "halfcheetah": 0.0, "toy": 0.0}


@functools.lru_cache(maxsize=None)   # the same function objects every call, so compiled programs are reused
def novel_rewards(name: str) -> dict[str, Callable[[jax.Array, jax.Array], jax.Array]]:
    """{"backward": -vx + alive bonus, "jump": 10 (z - standing height) + alive bonus}, each minus 1e-3 |a|²;
    the alive bonus is 1 while the predicted / real state is healthy (planning-time objectives, no retraining)."""
    idx = OBS_INDEX[name]
    ctrl = lambda action: 1e-3 * jnp.sum(jnp.square(action), -1)
    return {
        "backward": lambda obs, a: -obs[..., idx["vx"]] + healthy(name, obs) - ctrl(a),
        "jump": lambda obs, a: 10.0 * (obs[..., idx["z"]] - STANDING_HEIGHT[name]) + healthy(name, obs) - ctrl(a),
    }


# ------------------------------------------------------------------------------------------------ toy env


@struct.dataclass
class ToyPipelineState:
    q: jax.Array      # [x, y]
    qd: jax.Array     # [vx, vy]


class ToyRunner(Env):
    """A point mass that must run along x and keep |y| < 1 (else the episode ends): the locomotion envs' contract
    (obs = q[1:], qd; reward = vx + 1 - 0.1 |a|²; termination; a 'defect' scaling one actuator) at a compile
    cost CPU tests can afford. Used by smoke configs only; every number in the README comes from MJX."""

    name = "toy"

    def __init__(self, defect_scale: float = 1.0, dt: float = 0.05):
        self.ankle_gear_scale = defect_scale
        self.dt = dt

    def reset(self, rng: jax.Array) -> State:
        q = jnp.concatenate([jnp.zeros(1), jax.random.uniform(rng, (1,), minval=-0.1, maxval=0.1)])
        return _fresh_state(ToyPipelineState(q=q, qd=jnp.zeros(2)), self._obs)

    def step(self, state: State, action: jax.Array) -> State:
        action = jnp.clip(action, -1.0, 1.0)
        q, qd = state.pipeline_state.q, state.pipeline_state.qd
        gain = jnp.array([1.0, self.ankle_gear_scale])
        drift = jnp.array([0.0, 0.6 * q[1] + 0.3])         # unstable in y: the policy must balance
        qd = qd + self.dt * (4.0 * gain * action - 0.5 * qd + drift)
        q = q + self.dt * qd
        ps = ToyPipelineState(q=q, qd=qd)
        healthy = jnp.abs(q[1]) < 1.0
        reward = qd[0] + healthy.astype(jnp.float32) - 0.1 * jnp.sum(jnp.square(action))
        metrics = {"x_position": q[0], "x_velocity": qd[0]}
        return state.replace(pipeline_state=ps, obs=self._obs(ps), reward=reward,
                             done=1.0 - healthy.astype(jnp.float32), metrics={**state.metrics, **metrics})

    def state_from_obs(self, obs: jax.Array) -> State:
        return _fresh_state(ToyPipelineState(q=jnp.concatenate([jnp.zeros(1), obs[:1]]), qd=obs[1:]), self._obs)

    def _obs(self, ps: ToyPipelineState) -> jax.Array:
        return jnp.concatenate([ps.q[1:], ps.qd])

    @property
    def observation_size(self) -> int:
        return 3

    @property
    def action_size(self) -> int:
        return 2

    @property
    def backend(self) -> str:
        return "jax"

    def __repr__(self) -> str:
        return f"ToyRunner(defect_scale={self.ankle_gear_scale})"


def make(name: str, defect_scale: float = 1.0) -> Env:
    """The env registry of this paper: ENV_NAMES on MJX, plus "toy" for CPU smoke runs. `defect_scale` is the
    broken-ankle gear factor (walker2d) or the toy's second actuator gain."""
    if name == "toy":
        return ToyRunner(defect_scale)
    return make_env(name, defect_scale)
