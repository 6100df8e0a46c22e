"""Push-T: shapes, vmap, contact physics (pushing, turning, no overlap, walls), success test, expert, pixels."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core.envs import rollout as rollout_lib
from core.envs.push_t import PushT, PushTState

ENV = PushT()
render = jax.jit(ENV.render)
step = jax.jit(ENV.step)
sdf = jax.jit(lambda s: ENV.block_sdf(s.agent_pos, s.block_pos, s.block_angle)[0])


def _state(agent, block=(256.0, 200.0), angle=0.0, goal_agent=(100.0, 100.0), goal_block=(256.0, 256.0),
           goal_angle=math.pi / 4):
    f = lambda v: jnp.asarray(v, jnp.float32)
    return PushTState(agent_pos=f(agent), agent_vel=jnp.zeros(2), block_pos=f(block), block_angle=f(angle),
                      goal_agent_pos=f(goal_agent), goal_block_pos=f(goal_block), goal_block_angle=f(goal_angle),
                      block_colour=f([0.5, 0.5, 0.6]), last_action=jnp.zeros(2))


def _push(state, action, steps):
    for _ in range(steps):
        state = step(state, jnp.asarray(action, jnp.float32))
    return state


def test_shapes_dtypes_and_vmap():
    states = jax.jit(jax.vmap(ENV.reset))(jax.random.split(jax.random.key(0), 4))
    assert states.block_angle.shape == (4,) and states.agent_pos.dtype == jnp.float32
    actions = jax.random.uniform(jax.random.key(1), (4, 2), minval=-1, maxval=1)
    stepped = jax.jit(jax.vmap(ENV.step))(states, actions)
    frames = jax.jit(jax.vmap(ENV.render))(stepped)
    assert frames.shape == (4, 224, 224, 3) and frames.dtype == jnp.uint8
    one = step(jax.tree.map(lambda a: a[1], states), actions[1])
    np.testing.assert_allclose(stepped.block_pos[1], one.block_pos, rtol=1e-5)
    np.testing.assert_array_equal(frames[1], render(one))
    assert np.all(jax.vmap(lambda s: ENV.block_sdf(s.agent_pos, s.block_pos, s.block_angle)[0])(states) > 15.0)
    assert ENV.state_vector(one).shape == (7,) and ENV.proprio(one).shape == (4,)


def test_pd_control_moves_the_agent_towards_the_relative_target():
    state = _state((100.0, 400.0))
    moved = step(state, jnp.array([1.0, 0.0]))
    # Critically damped PD from rest covers 1 - 2/e of the 100 px in 0.1 s (Euler: a little more).
    assert 20.0 < float(moved.agent_pos[0] - 100.0) < 35.0 and abs(float(moved.agent_pos[1]) - 400.0) < 1e-4
    np.testing.assert_array_equal(moved.block_pos, state.block_pos)  # no contact, no block motion


def test_pushing_the_stem_end_on_moves_the_block_without_turning_it():
    # Agent below the stem's bottom face (block origin y=200, stem bottom at y=320), pushing up through the cog.
    state = _push(_state((256.0, 345.0)), [0.0, -1.0], 8)
    assert float(state.block_pos[1]) < 200.0 - 30.0
    assert abs(float(jnp.sin(state.block_angle))) < 0.02
    assert float(sdf(state)) >= 15.0 - 0.1


def test_an_off_centre_push_turns_the_block():
    # Pushing the right end of the bar upward (from below it) turns the T; the lever arm sets the direction.
    right = _push(_state((300.0, 250.0)), [0.0, -1.0], 6)
    left = _push(_state((212.0, 250.0)), [0.0, -1.0], 6)
    turn_right, turn_left = (float(jnp.sin(s.block_angle)) for s in (right, left))
    assert abs(turn_right) > 0.05 and abs(turn_left) > 0.05 and np.sign(turn_right) == -np.sign(turn_left)


def test_block_never_overlaps_agent_and_stays_inside_walls():
    trajs = jax.jit(jax.vmap(lambda k: rollout_lib.rollout(ENV, rollout_lib.random_policy(ENV), k, 60)))(
        jax.random.split(jax.random.key(2), 32))
    distances = jax.jit(jax.vmap(jax.vmap(lambda s: ENV.block_sdf(s.agent_pos, s.block_pos, s.block_angle)[0])))(
        trajs.states)
    assert float(distances.min()) >= 15.0 - 0.05
    corners = jax.vmap(jax.vmap(lambda s: s.block_pos + jax.vmap(
        lambda v: jnp.array([jnp.cos(s.block_angle) * v[0] - jnp.sin(s.block_angle) * v[1],
                             jnp.sin(s.block_angle) * v[0] + jnp.cos(s.block_angle) * v[1]]))(
        jnp.asarray(ENV._outline))))(trajs.states)
    assert float(corners.min()) >= 7.0 - 1e-3 and float(corners.max()) <= 504.0 + 1e-3


def test_block_pushed_into_a_wall_stops_and_the_agent_backs_off():
    state = _push(_state((256.0, 60.0), block=(256.0, 380.0), angle=0.0), [0.0, 1.0], 40)
    assert float(state.block_pos[1]) + 120.0 <= 504.0 + 1e-3  # stem bottom at the inner face of the wall
    assert float(sdf(state)) >= 15.0 - 0.05


def test_success_threshold_follows_swm_eval_state():
    goal = _state((100.0, 100.0), block=(256.0, 256.0), angle=1.0)
    assert ENV.is_success(goal, goal)
    assert ENV.is_success(_state((100.0, 100.0), block=(256.0 + 19.0, 256.0), angle=1.0), goal)
    assert not ENV.is_success(_state((100.0, 100.0), block=(256.0 + 21.0, 256.0), angle=1.0), goal)
    # One norm over agent and block offsets together: 15 and 15 fail (21.2), 10 and 10 pass (14.1).
    assert not ENV.is_success(_state((115.0, 100.0), block=(271.0, 256.0), angle=1.0), goal)
    assert ENV.is_success(_state((110.0, 100.0), block=(266.0, 256.0), angle=1.0), goal)
    assert ENV.is_success(_state((100.0, 100.0), block=(256.0, 256.0), angle=1.0 + math.pi / 9 - 0.01), goal)
    assert not ENV.is_success(_state((100.0, 100.0), block=(256.0, 256.0), angle=1.0 - math.pi / 9 - 0.01), goal)
    assert ENV.is_success(_state((100.0, 100.0), block=(256.0, 256.0), angle=1.0 + 2 * math.pi), goal)
    assert float(ENV.goal_distance(_state((110.0, 100.0), block=(266.0, 256.0), angle=3.0), goal)) == (
        pytest.approx(math.sqrt(200.0)))


def test_expert_pushes_the_block_onto_the_goal():
    def rates(keys):
        trajs = jax.vmap(lambda k: rollout_lib.rollout(ENV, rollout_lib.expert_policy(ENV), k, 200))(keys)
        goals = jax.vmap(jax.vmap(ENV.goal_state))(trajs.states)
        success = jax.vmap(jax.vmap(ENV.is_success))(trajs.states, goals).any(axis=1)
        position, angle = jax.vmap(jax.vmap(ENV.block_errors))(trajs.states, goals)
        block = ((position < 20.0) & (angle < math.pi / 9)).any(axis=1)
        return success.mean(), block.mean()

    # Measured over 1000 random episodes: block placed 99.2% within 100 steps; full success (agent parked
    # too) 91.6% within 200 steps, 96.7% within 300.
    full, block = jax.jit(rates)(jax.random.split(jax.random.key(3), 32))
    assert block >= 0.9 and full >= 0.75


def test_anti_aliased_deterministic_pixels():
    state = _state((100.0, 400.0), block=(250.3, 200.7), angle=0.3)
    frame = np.asarray(render(state))
    np.testing.assert_array_equal(frame, np.asarray(render(state)))
    red = frame[..., 0].astype(int)
    block_red, background = round(0.5 * 255), 255
    edge = (red > block_red) & (red < background)
    assert edge.sum() > 100  # partial coverage along the block's slanted edges
    cx, cy = (np.asarray(state.agent_pos) * 224 / 512).astype(int)
    np.testing.assert_array_equal(frame[cy, cx], [65, 105, 225])


def test_perturbations():
    state = jax.jit(ENV.reset)(jax.random.key(4))
    recoloured = jax.jit(ENV.perturb_colour)(state, jax.random.key(5))
    np.testing.assert_array_equal(recoloured.block_pos, state.block_pos)
    assert np.linalg.norm(recoloured.block_colour - state.block_colour) > 0.25
    assert not np.array_equal(np.asarray(render(recoloured)), np.asarray(render(state)))
    moved = jax.jit(jax.vmap(ENV.teleport, in_axes=(None, 0)))(state, jax.random.split(jax.random.key(6), 32))
    assert np.all(np.linalg.norm(moved.block_pos - state.block_pos, axis=-1) > 0)
    assert np.all(np.linalg.norm(moved.agent_pos - state.agent_pos, axis=-1) > 0)
    clear = jax.vmap(lambda s: ENV.block_sdf(s.agent_pos, s.block_pos, s.block_angle)[0])(moved)
    assert float(clear.min()) > 15.0
    np.testing.assert_array_equal(moved.block_colour[0], state.block_colour)
    np.testing.assert_array_equal(moved.goal_block_pos[0], state.goal_block_pos)


def test_biased_random_policy_reaches_and_moves_the_block():
    policy = lambda state, key: ENV.biased_random_action(state, key, bias=0.6)
    keys = jax.random.split(jax.random.key(7), 16)
    trajs = jax.jit(jax.vmap(lambda k: rollout_lib.rollout(ENV, policy, k, 40)))(keys)
    moved = np.linalg.norm(np.asarray(trajs.states.block_pos[:, -1] - trajs.states.block_pos[:, 0]), axis=-1)
    assert np.mean(moved > 5.0) > 0.5


@pytest.mark.slow
def test_expert_statistics_over_1000_episodes():
    """The figures quoted in core/envs/__init__.py (1000 episodes, seed 0)."""
    def first_hits(keys):
        trajs = jax.vmap(lambda k: rollout_lib.rollout(ENV, rollout_lib.expert_policy(ENV), k, 300))(keys)
        goals = jax.vmap(jax.vmap(ENV.goal_state))(trajs.states)
        full = jax.vmap(jax.vmap(ENV.is_success))(trajs.states, goals)
        position, angle = jax.vmap(jax.vmap(ENV.block_errors))(trajs.states, goals)
        block = (position < 20.0) & (angle < math.pi / 9)
        first = lambda hit: jnp.where(hit.any(1), jnp.argmax(hit, 1), 10 ** 6)
        return first(full), first(block)

    full, block = (np.asarray(a) for a in jax.jit(first_hits)(jax.random.split(jax.random.key(0), 1000)))
    for steps in (100, 200, 300):
        print(f"Push-T expert within {steps} steps: block {np.mean(block <= steps):.3f}, "
              f"full {np.mean(full <= steps):.3f}")
    assert np.mean(block <= 100) > 0.97 and np.mean(full <= 200) > 0.9
