"""TwoRoom: shapes, vmap, walls and door, expert, success test, perturbations, rendering."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core.envs import rollout as rollout_lib
from core.envs.two_room import TwoRoom, TwoRoomState

ENV = TwoRoom()
render = jax.jit(ENV.render)
step = jax.jit(ENV.step)


def _state(x, y, goal=(180.0, 100.0)):
    return TwoRoomState(agent_pos=jnp.array([x, y], jnp.float32), goal_pos=jnp.array(goal, jnp.float32),
                        agent_colour=jnp.array([1.0, 0.0, 0.0]), last_action=jnp.zeros(2))


def test_shapes_dtypes_and_vmap():
    keys = jax.random.split(jax.random.key(0), 4)
    states = jax.vmap(ENV.reset)(keys)
    assert states.agent_pos.shape == (4, 2) and states.agent_pos.dtype == jnp.float32
    actions = jax.random.uniform(jax.random.key(1), (4, 2), minval=-1, maxval=1)
    stepped = jax.jit(jax.vmap(ENV.step))(states, actions)
    frames = jax.jit(jax.vmap(ENV.render))(stepped)
    assert frames.shape == (4, 224, 224, 3) and frames.dtype == jnp.uint8
    one = step(jax.tree.map(lambda a: a[2], states), actions[2])
    np.testing.assert_allclose(stepped.agent_pos[2], one.agent_pos, rtol=1e-6)
    np.testing.assert_array_equal(frames[2], render(one))
    # Starts and goals lie in opposite rooms, clear of the wall band.
    assert np.all((states.agent_pos[:, 0] < 112) != (states.goal_pos[:, 0] < 112))


def test_wall_stops_agent_outside_the_door_and_lets_it_through_the_door():
    blocked = step(_state(96.0, 150.0), jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(blocked.agent_pos, [99.5, 150.0])
    through = step(_state(97.0, 49.0), jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(through.agent_pos, [102.0, 49.0])
    from_right = step(_state(128.0, 150.0), jnp.array([-1.0, 0.0]))
    np.testing.assert_allclose(from_right.agent_pos, [124.5, 150.0])
    border = step(_state(23.0, 23.0), jnp.array([-1.0, -1.0]))
    np.testing.assert_allclose(border.agent_pos, [21.0, 21.0])


def test_no_crossing_except_through_the_door():
    # A policy that heads straight for the goal, ignoring the door, presses agents against the wall.
    def straight(state, key):
        direction = state.goal_pos - state.agent_pos
        return direction / jnp.linalg.norm(direction) + 0.5 * jax.random.normal(key, (2,))

    trajs = jax.jit(jax.vmap(lambda k: rollout_lib.rollout(ENV, straight, k, 120)))(
        jax.random.split(jax.random.key(3), 128))
    x, y = np.asarray(trajs.states.agent_pos[..., 0]), np.asarray(trajs.states.agent_pos[..., 1])
    in_door = np.abs(y - 49.0) <= 14.0 + 1.75
    assert not np.any((x > 100.0) & (x < 124.0) & ~in_door), "agent inside the wall band outside the door"
    crossed = (x[:, 1:] > 112.0) != (x[:, :-1] > 112.0)
    assert not np.any(crossed & ~in_door[:, 1:]), "agent crossed the wall outside the door"
    assert np.sum(np.isclose(x, 99.5) | np.isclose(x, 124.5)) > 100  # the wall was actually pushed against
    assert np.any(crossed)  # and some agents got through the door


def test_expert_reaches_the_target():
    def first_success(env, num_steps):
        trajs = jax.vmap(lambda k: rollout_lib.rollout(env, rollout_lib.expert_policy(env), k, num_steps))(
            jax.random.split(jax.random.key(4), 64))
        goals = jax.vmap(jax.vmap(env.goal_state))(trajs.states)
        return jax.vmap(jax.vmap(env.is_success))(trajs.states, goals).any(axis=1).mean()

    # Measured over 1000 episodes: 0.999 within 300 steps (0.46 within 100: mean capped length 90, the
    # paper's data has mean length 92); without noise every episode succeeds, median 33 steps.
    assert jax.jit(lambda: first_success(ENV, 300))() >= 0.9


def test_success_threshold():
    goal = _state(60.0, 100.0)
    assert ENV.is_success(_state(60.0 + 15.9, 100.0), goal)
    assert not ENV.is_success(_state(60.0 + 16.1, 100.0), goal)
    assert ENV.is_success(ENV.goal_state(_state(150.0, 60.0, goal=(50.0, 50.0))), _state(50.0, 50.0))


def test_expert_repeats_the_last_action():
    env = TwoRoom(action_repeat_prob=1.0)
    state = _state(60.0, 100.0).replace(last_action=jnp.array([0.3, -0.7]))
    np.testing.assert_allclose(env.expert_action(state, None, jax.random.key(0)), [0.3, -0.7])


def test_rendering_is_deterministic_and_shows_walls_door_and_agent():
    state = _state(60.0, 150.0)
    frame = np.asarray(render(state))
    np.testing.assert_array_equal(frame, np.asarray(render(state)))
    np.testing.assert_array_equal(frame, np.asarray(jax.jit(TwoRoom().render)(state)))
    np.testing.assert_array_equal(frame[150, 112], [0, 0, 0])        # wall
    np.testing.assert_array_equal(frame[49, 112], [255, 255, 255])   # door
    np.testing.assert_array_equal(frame[150, 60], [255, 0, 0])       # agent centre
    ramp = frame[150, 60:80, 1]                                        # Gaussian falls off smoothly
    assert np.all(np.diff(ramp.astype(int)) >= 0) and 0 < ramp[7] < 255


def test_perturbations():
    state = jax.jit(ENV.reset)(jax.random.key(5))
    recoloured = jax.jit(ENV.perturb_colour)(state, jax.random.key(6))
    np.testing.assert_array_equal(recoloured.agent_pos, state.agent_pos)
    assert np.linalg.norm(recoloured.agent_colour - state.agent_colour) > 0.25
    row, col = np.round(np.asarray(state.agent_pos[::-1])).astype(int)
    assert not np.array_equal(np.asarray(render(recoloured))[row, col], np.asarray(render(state))[row, col])

    moved = jax.jit(jax.vmap(ENV.teleport, in_axes=(None, 0)))(state, jax.random.split(jax.random.key(7), 64))
    x = np.asarray(moved.agent_pos[:, 0])
    assert np.all(np.linalg.norm(moved.agent_pos - state.agent_pos, axis=-1) > 0)
    assert np.all((x < 100.0) | (x > 124.0)) and np.all((moved.agent_pos >= 21) & (moved.agent_pos <= 203))
    np.testing.assert_array_equal(moved.agent_colour[0], state.agent_colour)
    np.testing.assert_array_equal(moved.goal_pos[0], state.goal_pos)


@pytest.mark.parametrize("speed", [5.0, 7.0])
def test_speed_scales_the_step(speed):
    env = TwoRoom(speed=speed)
    np.testing.assert_allclose(jax.jit(env.step)(_state(60.0, 100.0), jnp.array([0.0, 1.0])).agent_pos,
                               [60.0, 100.0 + speed])


@pytest.mark.slow
def test_expert_statistics_over_1000_episodes():
    """The figures quoted in core/envs/__init__.py (1000 episodes, seed 0)."""
    def first_success(keys):
        trajs = jax.vmap(lambda k: rollout_lib.rollout(ENV, rollout_lib.expert_policy(ENV), k, 300))(keys)
        goals = jax.vmap(jax.vmap(ENV.goal_state))(trajs.states)
        hit = jax.vmap(jax.vmap(ENV.is_success))(trajs.states, goals)
        return jnp.where(hit.any(1), jnp.argmax(hit, 1), 10 ** 6)

    first = np.asarray(jax.jit(first_success)(jax.random.split(jax.random.key(0), 1000)))
    within_100, within_300 = np.mean(first <= 100), np.mean(first <= 300)
    print(f"TwoRoom expert: {within_100:.3f} within 100 steps, {within_300:.3f} within 300, "
          f"capped mean length {np.minimum(first, 100).mean():.1f}")
    assert 0.35 < within_100 < 0.6 and within_300 > 0.99
