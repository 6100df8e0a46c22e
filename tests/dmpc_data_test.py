"""Offline datasets: deterministic bytes, round trip, clear errors; segments and value targets."""

import json
import os

import numpy as np
import pytest

from papers.dmpc import data as data_lib
from papers.dmpc.segments import Segments, discounted_returns


def make_episodes(seed=0, n=3, horizon=6, obs_dim=3, action_dim=2):
    rng = np.random.default_rng(seed)
    lengths = np.array([horizon, 4, 5][:n])
    return data_lib.Episodes(
        observations=rng.normal(size=(n, horizon + 1, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, horizon, action_dim)).astype(np.float32),
        rewards=np.ones((n, horizon), np.float32) * (np.arange(horizon) < lengths[:, None]),
        qpos=rng.normal(size=(n, horizon + 1, 2)).astype(np.float32),
        qvel=rng.normal(size=(n, horizon + 1, 2)).astype(np.float32),
        lengths=lengths, terminal=np.array([False, True, False][:n]))


def manifest(path):
    with open(os.path.join(path, "manifest.json")) as f:
        return json.load(f)


def test_same_episodes_give_the_same_bytes_and_round_trip(tmp_path):
    episodes = make_episodes()
    a = data_lib.write_dataset(episodes, "toy", "medium", str(tmp_path / "a"), {"seed": 0})
    b = data_lib.write_dataset(episodes, "toy", "medium", str(tmp_path / "b"), {"seed": 0})
    assert manifest(a)["files"] == manifest(b)["files"] and manifest(a)["files"]
    assert manifest(a)["counts"] == {"episodes": 3, "steps": 15, "terminals": 1}
    back = data_lib.to_episodes(data_lib.load_dataset(a, env_name="toy", kind="medium", obs_dim=3, action_dim=2))
    np.testing.assert_array_equal(back.lengths, episodes.lengths)
    for i, n in enumerate(episodes.lengths):
        np.testing.assert_array_equal(back.observations[i, :n + 1], episodes.observations[i, :n + 1])
        np.testing.assert_array_equal(back.actions[i, :n], episodes.actions[i, :n])
    np.testing.assert_array_equal(back.terminal, episodes.terminal)
    other = data_lib.write_dataset(make_episodes(seed=1), "toy", "medium", str(tmp_path / "c"), {"seed": 1})
    assert manifest(other)["files"] != manifest(a)["files"]
    assert not [f for f in os.listdir(tmp_path / "a") if f.startswith(".")]     # no temp dir left behind


def test_missing_and_mismatched_datasets_raise_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json missing"):
        data_lib.load_dataset(str(tmp_path / "nothing"))
    path = data_lib.write_dataset(make_episodes(), "toy", "medium", str(tmp_path), {})
    with pytest.raises(ValueError, match="env='toy' but 'hopper'"):
        data_lib.load_dataset(path, env_name="hopper")
    with pytest.raises(ValueError, match="obs_dim=3 but 11"):
        data_lib.load_dataset(path, obs_dim=11)
    with pytest.raises(ValueError, match="Unknown dataset kind"):
        data_lib.write_dataset(make_episodes(), "toy", "expert-ish", str(tmp_path), {})


def test_discounted_returns_with_terminal_penalty():
    episodes = make_episodes()
    returns = discounted_returns(episodes, discount=0.5, terminal_penalty=-100.0)
    np.testing.assert_allclose(returns[0, :6], [1 + .5 + .25 + .125 + .0625 + .03125, 1 + .5 + .25 + .125 + .0625,
                                                1 + .5 + .25 + .125, 1.75, 1.5, 1.0], rtol=1e-6)
    # episode 1 fell after 4 steps: the penalty lands on its last step
    np.testing.assert_allclose(returns[1, 3], 1.0 - 100.0)
    np.testing.assert_allclose(returns[1, 2], 1.0 + 0.5 * (1.0 - 100.0))


def test_segments_gather_history_actions_and_future():
    episodes = make_episodes()
    segments = Segments(episodes, history=2, horizon=3, discount=0.5, terminal_penalty=-100.0)
    assert len(segments) == (6 - 3 + 1) + (4 - 3 + 1) + (5 - 3 + 1)
    batch = segments.gather(np.array([0, 1]))           # episode 0 at t = 0 and t = 1
    obs = episodes.observations[0]
    np.testing.assert_array_equal(batch["history"][0], obs[[0, 0]])     # clamped before the start
    np.testing.assert_array_equal(batch["history"][1], obs[[0, 1]])
    np.testing.assert_array_equal(batch["future"][1], obs[2:5])
    np.testing.assert_array_equal(batch["actions"][1], episodes.actions[0, 1:4])
    with pytest.raises(ValueError, match="planning horizon"):
        Segments(episodes, history=1, horizon=7)


