"""Push-T: a disc pushes a T-shaped block onto a goal pose (stable-worldmodel's ``swm/PushT-v1``, in JAX).

World (pymunk units, 512 x 512, y down): walls at 5 and 506 (radius 2), an agent disc of radius 15 and a
T block of scale 30 - a bar 120 x 30 (body-frame x in [-60, 60], y in [0, 30]) and a stem 30 x 90 (x in
[-15, 15], y in [30, 120]). As in pymunk, the block's pose (x, y, angle) is its *body origin* (the middle of
the bar's top edge) and it turns about its centre of gravity, the mean of the two part centroids, (0, 45),
with mass 1 and moment of inertia 10 s^2 / 3 = 3000 (pymunk's ``moment_for_poly`` of the bar, taken about the
origin, counted twice - the original code's quirk, kept).

Control as in swm: relative actions, target = agent + 100 * a (a in [-1, 1]^2), 10 PD substeps per step
(k_p = 100, k_v = 20, dt = 0.01) driving the agent's velocity.

Contact is quasi-static and frictionless, which is what swm's pymunk setting amounts to: ``space.damping =
0`` zeroes the block's velocity every substep and the shapes carry no friction (``body.friction`` is set on
the body, where pymunk ignores it). After each substep the agent's penetration d into the T is removed by an
impulse J along the contact normal at the contact point, J = d / (1/m + (r x n)^2 / I), which translates the
block by J n / m and turns it by J (r x n) / I about its centre of gravity (a few iterations per substep
absorb the linearisation). The block is then kept inside the walls by translation, and, where a wall stops
it, the agent is pushed back out of the block. The kinematic agent of pymunk passes through walls; here it
is kept inside them.

Success (swm ``eval_state``): ||(agent xy, block xy) - goal's (agent xy, block xy)|| < 20 (one 4-vector norm)
and the block-angle error, wrapped to [0, pi], < pi / 9.

The expert is a scripted pusher: for each of a fixed set of contact points on the T's outline it predicts the
block motion one unit push produces (translation along the inward normal and rotation from the lever arm),
picks the point whose motion best matches the remaining pose error, walks around the block to a point just
outside it and pushes; when the block is in place it walks the agent to the goal's agent position.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from core.envs import render
from core.envs.two_room import random_distinct_colour

Array = jax.Array

ROYAL_BLUE = render.rgb(65, 105, 225)
SLATE_GRAY = render.rgb(119, 136, 153)
LIGHT_GREEN = render.rgb(144, 238, 144)
LIGHT_GRAY = render.rgb(211, 211, 211)
WHITE = (1.0, 1.0, 1.0)


@struct.dataclass
class PushTState:
    agent_pos: Array         # f32[2]
    agent_vel: Array         # f32[2]
    block_pos: Array         # f32[2] body origin (middle of the bar's top edge)
    block_angle: Array       # f32[] radians, wrapped to [0, 2 pi)
    goal_agent_pos: Array    # f32[2]
    goal_block_pos: Array    # f32[2]
    goal_block_angle: Array  # f32[]
    block_colour: Array      # f32[3] RGB in [0, 1]
    last_action: Array       # f32[2]


def _rotate(v: Array, angle: Array) -> Array:
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], axis=-1)


def _cross(a: Array, b: Array) -> Array:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def wrap_angle(angle: Array) -> Array:
    """To [-pi, pi)."""
    return jnp.mod(angle + jnp.pi, 2 * jnp.pi) - jnp.pi


@dataclasses.dataclass(frozen=True)
class PushT:
    image_size: int = 224
    world_size: float = 512.0
    wall_low: float = 7.0             # inner faces of the wall segments (5 +- 2 and 506 -+ 2)
    wall_high: float = 504.0
    agent_radius: float = 15.0
    block_scale: float = 30.0
    action_scale: float = 100.0
    k_p: float = 100.0
    k_v: float = 20.0
    dt: float = 0.01
    substeps: int = 10
    contact_iterations: int = 3
    unroll_substeps: bool = False     # unrolled substeps fuse into fewer GPU kernels; slower to compile
    success_position: float = 20.0
    success_angle: float = math.pi / 9
    fixed_goal: bool = False          # True: the classic goal pose (256, 256, pi/4); else random goals
    render_goal: bool = True          # draw the goal pose of the block as a light-green T
    action_noise: float = 0.1         # expert: Gaussian noise on its action
    action_repeat_prob: float = 0.0   # expert: repeat the previous action with this probability
    expert_gain: float = 2.0          # expert: action = gain * (waypoint - agent) / action_scale
    push_depth: float = 30.0          # expert: how far past the contact point it aims while pushing
    expert_max_action: float = 1.0    # expert: |action| capped here (the agent's steady speed is 50 px/step x
    #                                   |action|); below 1 it moves like slower, human-like demonstrations

    action_dim: int = 2

    # ---- geometry ------------------------------------------------------------------------------------
    @property
    def _boxes(self) -> list[tuple[tuple[float, float], tuple[float, float]]]:
        s = self.block_scale
        return [((0.0, s / 2), (2 * s, s / 2)), ((0.0, 2.5 * s), (s / 2, 1.5 * s))]

    @property
    def _cog(self) -> np.ndarray:
        return np.array([0.0, 1.5 * self.block_scale], np.float32)

    @property
    def _inertia(self) -> float:
        return 10.0 * self.block_scale ** 2 / 3.0

    @property
    def _outline(self) -> np.ndarray:
        """The T's 8 outline vertices in the body frame, in order around it."""
        s = self.block_scale
        return np.array([(-2 * s, 0), (2 * s, 0), (2 * s, s), (s / 2, s), (s / 2, 4 * s), (-s / 2, 4 * s),
                         (-s / 2, s), (-2 * s, s)], np.float32)

    def _candidates(self, per_edge: int = 6) -> tuple[np.ndarray, np.ndarray]:
        """Contact points on every outline edge and their outward normals (body frame)."""
        verts = self._outline
        points, normals = [], []
        for i in range(len(verts)):
            a, b = verts[i], verts[(i + 1) % len(verts)]
            edge = b - a
            normal = np.array([edge[1], -edge[0]]) / np.linalg.norm(edge)  # outward for this winding
            for f in (np.arange(per_edge) + 0.5) / per_edge:
                points.append(a + f * edge)
                normals.append(normal)
        return np.array(points, np.float32), np.array(normals, np.float32)

    def block_sdf(self, point: Array, block_pos: Array, block_angle: Array) -> tuple[Array, Array]:
        """Signed distance from `point` to the T and the outward unit normal there (world frame)."""
        local = _rotate(point - block_pos, -block_angle)
        sdfs, normals = [], []
        for centre, half in self._boxes:
            d = local - jnp.asarray(centre)
            q = jnp.abs(d) - jnp.asarray(half)
            closest = jnp.asarray(centre) + jnp.clip(d, -jnp.asarray(half), jnp.asarray(half))
            diff = local - closest
            dist = jnp.linalg.norm(diff)
            outside = jnp.max(q) > 0
            axis_normal = jnp.where(q[0] >= q[1], jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])) * jnp.sign(d)
            normal = jnp.where(outside, diff / jnp.maximum(dist, 1e-6), axis_normal)
            sdfs.append(jnp.where(outside, dist, jnp.max(q)))
            normals.append(normal)
        sdfs, normals = jnp.stack(sdfs), jnp.stack(normals)
        i = jnp.argmin(sdfs)
        return sdfs[i], _rotate(normals[i], block_angle)

    def _block_cog(self, block_pos: Array, block_angle: Array) -> Array:
        return block_pos + _rotate(jnp.asarray(self._cog), block_angle)

    # ---- dynamics ------------------------------------------------------------------------------------
    def _push_block(self, agent: Array, block_pos: Array, block_angle: Array) -> tuple[Array, Array]:
        """Removes the agent's penetration into the block with one normal impulse at the contact point."""
        sdf, normal = self.block_sdf(agent, block_pos, block_angle)
        depth = jnp.maximum(self.agent_radius - sdf, 0.0)
        contact = agent - normal * sdf
        cog = self._block_cog(block_pos, block_angle)
        lever = contact - cog
        direction = -normal  # the agent pushes the block inward
        torque_arm = _cross(lever, direction)
        impulse = depth / (1.0 + torque_arm ** 2 / self._inertia)
        new_cog = cog + direction * impulse
        new_angle = block_angle + impulse * torque_arm / self._inertia
        new_pos = new_cog - _rotate(jnp.asarray(self._cog), new_angle)
        return new_pos, new_angle

    def _keep_block_inside(self, block_pos: Array, block_angle: Array) -> Array:
        verts = block_pos + _rotate(jnp.asarray(self._outline), block_angle)
        low = jnp.maximum(self.wall_low - jnp.min(verts, axis=0), 0.0)
        high = jnp.maximum(jnp.max(verts, axis=0) - self.wall_high, 0.0)
        return block_pos + low - high

    def _substep(self, carry, target):
        agent, vel, block_pos, block_angle = carry
        accel = self.k_p * (target - agent) - self.k_v * vel
        vel = vel + accel * self.dt
        agent = jnp.clip(agent + vel * self.dt, self.wall_low + self.agent_radius, self.wall_high - self.agent_radius)
        for _ in range(self.contact_iterations):
            block_pos, block_angle = self._push_block(agent, block_pos, block_angle)
        block_pos = self._keep_block_inside(block_pos, block_angle)
        sdf, normal = self.block_sdf(agent, block_pos, block_angle)  # a wall stopped the block: back off
        agent = agent + normal * jnp.maximum(self.agent_radius - sdf, 0.0)
        return (agent, vel, block_pos, block_angle), None

    def step(self, state: PushTState, action: Array) -> PushTState:
        action = jnp.clip(action.astype(jnp.float32), -1.0, 1.0)
        target = state.agent_pos + action * self.action_scale
        carry = (state.agent_pos, state.agent_vel, state.block_pos, state.block_angle)
        (agent, vel, block_pos, block_angle), _ = jax.lax.scan(
            lambda c, _: self._substep(c, target), carry, None, length=self.substeps,
            unroll=self.unroll_substeps)
        return state.replace(agent_pos=agent, agent_vel=vel, block_pos=block_pos,
                             block_angle=jnp.mod(block_angle, 2 * jnp.pi), last_action=action)

    # ---- sampling ------------------------------------------------------------------------------------
    def _random_block_pose(self, key: Array) -> tuple[Array, Array]:
        """Origin uniform in [100, 400]^2 (swm), angle uniform; the T is then shifted inside the walls (a stem
        can reach 121 px from the origin, which pymunk's walls would push back)."""
        k_pos, k_angle = jax.random.split(key)
        pos = jax.random.uniform(k_pos, (2,), minval=100.0, maxval=400.0)
        angle = jax.random.uniform(k_angle, (), minval=0.0, maxval=2 * jnp.pi)
        return self._keep_block_inside(pos, angle), angle

    def _random_agent_clear_of(self, key: Array, block_pos: Array, block_angle: Array, num: int = 16) -> Array:
        """A uniform agent position in [50, 450]^2 not touching the block (the clearest of `num` tries)."""
        candidates = jax.random.uniform(key, (num, 2), minval=50.0, maxval=450.0)
        sdfs = jax.vmap(lambda p: self.block_sdf(p, block_pos, block_angle)[0])(candidates)
        clear = sdfs > self.agent_radius + 5.0
        return candidates[jnp.where(jnp.any(clear), jnp.argmax(clear), jnp.argmax(sdfs))]

    def _random_goal(self, key: Array) -> tuple[Array, Array, Array]:
        k_block, k_agent = jax.random.split(key)
        if self.fixed_goal:
            pos, angle = jnp.array([256.0, 256.0]), jnp.array(math.pi / 4)
        else:
            pos, angle = self._random_block_pose(k_block)
        return self._random_agent_clear_of(k_agent, pos, angle), pos, angle

    def reset(self, key: Array) -> PushTState:
        k_block, k_agent, k_goal = jax.random.split(key, 3)
        block_pos, block_angle = self._random_block_pose(k_block)
        goal_agent, goal_pos, goal_angle = self._random_goal(k_goal)
        return PushTState(
            agent_pos=self._random_agent_clear_of(k_agent, block_pos, block_angle),
            agent_vel=jnp.zeros(2, jnp.float32), block_pos=block_pos, block_angle=block_angle,
            goal_agent_pos=goal_agent, goal_block_pos=goal_pos, goal_block_angle=goal_angle,
            block_colour=jnp.asarray(SLATE_GRAY, jnp.float32), last_action=jnp.zeros(2, jnp.float32))

    def resample_goal(self, state: PushTState, key: Array) -> PushTState:
        agent, pos, angle = self._random_goal(key)
        return state.replace(goal_agent_pos=agent, goal_block_pos=pos, goal_block_angle=angle)

    # ---- observation ---------------------------------------------------------------------------------
    def render(self, state: PushTState) -> Array:
        g = render.grid(self.image_size, self.world_size)
        x, y, pixel = g.x, g.y, g.pixel_size
        inner = (self.wall_high - self.wall_low) / 2
        mid = (self.wall_high + self.wall_low) / 2
        # Wall segments as the ring between the outer (inner + 4) and inner boxes.
        walls = jnp.maximum(render.axis_box_sdf(x, y, (mid, mid), (inner + 4.0, inner + 4.0)),
                            -render.axis_box_sdf(x, y, (mid, mid), (inner, inner)))
        canvas = render.blend(g, render.background(g, WHITE), render.coverage(walls, pixel), LIGHT_GRAY)
        if self.render_goal:
            goal = render.boxes_sdf(x, y, state.goal_block_pos, state.goal_block_angle, self._boxes)
            canvas = render.blend(g, canvas, render.coverage(goal, pixel), LIGHT_GREEN)
        block = render.boxes_sdf(x, y, state.block_pos, state.block_angle, self._boxes)
        canvas = render.blend(g, canvas, render.coverage(block, pixel), state.block_colour)
        agent = render.circle_sdf(x, y, state.agent_pos, self.agent_radius)
        canvas = render.blend(g, canvas, render.coverage(agent, pixel), ROYAL_BLUE)
        return render.to_uint8(g, canvas)

    def proprio(self, state: PushTState) -> Array:
        """swm's proprio: agent position and velocity."""
        return jnp.concatenate([state.agent_pos, state.agent_vel])

    def state_vector(self, state: PushTState) -> Array:
        """swm's 7-D state: agent xy, block xy, block angle in [0, 2 pi), agent velocity."""
        return jnp.concatenate([state.agent_pos, state.block_pos, state.block_angle[None], state.agent_vel])

    def goal_vector(self, state: PushTState) -> Array:
        """The task goal: agent xy, block xy, block angle."""
        return jnp.concatenate([state.goal_agent_pos, state.goal_block_pos, state.goal_block_angle[None]])

    def from_vectors(self, state_vector: Array, goal_vector: Array | None = None) -> PushTState:
        """A state from swm's 7-D vector and a 5-D goal (the state itself when None); default colour."""
        v = jnp.asarray(state_vector, jnp.float32)
        g = v[:5] if goal_vector is None else jnp.asarray(goal_vector, jnp.float32)
        return PushTState(agent_pos=v[:2], agent_vel=v[5:7], block_pos=v[2:4], block_angle=v[4],
                          goal_agent_pos=g[:2], goal_block_pos=g[2:4], goal_block_angle=g[4],
                          block_colour=jnp.asarray(SLATE_GRAY, jnp.float32), last_action=jnp.zeros(2, jnp.float32))

    def with_goal_vector(self, state: PushTState, goal_vector: Array) -> PushTState:
        """`state` (any leading axes) with its task goal, the drawn goal ghost, replaced by `goal_vector`[5]."""
        g = jnp.asarray(goal_vector, jnp.float32)
        return state.replace(goal_agent_pos=jnp.broadcast_to(g[:2], state.goal_agent_pos.shape),
                             goal_block_pos=jnp.broadcast_to(g[2:4], state.goal_block_pos.shape),
                             goal_block_angle=jnp.broadcast_to(g[4], state.goal_block_angle.shape))

    def probe_targets(self, state: PushTState) -> dict[str, Array]:
        return {"agent_pos": state.agent_pos, "block_pos": state.block_pos, "block_angle": state.block_angle}

    def goal_state(self, state: PushTState) -> PushTState:
        return state.replace(agent_pos=state.goal_agent_pos, agent_vel=jnp.zeros(2, jnp.float32),
                             block_pos=state.goal_block_pos, block_angle=state.goal_block_angle)

    def goal_distance(self, state: PushTState, goal_state: PushTState) -> Array:
        """The distance the success test thresholds: ||(agent xy, block xy) - goal's||, px (angle aside)."""
        delta = jnp.concatenate([state.agent_pos - goal_state.agent_pos, state.block_pos - goal_state.block_pos])
        return jnp.linalg.norm(delta)

    def is_success(self, state: PushTState, goal_state: PushTState) -> Array:
        angle_error = jnp.abs(wrap_angle(state.block_angle - goal_state.block_angle))
        return (self.goal_distance(state, goal_state) < self.success_position) & (angle_error < self.success_angle)

    def block_errors(self, state: PushTState, goal_state: PushTState) -> tuple[Array, Array]:
        """Block position error (px) and absolute angle error (rad): the block part of the success test."""
        return (jnp.linalg.norm(state.block_pos - goal_state.block_pos),
                jnp.abs(wrap_angle(state.block_angle - goal_state.block_angle)))

    # ---- behaviour policy ----------------------------------------------------------------------------
    def expert_action(self, state: PushTState, goal_state: PushTState | None, key: Array) -> Array:
        goal = self.goal_state(state) if goal_state is None else goal_state
        agent, pos, angle = state.agent_pos, state.block_pos, state.block_angle
        cog = self._block_cog(pos, angle)
        goal_cog = self._block_cog(goal.block_pos, goal.block_angle)
        gyration = math.sqrt(self._inertia)
        angle_error = wrap_angle(goal.block_angle - angle)
        desired = jnp.concatenate([goal_cog - cog, (gyration * angle_error)[None]])

        # Motion of the block per unit inward push at each candidate contact.
        local_points, local_normals = self._candidates()
        points = pos + _rotate(jnp.asarray(local_points), angle)
        normals = _rotate(jnp.asarray(local_normals), angle)
        arm = _cross(points - cog, -normals)
        effect = jnp.concatenate([-normals, (gyration * arm / self._inertia)[:, None]], axis=-1)
        score = effect @ desired / (jnp.linalg.norm(effect, axis=-1) * jnp.linalg.norm(desired) + 1e-6)
        gap = 4.0
        approach = points + normals * (self.agent_radius + gap)
        approach_sdf = jax.vmap(lambda p: self.block_sdf(p, pos, angle)[0])(approach)
        inside = jnp.all((approach > self.wall_low + self.agent_radius) &
                         (approach < self.wall_high - self.agent_radius), axis=-1)
        feasible = (approach_sdf > self.agent_radius) & inside
        best = jnp.argmax(jnp.where(feasible, score, -jnp.inf))
        contact, normal, pre = points[best], normals[best], approach[best]

        # Pushing when lined up behind the chosen contact, else walking to the approach point around the block.
        rel = agent - contact
        along = rel @ normal
        lateral = jnp.linalg.norm(rel - along * normal)
        lined_up = (lateral < 6.0) & (along > self.agent_radius - 4.0) & (along < self.agent_radius + gap + 8.0)
        push_target = contact - normal * self.push_depth
        walk_target = self._path_point(agent, pre, pos, angle, cog)
        block_target = jnp.where(lined_up, push_target, walk_target)

        block_done = (jnp.linalg.norm(goal.block_pos - pos) < 8.0) & (jnp.abs(angle_error) < 0.08)
        park_target = self._path_point(agent, goal.agent_pos, pos, angle, cog)
        target = jnp.where(block_done, park_target, block_target)

        k_noise, k_repeat = jax.random.split(key)
        action = self.expert_gain * (target - agent) / self.action_scale
        action = action * jnp.minimum(1.0, self.expert_max_action / (jnp.linalg.norm(action) + 1e-6))
        action = action + self.action_noise * jax.random.normal(k_noise, (2,))
        repeat = jax.random.uniform(k_repeat) < self.action_repeat_prob
        return jnp.clip(jnp.where(repeat, state.last_action, action), -1.0, 1.0)

    def biased_random_action(self, state: PushTState, key: Array, bias: float = 0.5) -> Array:
        """LeWM's violation-of-expectation behaviour in Push-T: "random, biased toward the block" - a uniform
        action mixed with the unit direction to the block's centre of gravity (weight `bias`)."""
        towards = self._block_cog(state.block_pos, state.block_angle) - state.agent_pos
        towards = towards / jnp.maximum(jnp.linalg.norm(towards), 1e-6)
        noise = jax.random.uniform(key, (2,), minval=-1.0, maxval=1.0)
        return jnp.clip(bias * towards + (1.0 - bias) * noise, -1.0, 1.0)

    def _path_point(self, agent: Array, goal: Array, block_pos: Array, block_angle: Array, cog: Array) -> Array:
        """`goal` if the straight walk there clears the block, else a point 40 degrees further round a circle
        about the block's centre of gravity that clears it, turning the shorter way towards `goal`."""
        ts = jnp.linspace(0.0, 1.0, 12)[:-1]
        path = agent[None] + ts[:, None] * (goal - agent)[None]
        sdf = jax.vmap(lambda p: self.block_sdf(p, block_pos, block_angle)[0])(path)
        blocked = jnp.any(sdf < self.agent_radius + 1.0)
        clear_radius = 4.1 * self.block_scale + self.agent_radius  # farthest T point from the cog + margin
        here, there = agent - cog, goal - cog
        turn = jnp.sign(_cross(here, there))
        turn = jnp.where(turn == 0, 1.0, turn)
        orbit = _rotate(here / jnp.maximum(jnp.linalg.norm(here), 1e-6), turn * jnp.deg2rad(40.0)) * clear_radius
        orbit_point = jnp.clip(cog + orbit, self.wall_low + self.agent_radius, self.wall_high - self.agent_radius)
        return jnp.where(blocked, orbit_point, goal)

    # ---- violation-of-expectation perturbations ------------------------------------------------------
    def perturb_colour(self, state: PushTState, key: Array) -> PushTState:
        """A new block colour far from the old one; physics untouched."""
        return state.replace(block_colour=random_distinct_colour(key, state.block_colour))

    def teleport(self, state: PushTState, key: Array) -> PushTState:
        """Agent and block jump to a random valid pose (agent clear of the block), velocity zeroed."""
        k_block, k_agent = jax.random.split(key)
        pos, angle = self._random_block_pose(k_block)
        return state.replace(agent_pos=self._random_agent_clear_of(k_agent, pos, angle),
                             agent_vel=jnp.zeros(2, jnp.float32), block_pos=pos, block_angle=angle)
