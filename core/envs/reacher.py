"""Reacher: a planar two-link arm reaches a target joint configuration (the LeWM paper's DMC Reacher, in JAX).

World (metres, seen from above, y down on screen): the arm's root sits at the centre of a 0.6 x 0.6 m view
(dm_control's reacher arena), link 1 of 0.12 m from the root to the elbow, link 2 of 0.12 m from the elbow to
the fingertip; joint angles q = (shoulder, wrist) in radians, the shoulder unlimited (wrapped to [-pi, pi)) and
the wrist limited to +-160 degrees, as in dm_control's ``reacher.xml``.

Dynamics, by choice a per-joint first-order velocity lag rather than MuJoCo's rigid-body arm:
    v' = velocity_decay * v + (1 - velocity_decay) * max_speed * a,    q' = q + v'    (a in [-1, 1]^2)
so a constant action drives a joint at max_speed rad/step after a short lag, and releasing it stops the arm
within a few steps. dm_control's reacher instead integrates torques (gear 0.05) through the arm's inertia
with Coriolis coupling between the links and light joint damping, so its arm coasts and the links push on
each other; here the joints are decoupled and heavily damped (the arm's velocity is in the state and shows
only through the history frames, as in MuJoCo). The wrist stops dead at its limit (velocity zeroed).

Task (swm's ``qpos_match`` reacher task, the paper's protocol): the goal is a joint configuration, drawn as
dm_control draws its target - a ball at the goal configuration's fingertip; success when every joint is within
``success_tolerance`` = 0.05 rad of the goal's (shoulder error wrapped).

The expert tracks a desired joint velocity gain * error capped at ``expert_speed`` (below max_speed, so plans
at full speed cover a demo's 25 steps in about half of them) by inverting the lag dynamics for the action,
adds Gaussian action noise and repeats its previous action with a small probability, as TwoRoom's expert.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct

from core.envs import render
from core.envs.push_t import wrap_angle
from core.envs.two_room import random_distinct_colour

Array = jax.Array

ARM_BEIGE = (0.7, 0.5, 0.3)           # dm_control's "self" material
TARGET_RED = (0.6, 0.3, 0.3)          # dm_control's "target" material
FINGERTIP = (0.35, 0.25, 0.15)
FLOOR = (0.85, 0.88, 0.93)


@struct.dataclass
class ReacherState:
    joints: Array        # f32[2] (shoulder, wrist) radians; shoulder in [-pi, pi), wrist within its limit
    joint_vel: Array     # f32[2] radians per step
    goal_joints: Array   # f32[2] the task's target configuration (drawn as the target ball)
    arm_colour: Array    # f32[3] RGB in [0, 1]
    last_action: Array   # f32[2] the previously applied (clipped) action


def segment_sdf(x: Array, y: Array, a: Array, b: Array, radius: float) -> Array:
    """SDF of a capsule: the points within `radius` of the segment a-b."""
    ax, ay = x - a[0], y - a[1]
    bx, by = b[0] - a[0], b[1] - a[1]
    t = jnp.clip((ax * bx + ay * by) / (bx * bx + by * by + 1e-12), 0.0, 1.0)
    return jnp.sqrt((ax - t * bx) ** 2 + (ay - t * by) ** 2) - radius


@dataclasses.dataclass(frozen=True)
class Reacher:
    image_size: int = 224
    world_size: float = 0.6               # metres across the view (dm_control's arena)
    link_lengths: tuple[float, float] = (0.12, 0.12)
    link_radius: float = 0.01
    target_radius: float = 0.015          # swm's qpos_match target size
    wrist_limit: float = math.radians(160.0)
    max_speed: float = 0.2                # rad/step a joint settles at under |a| = 1
    velocity_decay: float = 0.5           # share of the joint velocity kept per step (0: kinematic arm)
    success_tolerance: float = 0.05       # rad, every joint (swm's qpos_match)
    render_goal: bool = True              # the target ball at the goal configuration's fingertip
    expert_speed: float = 0.1             # expert: cap on the desired joint speed, rad/step
    expert_gain: float = 0.5              # expert: desired joint velocity = gain * error (per step)
    action_noise: float = 0.2             # expert: Gaussian noise added to the action, then clipped
    action_repeat_prob: float = 0.05      # expert: repeat the previous action with this probability

    action_dim: int = 2

    # ---- kinematics ----------------------------------------------------------------------------------
    def _root(self) -> Array:
        return jnp.array([self.world_size / 2, self.world_size / 2], jnp.float32)

    def link_points(self, joints: Array) -> tuple[Array, Array, Array]:
        """Root, elbow and fingertip positions (world metres, the renderer's frame)."""
        root = self._root()
        l1, l2 = self.link_lengths
        elbow = root + l1 * jnp.stack([jnp.cos(joints[0]), jnp.sin(joints[0])])
        total = joints[0] + joints[1]
        tip = elbow + l2 * jnp.stack([jnp.cos(total), jnp.sin(total)])
        return root, elbow, tip

    def fingertip(self, state: ReacherState) -> Array:
        return self.link_points(state.joints)[2]

    def joint_errors(self, joints: Array, goal_joints: Array) -> Array:
        """goal - joints per joint: the shoulder's wrapped to [-pi, pi), the limited wrist's as is."""
        delta = goal_joints - joints
        return jnp.stack([wrap_angle(delta[0]), delta[1]])

    # ---- dynamics ------------------------------------------------------------------------------------
    def step(self, state: ReacherState, action: Array) -> ReacherState:
        action = jnp.clip(action.astype(jnp.float32), -1.0, 1.0)
        vel = self.velocity_decay * state.joint_vel + (1.0 - self.velocity_decay) * self.max_speed * action
        joints = state.joints + vel
        wrist = jnp.clip(joints[1], -self.wrist_limit, self.wrist_limit)
        vel = vel.at[1].set(jnp.where(wrist != joints[1], 0.0, vel[1]))
        joints = jnp.stack([wrap_angle(joints[0]), wrist])
        return state.replace(joints=joints, joint_vel=vel, last_action=action)

    # ---- sampling ------------------------------------------------------------------------------------
    def _random_joints(self, key: Array) -> Array:
        k_shoulder, k_wrist = jax.random.split(key)
        return jnp.stack([jax.random.uniform(k_shoulder, minval=-jnp.pi, maxval=jnp.pi),
                          jax.random.uniform(k_wrist, minval=-self.wrist_limit, maxval=self.wrist_limit)])

    def reset(self, key: Array) -> ReacherState:
        k_arm, k_goal = jax.random.split(key)
        return ReacherState(joints=self._random_joints(k_arm), joint_vel=jnp.zeros(2, jnp.float32),
                            goal_joints=self._random_joints(k_goal), arm_colour=jnp.asarray(ARM_BEIGE, jnp.float32),
                            last_action=jnp.zeros(2, jnp.float32))

    def resample_goal(self, state: ReacherState, key: Array) -> ReacherState:
        return state.replace(goal_joints=self._random_joints(key))

    # ---- observation ---------------------------------------------------------------------------------
    def render(self, state: ReacherState) -> Array:
        g = render.grid(self.image_size, self.world_size)
        x, y, pixel = g.x, g.y, g.pixel_size
        canvas = render.background(g, FLOOR)
        if self.render_goal:
            target = self.link_points(state.goal_joints)[2]
            canvas = render.blend(g, canvas, render.coverage(render.circle_sdf(x, y, target, self.target_radius),
                                                             pixel), TARGET_RED)
        root, elbow, tip = self.link_points(state.joints)
        arm = jnp.minimum(segment_sdf(x, y, root, elbow, self.link_radius),
                          segment_sdf(x, y, elbow, tip, self.link_radius))
        arm = jnp.minimum(arm, render.circle_sdf(x, y, root, 1.6 * self.link_radius))
        canvas = render.blend(g, canvas, render.coverage(arm, pixel), state.arm_colour)
        finger = render.circle_sdf(x, y, tip, 1.2 * self.link_radius)
        canvas = render.blend(g, canvas, render.coverage(finger, pixel), FINGERTIP)
        return render.to_uint8(g, canvas)

    def proprio(self, state: ReacherState) -> Array:
        """dm_control's reacher proprioception: joint positions and velocities."""
        return jnp.concatenate([state.joints, state.joint_vel])

    def state_vector(self, state: ReacherState) -> Array:
        """joints (2) + joint velocities (2)."""
        return jnp.concatenate([state.joints, state.joint_vel])

    def goal_vector(self, state: ReacherState) -> Array:
        return state.goal_joints

    def from_vectors(self, state_vector: Array, goal_vector: Array | None = None) -> ReacherState:
        """A state from ``state_vector`` and a goal configuration (the state's own joints when None)."""
        v = jnp.asarray(state_vector, jnp.float32)
        goal = v[:2] if goal_vector is None else jnp.asarray(goal_vector, jnp.float32)
        return ReacherState(joints=v[:2], joint_vel=v[2:4], goal_joints=goal,
                            arm_colour=jnp.asarray(ARM_BEIGE, jnp.float32), last_action=jnp.zeros(2, jnp.float32))

    def with_goal_vector(self, state: ReacherState, goal_vector: Array) -> ReacherState:
        """`state` (any leading axes) with its goal configuration, the drawn target, replaced."""
        return state.replace(goal_joints=jnp.broadcast_to(jnp.asarray(goal_vector, jnp.float32),
                                                          state.goal_joints.shape))

    def probe_targets(self, state: ReacherState) -> dict[str, Array]:
        return {"joints": state.joints, "fingertip": self.fingertip(state)}

    def goal_state(self, state: ReacherState) -> ReacherState:
        return state.replace(joints=state.goal_joints, joint_vel=jnp.zeros(2, jnp.float32))

    def goal_distance(self, state: ReacherState, goal_state: ReacherState) -> Array:
        """The distance the success test thresholds: the largest joint error, rad."""
        return jnp.max(jnp.abs(self.joint_errors(state.joints, goal_state.joints)))

    def is_success(self, state: ReacherState, goal_state: ReacherState) -> Array:
        return self.goal_distance(state, goal_state) < self.success_tolerance

    # ---- behaviour policy ----------------------------------------------------------------------------
    def expert_action(self, state: ReacherState, goal_state: ReacherState | None, key: Array) -> Array:
        """Track the desired joint velocity clip(gain * error, +-expert_speed): the action that gives it next step
        under the lag dynamics, plus N(0, action_noise); repeat the last action w.p. action_repeat_prob; clip."""
        goal = state.goal_joints if goal_state is None else goal_state.joints
        desired = jnp.clip(self.expert_gain * self.joint_errors(state.joints, goal),
                           -self.expert_speed, self.expert_speed)
        action = (desired - self.velocity_decay * state.joint_vel) / ((1.0 - self.velocity_decay) * self.max_speed)
        k_noise, k_repeat = jax.random.split(key)
        action = action + self.action_noise * jax.random.normal(k_noise, (2,))
        repeat = jax.random.uniform(k_repeat) < self.action_repeat_prob
        return jnp.clip(jnp.where(repeat, state.last_action, action), -1.0, 1.0)

    # ---- violation-of-expectation perturbations ------------------------------------------------------
    def perturb_colour(self, state: ReacherState, key: Array) -> ReacherState:
        """A new arm colour far from the old one; physics untouched."""
        return state.replace(arm_colour=random_distinct_colour(key, state.arm_colour))

    def teleport(self, state: ReacherState, key: Array) -> ReacherState:
        """The arm jumps to a random configuration at rest; colours and goal untouched."""
        return state.replace(joints=self._random_joints(key), joint_vel=jnp.zeros(2, jnp.float32))
