"""Episode datasets: TFDS array_record + manifest, determinism, reading back, LeWM clips."""
import json
import os

import numpy as np
import pytest

from papers.lewm import dataset


def _config(seed=0, **overrides):
    fields = dict(name=f"tiny_s{seed}", env="tworoom", num_episodes=3, max_steps=12, seed=seed, resolution=32,
                  chunk_size=2)
    fields.update(overrides)
    return dataset.EpisodesConfig(**fields)


def _manifest(path):
    with open(os.path.join(path, "manifest.json")) as f:
        return json.load(f)


def test_same_seed_same_bytes_and_readable(tmp_path):
    first = dataset.build(_config(), str(tmp_path / "a"))
    second = dataset.build(_config(), str(tmp_path / "b"))
    other = dataset.build(_config(seed=1, name="tiny_s0"), str(tmp_path / "c"))
    files_a, files_b, files_c = (_manifest(p)["files"] for p in (first, second, other))
    assert files_a and files_a == files_b and files_a != files_c
    manifest = _manifest(first)
    assert manifest["generator_version"] == dataset.GENERATOR_VERSION and manifest["config"]["seed"] == 0
    assert manifest["counts"]["episodes"] == 3 and manifest["counts"]["steps"] == 36  # no success in 12 steps

    source = dataset.load(first)
    assert len(source) == 3
    episode = source[1]
    frames = np.stack(episode["frames"])
    assert frames.shape == (13, 32, 32, 3) and frames.dtype == np.uint8
    assert episode["actions"].shape == (12, 2) and episode["states"].shape == (13, 4)
    assert int(episode["episode_id"]) == 1 and episode["goal"].shape == (2,)
    np.testing.assert_allclose(episode["states"][:, 2:], np.broadcast_to(episode["goal"], (13, 2)))
    # Consecutive proprio positions differ by at most one step of speed 5 (sqrt(2) * 5 diagonally).
    steps = np.linalg.norm(np.diff(episode["proprio"], axis=0), axis=-1)
    assert steps.max() <= 5 * np.sqrt(2) + 1e-4


def test_raw_frames_match_png_frames(tmp_path):
    png = dataset.load(dataset.build(_config(num_episodes=1), str(tmp_path / "png")))[0]
    raw = dataset.load(dataset.build(_config(num_episodes=1, frame_format="raw"), str(tmp_path / "raw")))[0]
    np.testing.assert_array_equal(np.stack(png["frames"]), raw["frames"])  # PNG is lossless


def test_episode_length_stops_at_first_success():
    success = np.array([False, False, True, True, False])
    assert dataset.episode_length(success, 4, stop_on_success=True) == 2
    assert dataset.episode_length(success, 4, stop_on_success=False) == 4
    assert dataset.episode_length(np.zeros(5, bool), 4, stop_on_success=True) == 4


def test_clip_layout():
    episode = {"frames": list(np.arange(12)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)),
               "actions": np.arange(22, dtype=np.float32).reshape(11, 2)}
    c = dataset.clip(episode, 1, num_frames=2, frameskip=5)
    np.testing.assert_array_equal(c["frames"][:, 0, 0, 0], [1, 6])
    np.testing.assert_array_equal(c["actions"][0], np.arange(2, 12))
    np.testing.assert_array_equal(c["actions"][1], np.arange(12, 22))
    tail = dataset.clip(episode, 6, num_frames=2, frameskip=5)  # the last block runs past the end
    np.testing.assert_array_equal(tail["frames"][:, 0, 0, 0], [6, 11])
    np.testing.assert_array_equal(tail["actions"][0], np.arange(12, 22))
    np.testing.assert_array_equal(tail["actions"][1], np.zeros(10))  # zero padded, as LeWM zeroes NaNs
    with pytest.raises(ValueError, match="too short"):
        dataset.clip(episode, 8, num_frames=2, frameskip=5)


def test_user_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown environment"):
        dataset.validate(_config(env="cartpole"))
    with pytest.raises(ValueError, match="frame_format"):
        dataset.validate(_config(frame_format="jpeg"))
    with pytest.raises(FileNotFoundError, match="build it"):
        dataset.load(str(tmp_path / "missing"))
