"""Scan rollouts and on-device LeWM training clips."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core.envs import rollout as rollout_lib
from core.envs.push_t import PushT
from core.envs.two_room import TwoRoom
from papers.lewm import data as lewm_data


@pytest.mark.parametrize("env", [TwoRoom(), PushT()], ids=["two_room", "push_t"])
def test_rollout_is_the_step_function_scanned(env):
    traj = jax.jit(lambda k: rollout_lib.rollout(env, rollout_lib.expert_policy(env), k, 6, render=True))(
        jax.random.key(0))
    assert traj.actions.shape == (6, 2) and traj.frames.shape == (7, 224, 224, 3)
    assert jax.tree.leaves(traj.states)[0].shape[0] == 7
    step, render = jax.jit(env.step), jax.jit(env.render)
    for t in (0, 3, 5):
        state_t = jax.tree.map(lambda a: a[t], traj.states)
        following = step(state_t, traj.actions[t])
        expected = jax.tree.map(lambda a: a[t + 1], traj.states)
        for got, want in zip(jax.tree.leaves(following), jax.tree.leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(traj.frames[t], render(state_t))
    assert rollout_lib.rollout(env, rollout_lib.random_policy(env), jax.random.key(1), 2).frames is None


def test_sample_clips_layout_and_consistency():
    env = TwoRoom()
    clips = jax.jit(lambda k: lewm_data.sample_clips(env, k, batch_size=3, max_offset=20))(jax.random.key(2))
    assert clips.frames.shape == (3, 4, 224, 224, 3) and clips.frames.dtype == jnp.uint8
    assert clips.actions.shape == (3, 4, 10)
    step, render = jax.jit(env.step), jax.jit(env.render)
    for b in range(3):
        for t in range(3):
            state = jax.tree.map(lambda a: a[b, t], clips.states)
            for action in clips.actions[b, t].reshape(5, 2):
                state = step(state, action)
            # Goals may be resampled on success; the agent's motion is what the actions determine.
            np.testing.assert_allclose(state.agent_pos, clips.states.agent_pos[b, t + 1], atol=1e-4)
        np.testing.assert_array_equal(clips.frames[b, 2], render(jax.tree.map(lambda a: a[b, 2], clips.states)))


def test_clips_from_bank_are_windows_of_the_banked_episodes():
    env = PushT()
    bank = jax.jit(lambda k: lewm_data.simulate_bank(env, k, num_episodes=3, num_steps=22))(jax.random.key(4))
    assert bank.actions.shape == (3, 22, 2) and bank.states.agent_pos.shape == (3, 23, 2)
    clips = jax.jit(lambda b, k: lewm_data.clips_from_bank(env, b, k, batch_size=4))(bank, jax.random.key(5))
    assert clips.frames.shape == (4, 4, 224, 224, 3) and clips.actions.shape == (4, 4, 10)
    flat_actions = np.asarray(bank.actions).reshape(3, -1)
    for b in range(4):
        # the clip's 20 actions are one contiguous stretch of one banked episode ...
        window = np.asarray(clips.actions[b]).reshape(-1)
        hits = [(e, t) for e in range(3) for t in range(0, 2 * (22 - 20) + 1, 2)
                if np.array_equal(flat_actions[e, t:t + 40], window)]
        assert len(hits) == 1
        episode, t = hits[0][0], hits[0][1] // 2
        # ... and its frames show the banked states at steps t, t + 5, t + 10, t + 15
        np.testing.assert_array_equal(clips.states.block_pos[b], bank.states.block_pos[episode, t:t + 20:5])
    np.testing.assert_array_equal(clips.frames[1, 3], jax.jit(env.render)(jax.tree.map(lambda a: a[1, 3], clips.states)))
    with pytest.raises(ValueError, match="a clip needs 20"):
        lewm_data.clips_from_bank(env, jax.tree.map(lambda x: x[:, :10], bank), jax.random.key(0), 2)


def test_new_goal_on_success_keeps_the_expert_moving():
    env = TwoRoom(action_noise=0.0, action_repeat_prob=0.0)
    run = jax.jit(lambda k, flag: rollout_lib.rollout(env, rollout_lib.expert_policy(env), k, 200,
                                                      new_goal_on_success=flag), static_argnums=1)
    fixed, moving = run(jax.random.key(3), False), run(jax.random.key(3), True)
    assert len(np.unique(np.asarray(fixed.states.goal_pos), axis=0)) == 1
    assert len(np.unique(np.asarray(moving.states.goal_pos), axis=0)) >= 3
    still = np.linalg.norm(np.diff(np.asarray(moving.states.agent_pos), axis=0), axis=-1)
    assert np.mean(still > 4.9) > 0.9  # at full speed nearly all the time


def test_clip_stream_continues_one_trajectory_per_env():
    env = TwoRoom()
    init = jax.jit(lambda k: lewm_data.init_clip_stream(env, k, 4, max_warmup=6))
    advance = jax.jit(lambda s, k: lewm_data.next_clips(env, s, k))
    states = init(jax.random.key(4))
    after, clips = advance(states, jax.random.key(5))
    assert clips.frames.shape == (4, 4, 224, 224, 3) and clips.actions.shape == (4, 4, 10)
    np.testing.assert_allclose(clips.states.agent_pos[:, 0], states.agent_pos)
    step = jax.jit(env.step)
    for b in range(4):
        state = jax.tree.map(lambda a: a[b, -1], clips.states)
        for action in clips.actions[b, -1].reshape(5, 2):
            state = step(state, action)
        np.testing.assert_allclose(state.agent_pos, after.agent_pos[b], atol=1e-4)
    _, again = advance(after, jax.random.key(6))
    np.testing.assert_allclose(again.states.agent_pos[:, 0], after.agent_pos)
    _, restarted = jax.jit(lambda s, k: lewm_data.next_clips(env, s, k, reset_prob=1.0))(after, jax.random.key(6))
    assert np.all(np.linalg.norm(restarted.states.agent_pos[:, 0] - after.agent_pos, axis=-1) > 0)


@pytest.mark.parametrize("env", [TwoRoom(), PushT()], ids=["two_room", "push_t"])
def test_state_and_goal_vectors_round_trip(env):
    state = jax.jit(env.step)(jax.jit(env.reset)(jax.random.key(8)), jnp.array([0.5, -0.5]))
    rebuilt = env.from_vectors(env.state_vector(state), env.goal_vector(state))
    np.testing.assert_array_equal(env.state_vector(rebuilt), env.state_vector(state))
    np.testing.assert_array_equal(env.goal_vector(rebuilt), env.goal_vector(state))
    np.testing.assert_array_equal(jax.jit(env.render)(rebuilt), jax.jit(env.render)(state))


def test_voe_rollouts_differ_only_by_the_perturbation():
    env = TwoRoom()
    triple = jax.jit(lambda k: lewm_data.voe_rollouts(env, rollout_lib.expert_policy(env), k, 12, 6))(
        jax.random.key(9))
    assert triple.frames.shape == (3, 13, 224, 224, 3) and triple.actions.shape == (3, 12, 2)
    frames, pos = np.asarray(triple.frames), np.asarray(triple.states.agent_pos)
    for variant in (1, 2):
        np.testing.assert_array_equal(frames[variant, :6], frames[0, :6])  # identical before step 6
        assert not np.array_equal(frames[variant, 6], frames[0, 6])
    # Colour: same positions throughout (same noise), new colour from step 6; teleport: a jump at step 6.
    np.testing.assert_allclose(pos[1], pos[0])
    assert np.all(np.asarray(triple.states.agent_colour[1, 6:]) != np.asarray(triple.states.agent_colour[0, 6:]))
    jumps = np.linalg.norm(np.diff(pos[2], axis=0), axis=-1)
    assert jumps[5] > 5.0 + 1e-3 and np.all(np.delete(jumps, 5) <= 5.0 * np.sqrt(2) + 1e-4)
    with pytest.raises(ValueError, match="perturb_step"):
        lewm_data.voe_rollouts(env, rollout_lib.expert_policy(env), jax.random.key(0), 12, 12)