def test_segments_gather_every_segment_like_two_dimensional_indexing():
    """The flat-row gather against the plain [episode, time] indexing it replaced, on every segment of padded
    episodes of three lengths (episodes past the first: the flat row offsets are where an error would show)."""
    episodes = make_episodes()
    segments = Segments(episodes, history=2, horizon=3, discount=0.5, terminal_penalty=-100.0)
    rows = np.arange(len(segments))
    batch = segments.gather(rows)
    i, t = segments.index[rows, 0], segments.index[rows, 1]
    obs = episodes.observations
    np.testing.assert_array_equal(batch["history"], obs[i[:, None], np.maximum(t[:, None] + np.arange(-1, 1), 0)])
    np.testing.assert_array_equal(batch["future"], obs[i[:, None], t[:, None] + np.arange(1, 4)])
    np.testing.assert_array_equal(batch["actions"], episodes.actions[i[:, None], t[:, None] + np.arange(3)])
    np.testing.assert_array_equal(batch["value_target"], segments.returns[i, t])
    assert set(i) == {0, 1, 2}


def test_collect_mixture_gives_each_group_its_own_policy():
    import jax
    import jax.numpy as jnp
    from papers.dmpc import envs
    env = envs.make("toy")
    policy_fn = lambda params, obs, key: jnp.broadcast_to(params["a"], obs.shape[:-1] + (2,))
    params = [{"a": jnp.array([0.1, 0.0])}, {"a": jnp.array([-0.3, 0.2])}, {"a": jnp.array([0.5, -0.5])}]
    groups = [(2, 3), (0, 5), (2, 2), (1, 4)]             # 14 episodes in chunks of 8: padding is dropped
    out = data_lib.collect_mixture(env, policy_fn, params, groups, jax.random.key(0), max_steps=6, chunk=8)
    assert [len(g.lengths) for g in out] == [3, 5, 2, 4]
    for (policy, _), episodes in zip(groups, out):
        first = episodes.actions[:, 0]
        np.testing.assert_allclose(first, np.broadcast_to(np.asarray(params[policy]["a"]), first.shape))
    again = data_lib.collect_mixture(env, policy_fn, params, groups, jax.random.key(0), max_steps=6, chunk=8)
    np.testing.assert_array_equal(out[3].observations, again[3].observations)
    with pytest.raises(ValueError, match="out of range"):
        data_lib.collect_mixture(env, policy_fn, params, [(3, 1)], jax.random.key(0), max_steps=6, chunk=8)


def test_held_out_split_is_seeded_disjoint_and_holds_only_usable_episodes():
    from papers.dmpc import pipeline

    n, T = 20, 12
    lengths = np.array([2 if i % 4 == 0 else 10 for i in range(n)])     # every 4th too short for a segment
    eps = data_lib.Episodes(observations=np.zeros((n, T + 1, 3), np.float32), actions=np.zeros((n, T, 2), np.float32),
                        rewards=np.arange(n, dtype=np.float32)[:, None].repeat(T, 1), qpos=np.zeros((n, T + 1, 2)),
                        qvel=np.zeros((n, T + 1, 2)), lengths=lengths, terminal=np.zeros(n, bool))
    train, held = pipeline.split_episodes(eps, 0.25, seed=0, min_length=4)
    again, held_again = pipeline.split_episodes(eps, 0.25, seed=0, min_length=4)
    ids = lambda e: set(e.rewards[:, 0].astype(int))
    assert len(held.lengths) == 5 and ids(held) == ids(held_again) and not ids(train) & ids(held)
    assert ids(train) | ids(held) == set(range(n)) and (held.lengths >= 4).all()
    assert pipeline.split_episodes(eps, 0.0, seed=0)[1] is None


def test_episode_counts_reach_the_d4rl_transition_targets():
    from configs.dmpc import locomotion
    from papers.dmpc import pipeline

    assert pipeline.episodes_for(0, 50.0, 200, 30_000) == 200                 # no target: the episode count
    assert pipeline.episodes_for(1_000_000, 1000.0, 200, 30_000) == 1000      # full-length episodes
    assert pipeline.episodes_for(1_000_000, 230.0, 200, 30_000) == 4348       # hopper medium's ~230 steps
    assert pipeline.episodes_for(1_000_000, 20.0, 200, 30_000) == 30_000      # capped
    assert pipeline.episodes_for(1000, 1000.0, 200, 30_000) == 200            # never below the minimum
    gpu = {env: locomotion.get_config(f"env={env}").data for env in ("halfcheetah", "hopper", "walker2d")}
    assert all(d.medium_transitions == 1_000_000 for d in gpu.values())
    assert [gpu[e].replay_transitions for e in ("halfcheetah", "hopper", "walker2d")] == [202_000, 402_000, 302_000]
    assert locomotion.get_config("smoke").data.medium_transitions == 0
