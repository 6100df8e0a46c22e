"""TwoRoom: a dot navigates between two rooms through a door, as in stable-worldmodel's ``swm/TwoRoom-v1``.

Geometry follows swm's torch renderer (a 3.5x scale-up of PLDM's 64-px world): a 224 x 224 image, a border
line 4 px thick ending 14 px from the edge, a vertical central wall at x = 112 covering x in [107, 117], one
door (half-size 14) centred at y = 49, and a red Gaussian dot (sigma 7) as the agent. Pixel centres sit on
integer coordinates. Collisions follow swm: the agent's centre is clamped to [21, 203] by the border (border
+ radius) and, when it tries to enter the wall band [100, 124] outside the door span (door +- 1.75 px,
tested at the new y), it is put back at 0.5 px before the band on the side it came from.

Differences from swm, by choice: speed defaults to 5 px/step (the research notes' value; swm's newest
torch env uses 7, settable here); the expert's action repeat actually repeats the previous action (swm's
``ExpertPolicy`` never stores it); the agent's colour lives in the state so a colour perturbation renders;
the dot is exp(-d^2 / 2 sigma^2) itself (swm divides by its maximum over the pixel grid, a <= 0.5% change)
and layers are blended in float and rounded once (swm truncates to uint8 after each layer).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from core.envs import render

Array = jax.Array

RED = render.rgb(255, 0, 0)
GREEN = render.rgb(0, 255, 0)
WHITE = (1.0, 1.0, 1.0)
BLACK = (0.0, 0.0, 0.0)


@struct.dataclass
class TwoRoomState:
    agent_pos: Array      # f32[2] (x, y) pixels
    goal_pos: Array       # f32[2] the task's target position
    agent_colour: Array   # f32[3] RGB in [0, 1]
    last_action: Array    # f32[2] the previously applied (clipped) action


@dataclasses.dataclass(frozen=True)
class TwoRoom:
    image_size: int = 224
    border: int = 14
    border_thickness: int = 4
    wall_centre: float = 112.0
    wall_thickness: int = 10
    door_centres: tuple[float, ...] = (49.0,)
    door_half_size: float = 14.0
    door_margin: float = 1.75
    agent_radius: float = 7.0           # also the Gaussian sigma
    speed: float = 5.0                  # px per step at |action| = 1
    success_distance: float = 16.0      # swm terminates at 4.5 * 3.5 = 15.75 px
    min_goal_steps: int = 25            # goal path length (via the door) >= min_goal_steps * speed
    render_goal: bool = False
    action_noise: float = 2.0           # expert: Gaussian noise on the unit direction, then clipped
    action_repeat_prob: float = 0.05    # expert: repeat the previous action with this probability
    door_reach_tol: float = 10.5        # expert: switch from the door to the target within this distance

    action_dim: int = 2

    # ---- geometry ------------------------------------------------------------------------------------
    @property
    def _wall_half(self) -> int:
        return self.wall_thickness // 2

    @property
    def _band(self) -> tuple[float, float]:
        """Agent-centre band the central wall forbids (outside doors)."""
        return (self.wall_centre - self._wall_half - self.agent_radius,
                self.wall_centre + self._wall_half + self.agent_radius)

    @property
    def _position_range(self) -> tuple[float, float]:
        """Range of random start / goal coordinates (swm: border - 1 + 2 sigma from the edges)."""
        pad = self.border - 1 + 2 * self.agent_radius
        return float(pad), float(self.image_size - 1 - pad)

    def _in_door(self, y: Array) -> Array:
        half = self.door_half_size + self.door_margin
        return jnp.any(jnp.stack([jnp.abs(y - c) <= half for c in self.door_centres]), axis=0)

    # ---- dynamics ------------------------------------------------------------------------------------
    def _collide(self, old: Array, new: Array) -> Array:
        low = self.border + self.agent_radius
        high = self.image_size - self.border - self.agent_radius
        new = jnp.clip(new, low, high)
        band_lo, band_hi = self._band
        started_left = old[0] < self.wall_centre
        blocked = ~self._in_door(new[1])
        x = jnp.where(started_left & (new[0] > band_lo) & blocked, band_lo - 0.5, new[0])
        x = jnp.where(~started_left & (new[0] < band_hi) & blocked, band_hi + 0.5, x)
        return jnp.stack([x, new[1]])

    def step(self, state: TwoRoomState, action: Array) -> TwoRoomState:
        action = jnp.clip(action.astype(jnp.float32), -1.0, 1.0)
        new_pos = self._collide(state.agent_pos, state.agent_pos + action * self.speed)
        return state.replace(agent_pos=new_pos, last_action=action)

    # ---- sampling ------------------------------------------------------------------------------------
    def _sample_position(self, key: Array, side: Array) -> Array:
        """Uniform position in the left (side=0) or right (side=1) room, clear of the wall band."""
        lo, hi = self._position_range
        band_lo, band_hi = self._band
        kx, ky = jax.random.split(key)
        u = jax.random.uniform(kx)
        x = jnp.where(side == 0, lo + u * (band_lo - lo), band_hi + u * (hi - band_hi))
        y = jax.random.uniform(ky, minval=lo, maxval=hi)
        return jnp.stack([x, y])

    def _path_length(self, start: Array, goal: Array) -> Array:
        """Length of start -> nearest door -> goal (swm's min-steps measure)."""
        lengths = [jnp.linalg.norm(start - jnp.array([self.wall_centre, c])) +
                   jnp.linalg.norm(goal - jnp.array([self.wall_centre, c])) for c in self.door_centres]
        return jnp.min(jnp.stack(lengths))

    def _sample_goal(self, key: Array, agent_pos: Array, num_candidates: int = 32) -> Array:
        """A goal in the other room at least min_goal_steps away (longest candidate if none qualifies)."""
        other_side = (agent_pos[0] < self.wall_centre).astype(jnp.int32)
        candidates = jax.vmap(lambda k: self._sample_position(k, other_side))(
            jax.random.split(key, num_candidates))
        lengths = jax.vmap(lambda g: self._path_length(agent_pos, g))(candidates)
        ok = lengths >= self.min_goal_steps * self.speed
        index = jnp.where(jnp.any(ok), jnp.argmax(ok), jnp.argmax(lengths))
        return candidates[index]

    def _random_agent_pos(self, key: Array) -> Array:
        k_side, k_pos = jax.random.split(key)
        return self._sample_position(k_pos, jax.random.bernoulli(k_side).astype(jnp.int32))

    def reset(self, key: Array) -> TwoRoomState:
        k_agent, k_goal = jax.random.split(key)
        agent = self._random_agent_pos(k_agent)
        return TwoRoomState(agent_pos=agent, goal_pos=self._sample_goal(k_goal, agent),
                            agent_colour=jnp.asarray(RED, jnp.float32), last_action=jnp.zeros(2, jnp.float32))

    def resample_goal(self, state: TwoRoomState, key: Array) -> TwoRoomState:
        """A fresh task goal for the current agent position (the agent keeps going after a success)."""
        return state.replace(goal_pos=self._sample_goal(key, state.agent_pos))

    # ---- observation ---------------------------------------------------------------------------------
    def render(self, state: TwoRoomState) -> Array:
        size = self.image_size
        g = render.grid(size, float(size), centre_offset=0.0)
        x, y = g.x, g.y
        # Walls: the central stripe minus the door spans, plus four border lines (pixel-aligned boxes).
        half = self._wall_half
        wall = render.axis_box_sdf(x, y, (self.wall_centre, size / 2), (half + 0.5, size))
        for c in self.door_centres:
            door = render.axis_box_sdf(x, y, (self.wall_centre, c), (half + 1.0, self.door_half_size + 0.5))
            wall = jnp.maximum(wall, -door)
        lo_edge, hi_edge = self.border - self.border_thickness - 0.5, self.border - 0.5
        far_lo, far_hi = size - self.border - 0.5, size - self.border + self.border_thickness - 0.5
        for a, b in ((lo_edge, hi_edge), (far_lo, far_hi)):
            mid, half_w = (a + b) / 2, (b - a) / 2
            wall = jnp.minimum(wall, render.axis_box_sdf(x, y, (mid, size / 2), (half_w, size)))
            wall = jnp.minimum(wall, render.axis_box_sdf(x, y, (size / 2, mid), (size, half_w)))
        canvas = render.blend(g, render.background(g, WHITE), render.coverage(wall, 1.0), BLACK)
        if self.render_goal:
            canvas = render.blend(g, canvas, render.gaussian_dot(x, y, state.goal_pos, self.agent_radius), GREEN)
        canvas = render.blend(g, canvas, render.gaussian_dot(x, y, state.agent_pos, self.agent_radius),
                              state.agent_colour)
        return render.to_uint8(g, canvas)

    def proprio(self, state: TwoRoomState) -> Array:
        return state.agent_pos

    def state_vector(self, state: TwoRoomState) -> Array:
        """agent (2) + goal (2): swm's observation without the door list."""
        return jnp.concatenate([state.agent_pos, state.goal_pos])

    def goal_vector(self, state: TwoRoomState) -> Array:
        return state.goal_pos

    def from_vectors(self, state_vector: Array, goal_vector: Array | None = None) -> TwoRoomState:
        """A state from ``state_vector`` (and optionally ``goal_vector``), default colour, no last action."""
        goal = state_vector[2:4] if goal_vector is None else goal_vector
        return TwoRoomState(agent_pos=jnp.asarray(state_vector[:2], jnp.float32),
                            goal_pos=jnp.asarray(goal, jnp.float32),
                            agent_colour=jnp.asarray(RED, jnp.float32), last_action=jnp.zeros(2, jnp.float32))

    def with_goal_vector(self, state: TwoRoomState, goal_vector: Array) -> TwoRoomState:
        """`state` (any leading axes) with its task goal replaced by `goal_vector`[2]."""
        return state.replace(goal_pos=jnp.broadcast_to(jnp.asarray(goal_vector, jnp.float32), state.goal_pos.shape))

    def probe_targets(self, state: TwoRoomState) -> dict[str, Array]:
        return {"agent_pos": state.agent_pos}

    def goal_state(self, state: TwoRoomState) -> TwoRoomState:
        return state.replace(agent_pos=state.goal_pos)

    def goal_distance(self, state: TwoRoomState, goal_state: TwoRoomState) -> Array:
        """The distance the success test thresholds: agent to goal agent, px."""
        return jnp.linalg.norm(state.agent_pos - goal_state.agent_pos)

    def is_success(self, state: TwoRoomState, goal_state: TwoRoomState) -> Array:
        return self.goal_distance(state, goal_state) < self.success_distance

    # ---- behaviour policy ----------------------------------------------------------------------------
    def expert_action(self, state: TwoRoomState, goal_state: TwoRoomState | None, key: Array) -> Array:
        """swm's expert: head for the nearest door centre until within door_reach_tol, then the target;
        add N(0, action_noise) to the unit direction, repeat the last action w.p. action_repeat_prob, clip."""
        target = state.goal_pos if goal_state is None else goal_state.agent_pos
        pos = state.agent_pos
        other_room = (pos[0] > self.wall_centre) != (target[0] > self.wall_centre)
        doors = jnp.array([[self.wall_centre, c] for c in self.door_centres], jnp.float32)
        door = doors[jnp.argmin(jnp.linalg.norm(doors - pos, axis=-1))]
        via_door = other_room & (jnp.linalg.norm(door - pos) > self.door_reach_tol)
        waypoint = jnp.where(via_door, door, target)
        direction = waypoint - pos
        norm = jnp.linalg.norm(direction)
        direction = jnp.where(norm > 1e-8, direction / jnp.maximum(norm, 1e-8), 0.0)
        k_noise, k_repeat = jax.random.split(key)
        action = direction + self.action_noise * jax.random.normal(k_noise, (2,))
        repeat = jax.random.uniform(k_repeat) < self.action_repeat_prob
        action = jnp.where(repeat, state.last_action, action)
        return jnp.clip(action, -1.0, 1.0)

    # ---- violation-of-expectation perturbations ------------------------------------------------------
    def perturb_colour(self, state: TwoRoomState, key: Array) -> TwoRoomState:
        """A new agent colour: a random hue at full saturation, at least 0.25 away from the old colour."""
        return state.replace(agent_colour=random_distinct_colour(key, state.agent_colour))

    def teleport(self, state: TwoRoomState, key: Array) -> TwoRoomState:
        """The agent jumps to a uniformly random valid position (either room)."""
        return state.replace(agent_pos=self._random_agent_pos(key))


def random_distinct_colour(key: Array, old: Array, num_candidates: int = 8) -> Array:
    """A saturated random colour (random hue) far from `old` (the farthest of a few candidates)."""
    hues = jax.random.uniform(key, (num_candidates,))
    # HSV -> RGB at S = V = 1: each channel is a clipped triangle wave of the hue.
    offsets = jnp.array([0.0, 2.0 / 3.0, 1.0 / 3.0])
    phase = jnp.mod(hues[:, None] + offsets[None, :], 1.0)
    colours = jnp.clip(jnp.abs(phase * 6.0 - 3.0) - 1.0, 0.0, 1.0)
    distances = jnp.linalg.norm(colours - old, axis=-1)
    return colours[jnp.argmax(distances)]
