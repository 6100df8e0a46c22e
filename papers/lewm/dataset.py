"""Expert-episode datasets on disk: a TFDS ``GeneratorBasedBuilder`` writing array_record, plus a manifest.

    path = build(EpisodesConfig(name="tworoom_small", env="tworoom", num_episodes=1000), data_dir)
    source = load(path)                       # random access: source[i] -> one episode (numpy)
    python -m launch.build_episodes --env tworoom --num_episodes 10000 --data_dir ~/tensorflow_datasets

Episodes are generated on device in chunks (expert rollouts from random starts, rendered by the SDF renderer,
resized to ``resolution``) and stop at the first success, as swm's collection does (``max_steps`` otherwise).
Episode i uses ``fold_in(key(seed), i)``, so the data do not depend on the chunk size. Each episode stores
``frames`` (length + 1 PNGs, or raw uint8), ``actions`` [length, A], ``states`` (``env.state_vector``) and
``proprio`` [length + 1, ...], the episode's task ``goal`` (``env.goal_vector``), ``episode_id``, ``success``;
``env.from_vectors(states[t], goal)`` rebuilds an env state (default colours) to restart the simulator there.
``manifest.json`` beside the data records the generator version, configuration, seed, counts and the sha256 of
every data file; the same seed on the same backend gives the same bytes (float rounding may differ between
CPU and GPU renderings).

No TensorFlow is needed: PNGs are encoded here with Pillow and passed to TFDS as bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from core.envs import make_env
from core.envs import rollout as rollout_lib
from core.data import tfds_scratch
from core import fileio
from core.fileio import file_sha256

GENERATOR_VERSION = "1.0.0"
FRAME_FORMATS = ("png", "raw")


@dataclasses.dataclass
class EpisodesConfig(tfds.core.BuilderConfig):
    env: str = "tworoom"
    num_episodes: int = 16
    max_steps: int = 100
    seed: int = 0
    resolution: int = 224
    frame_format: str = "png"
    stop_on_success: bool = True
    chunk_size: int = 256


def validate(config: EpisodesConfig) -> None:
    make_env(config.env)
    if config.frame_format not in FRAME_FORMATS:
        raise ValueError(f"frame_format must be one of {FRAME_FORMATS}, got {config.frame_format!r}.")
    if config.num_episodes < 1 or config.max_steps < 1 or config.resolution < 1 or config.chunk_size < 1:
        raise ValueError("num_episodes, max_steps, resolution and chunk_size must all be positive.")


@functools.lru_cache(maxsize=16)
def _chunk_fn(env, max_steps: int, resolution: int):
    """One compiled program per (env, max_steps, resolution); the seed and episode ids are arguments."""
    def one(seed, episode_id):
        key = jax.random.fold_in(jax.random.key(seed), episode_id)
        traj = rollout_lib.rollout(env, rollout_lib.expert_policy(env), key, max_steps, render=True)
        success = jax.vmap(lambda s: env.is_success(s, env.goal_state(s)))(traj.states)
        frames = traj.frames
        if resolution != env.image_size:
            frames = jax.image.resize(frames.astype(jnp.float32), (max_steps + 1, resolution, resolution, 3),
                                      "linear", antialias=True)
            frames = jnp.round(jnp.clip(frames, 0, 255)).astype(jnp.uint8)
        return (frames, traj.actions, jax.vmap(env.state_vector)(traj.states),
                jax.vmap(env.proprio)(traj.states), env.goal_vector(jax.tree.map(lambda x: x[0], traj.states)),
                success)
    return jax.jit(jax.vmap(one, in_axes=(None, 0)))


def generate_chunk(env, seed: int, first_episode: int, count: int, max_steps: int, resolution: int):
    """Rollouts of episodes [first, first + count) on device: frames uint8 [count, T + 1, R, R, 3], actions,
    state vectors, proprio, goal vectors and per-state success flags (numpy)."""
    episode_ids = jnp.arange(first_episode, first_episode + count)
    return jax.device_get(_chunk_fn(env, max_steps, resolution)(jnp.uint32(seed), episode_ids))


def episode_length(success: np.ndarray, max_steps: int, stop_on_success: bool) -> int:
    """Number of actions: up to and including the step that first reaches success (state index >= 1)."""
    hits = np.flatnonzero(success[1:])
    return int(hits[0]) + 1 if (stop_on_success and hits.size) else max_steps


def encode_png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


class EnvEpisodes(tfds.core.GeneratorBasedBuilder):
    """Expert episodes of a JAX-native environment (configured by ``EpisodesConfig``)."""

    VERSION = tfds.core.Version(GENERATOR_VERSION)
    BUILDER_CONFIGS = [
        EpisodesConfig(name="tworoom", env="tworoom", num_episodes=10_000, max_steps=100),
        EpisodesConfig(name="pusht", env="pusht", num_episodes=20_000, max_steps=300),
        EpisodesConfig(name="tworoom_smoke", env="tworoom", num_episodes=8, max_steps=20, resolution=64),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        validate(config)
        env = make_env(config.env)
        probe = jax.eval_shape(env.reset, jax.random.key(0))
        state_dim = jax.eval_shape(env.state_vector, probe).shape[-1]
        proprio_dim = jax.eval_shape(env.proprio, probe).shape[-1]
        goal_dim = jax.eval_shape(env.goal_vector, probe).shape[-1]
        r = config.resolution
        frames = (tfds.features.Sequence(tfds.features.Image(shape=(r, r, 3), encoding_format="png"))
                  if config.frame_format == "png" else tfds.features.Tensor(shape=(None, r, r, 3), dtype=np.uint8))
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Expert episodes of core.envs {config.env} (generator {GENERATOR_VERSION}).",
            features=tfds.features.FeaturesDict({
                "frames": frames,
                "actions": tfds.features.Tensor(shape=(None, env.action_dim), dtype=np.float32),
                "states": tfds.features.Tensor(shape=(None, state_dim), dtype=np.float32),
                "proprio": tfds.features.Tensor(shape=(None, proprio_dim), dtype=np.float32),
                "goal": tfds.features.Tensor(shape=(goal_dim,), dtype=np.float32),
                "episode_id": tfds.features.Scalar(dtype=np.int64),
                "success": tfds.features.Scalar(dtype=np.bool_),
            }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        config = self.builder_config
        env = make_env(config.env)
        for first in range(0, config.num_episodes, config.chunk_size):
            count = min(config.chunk_size, config.num_episodes - first)
            frames, actions, states, proprio, goals, success = generate_chunk(
                env, config.seed, first, count, config.max_steps, config.resolution)
            for i in range(count):
                length = episode_length(success[i], config.max_steps, config.stop_on_success)
                episode_frames = frames[i, :length + 1]
                yield first + i, {
                    "frames": ([encode_png(f) for f in episode_frames] if config.frame_format == "png"
                               else episode_frames),
                    "actions": actions[i, :length],
                    "states": states[i, :length + 1],
                    "proprio": proprio[i, :length + 1],
                    "goal": goals[i],
                    "episode_id": first + i,
                    "success": bool(success[i, 1:length + 1].any()),
                }


def _write_json_atomic(path: str, payload: dict[str, Any]) -> None:
    fileio.write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True))


def build(config: EpisodesConfig, data_dir: str) -> str:
    """Generates the dataset (unless already there) and its manifest; returns the dataset directory."""
    validate(config)
    with tfds_scratch.contained_tempdirs():
        builder = EnvEpisodes(config=config, data_dir=data_dir, file_format=tfds.core.FileFormat.ARRAY_RECORD)
        builder.download_and_prepare()
    path = os.fspath(builder.data_dir)
    manifest_path = os.path.join(path, "manifest.json")
    if not os.path.exists(manifest_path):
        data_files = sorted(f for f in os.listdir(path) if ".array_record" in f)
        source = builder.as_data_source(split="train")
        steps = int(sum(len(source[i]["actions"]) for i in range(len(source))))
        _write_json_atomic(manifest_path, {
            "generator": "core.envs.dataset.EnvEpisodes", "generator_version": GENERATOR_VERSION,
            "config": {k: getattr(config, k) for k in ("name", "env", "num_episodes", "max_steps", "seed",
                                                        "resolution", "frame_format", "stop_on_success")},
            "env": repr(make_env(config.env)), "backend": jax.default_backend(),
            "counts": {"episodes": len(source), "steps": steps, "frames": steps + len(source)},
            "files": {name: file_sha256(os.path.join(path, name)) for name in data_files},
        })
    return path


def load(path: str):
    """Random-access episodes (``source[i]`` is a dict of numpy arrays; PNG frames come back decoded)."""
    if not os.path.exists(os.path.join(path, "manifest.json")):
        raise FileNotFoundError(f"No dataset with a manifest at {path}; build it with core.envs.dataset.build.")
    return tfds.builder_from_directory(path).as_data_source(split="train")


def clip(episode: dict[str, Any], start: int, num_frames: int = 4, frameskip: int = 5) -> dict[str, np.ndarray]:
    """The LeWM clip at `start`: frames [num_frames, R, R, 3] ``frameskip`` apart and action blocks
    [num_frames, frameskip * A]; actions past the episode's end are zeros (LeWM zeroes its NaN padding)."""
    frames = np.stack(episode["frames"])[start:start + num_frames * frameskip:frameskip]
    if len(frames) < num_frames:
        raise ValueError(f"Episode too short for a clip at {start}; starts must be <= len(frames) - "
                         f"{(num_frames - 1) * frameskip + 1}.")
    actions = np.asarray(episode["actions"])[start:start + num_frames * frameskip]
    actions = np.concatenate([actions, np.zeros((num_frames * frameskip - len(actions), actions.shape[-1]),
                                                actions.dtype)])
    return {"frames": frames, "actions": actions.reshape(num_frames, -1)}
