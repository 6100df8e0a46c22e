"""Offline locomotion datasets made the D4RL way, on MJX: rollouts of behaviour policies, stored as TFDS.

    episodes = collect(env, policy_fn, params, key, num_episodes, max_steps)    # numpy, one jitted scan
    groups = collect_mixture(env, policy_fn, [params_a, params_b], [(0, n_a), (1, n_b)], key, max_steps, chunk)
    path = write_dataset(episodes, name, data_dir, manifest)                     # array_record + manifest
    source = load_dataset(path, env_name=..., obs_dim=...)                       # checks what it loads
    arrays = to_padded(source)                                                   # for the segment sampler

One record per episode: observations [L+1, S], actions [L, A], rewards [L], qpos / qvel [L+1, .], terminal
(the episode ended by falling, not by the time limit) and timeout. `manifest.json` records the generator
version, the env, the behaviour policies' returns, seeds, counts and sha256 of every data file; the same
episodes give the same bytes. No TensorFlow is needed (tfds.data_source).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import tempfile
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from core.data import tfds_scratch
from core.fileio import file_sha256

GENERATOR_VERSION = "1.0.0"
KINDS = ("random", "medium", "medium_replay", "expert", "play")

PolicyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]   # (params, obs[B, S], key) -> actions[B, A]


@dataclasses.dataclass
class Episodes:
    """Padded episodes (numpy): observations [N, T+1, S], actions [N, T, A], rewards [N, T], qpos, qvel,
    lengths [N] (actions taken), terminal [N] (fell before the time limit)."""
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    qpos: np.ndarray
    qvel: np.ndarray
    lengths: np.ndarray
    terminal: np.ndarray

    @property
    def returns(self) -> np.ndarray:
        return self.rewards.sum(1)

    def select(self, rows) -> "Episodes":
        return Episodes(*(a[rows] for a in dataclasses.astuple(self)))

    def concat(self, other: "Episodes") -> "Episodes":
        return Episodes(*(np.concatenate([a, b]) for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


@functools.lru_cache(maxsize=32)
def _collector(env, policy_fn: PolicyFn, num_episodes: int, max_steps: int, per_episode_params: bool = False):
    """One compiled program per (env, policy network, sizes); params and key are arguments. With
    `per_episode_params` the params argument is (params stacked over a leading axis, index [num_episodes]) and
    episode i acts with params[index[i]]: many behaviour policies share one rollout (one pass of sequential
    MJX steps, whose latency, not the batch size, sets the cost on a GPU)."""
    def run(params, key):
        reset_key, act_key = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(reset_key, num_episodes))
        if per_episode_params:
            stacked, index = params
            params = jax.tree.map(lambda p: p[index], stacked)
            single = lambda p, obs, k: policy_fn(p, obs[None], k)[0]
            act = lambda obs, key: jax.vmap(single)(params, obs, jax.random.split(key, num_episodes))
        else:
            act = lambda obs, key: policy_fn(params, obs, key)

        def step(carry, key):
            state, alive = carry
            action = jnp.clip(act(state.obs, key), -1.0, 1.0)
            next_state = jax.vmap(env.step)(state, action)
            reward = jnp.where(alive, next_state.reward, 0.0)
            out = (state.obs, action, reward, state.pipeline_state.q, state.pipeline_state.qd, alive)
            return (next_state, alive & (next_state.done < 0.5)), out

        (last, alive), (obs, actions, rewards, qpos, qvel, alive_before) = jax.lax.scan(
            step, (state, jnp.ones((num_episodes,), bool)), jax.random.split(act_key, max_steps))
        swap = lambda x: jnp.swapaxes(x, 0, 1)
        obs = jnp.concatenate([swap(obs), last.obs[:, None]], 1)
        qpos = jnp.concatenate([swap(qpos), last.pipeline_state.q[:, None]], 1)
        qvel = jnp.concatenate([swap(qvel), last.pipeline_state.qd[:, None]], 1)
        lengths = alive_before.sum(0)
        return obs, swap(actions), swap(rewards), qpos, qvel, lengths, ~alive
    return jax.jit(run)


def _episodes(parts, num_episodes: int, max_steps: int) -> Episodes:
    obs, actions, rewards, qpos, qvel, lengths, terminal = (np.concatenate(x)[:num_episodes] for x in zip(*parts))
    valid = np.arange(max_steps)[None] < lengths[:, None]
    actions = actions * valid[..., None]
    return Episodes(obs.astype(np.float32), actions.astype(np.float32), rewards.astype(np.float32),
                    qpos.astype(np.float32), qvel.astype(np.float32), lengths.astype(np.int64),
                    terminal.astype(bool))


def collect(env, policy_fn: PolicyFn, params: Any, key: jax.Array, num_episodes: int, max_steps: int,
            chunk: int = 100) -> Episodes:
    """`num_episodes` episodes of at most `max_steps` actions, run on device in vmapped `lax.scan`s of `chunk`
    episodes (one compile per env and policy network whatever `num_episodes` is: the last chunk runs in full
    and is truncated; chunk c uses fold_in(key, c)). Entries past an episode's end are zero (observations keep
    the post-termination states)."""
    parts = [jax.device_get(_collector(env, policy_fn, chunk, max_steps)(params, jax.random.fold_in(key, c)))
             for c in range(-(-num_episodes // chunk))]
    return _episodes(parts, num_episodes, max_steps)


def collect_mixture(env, policy_fn: PolicyFn, params_list: list, groups: list[tuple[int, int]], key: jax.Array,
                    max_steps: int, chunk: int) -> list[Episodes]:
    """For each group (policy index, n): n episodes acting with params_list[policy index], all groups in the
    same rollouts of `chunk` episodes (one compile per env, policy network, len(params_list) and chunk; which
    policy each episode uses is an argument). Returns one Episodes per group, in order."""
    for policy, count in groups:
        if not 0 <= policy < len(params_list) or count < 1:
            raise ValueError(f"Group ({policy}, {count}) is out of range: policy indices go up to "
                             f"{len(params_list) - 1} and each group needs at least one episode.")
    stacked = jax.tree.map(lambda *p: np.stack([np.asarray(x) for x in p]), *params_list)
    index = np.concatenate([np.full(count, policy) for policy, count in groups])
    total = len(index)
    padded = np.concatenate([index, np.zeros(-total % chunk, index.dtype)]).astype(np.int32)
    program = _collector(env, policy_fn, chunk, max_steps, per_episode_params=True)
    parts = [jax.device_get(program((stacked, padded[c * chunk:(c + 1) * chunk]), jax.random.fold_in(key, c)))
             for c in range(len(padded) // chunk)]
    every = _episodes(parts, total, max_steps)
    bounds = np.cumsum([0] + [count for _, count in groups])
    return [every.select(slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]


def random_policy(action_dim: int) -> PolicyFn:
    """Uniform actions in [-1, 1] (D4RL's `--random`); params are ignored."""
    return lambda params, obs, key: jax.random.uniform(key, obs.shape[:-1] + (action_dim,), minval=-1.0, maxval=1.0)


# ---------------------------------------------------------------------------------------------- TFDS storage


@dataclasses.dataclass
class OfflineConfig(tfds.core.BuilderConfig):
    env: str = "hopper"
    kind: str = "medium"
    obs_dim: int = 11
    action_dim: int = 3
    nq: int = 6
    nv: int = 6


class OfflineEpisodes(tfds.core.GeneratorBasedBuilder):
    """Episodes handed to the builder in memory (generated on device by `collect`)."""

    VERSION = tfds.core.Version(GENERATOR_VERSION)

    def __init__(self, *, episodes: Episodes | None = None, **kwargs):
        self._episodes = episodes
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{c.env} {c.kind} episodes on MJX (papers.dmpc.data {GENERATOR_VERSION}).",
            features=tfds.features.FeaturesDict({
                "observations": tfds.features.Tensor(shape=(None, c.obs_dim), dtype=np.float32),
                "actions": tfds.features.Tensor(shape=(None, c.action_dim), dtype=np.float32),
                "rewards": tfds.features.Tensor(shape=(None,), dtype=np.float32),
                "qpos": tfds.features.Tensor(shape=(None, c.nq), dtype=np.float32),
                "qvel": tfds.features.Tensor(shape=(None, c.nv), dtype=np.float32),
                "terminal": tfds.features.Scalar(dtype=np.bool_),
                "timeout": tfds.features.Scalar(dtype=np.bool_),
                "episode_id": tfds.features.Scalar(dtype=np.int64),
            }))

    def _split_generators(self, dl_manager):
        if self._episodes is None:
            raise ValueError("OfflineEpisodes builds from episodes passed in memory; use papers.dmpc.data.write_dataset.")
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        e = self._episodes
        for i in range(len(e.lengths)):
            n = int(e.lengths[i])
            yield i, {"observations": e.observations[i, :n + 1], "actions": e.actions[i, :n],
                      "rewards": e.rewards[i, :n], "qpos": e.qpos[i, :n + 1], "qvel": e.qvel[i, :n + 1],
                      "terminal": bool(e.terminal[i]), "timeout": not bool(e.terminal[i]), "episode_id": i}


def write_dataset(episodes: Episodes, env_name: str, kind: str, data_dir: str, manifest: dict[str, Any]) -> str:
    """Writes `<data_dir>/<env>_<kind>` (array_record + manifest.json) atomically: built in a temp dir beside
    it and renamed into place, so a crash never leaves a half-written dataset. Returns the directory."""
    if kind not in KINDS:
        raise ValueError(f"Unknown dataset kind {kind!r}; choose one of {KINDS}.")
    if len(episodes.lengths) == 0:
        raise ValueError("No episodes to write; collect at least one episode first.")
    final = os.path.join(data_dir, f"{env_name}_{kind}")
    os.makedirs(data_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{env_name}_{kind}.", dir=data_dir)
    try:
        config = OfflineConfig(name=f"{env_name}_{kind}", env=env_name, kind=kind,
                               obs_dim=episodes.observations.shape[-1], action_dim=episodes.actions.shape[-1],
                               nq=episodes.qpos.shape[-1], nv=episodes.qvel.shape[-1])
        with tfds_scratch.contained_tempdirs():
            builder = OfflineEpisodes(episodes=episodes, config=config, data_dir=tmp,
                                      file_format=tfds.core.FileFormat.ARRAY_RECORD)
            builder.download_and_prepare()
        built = os.fspath(builder.data_dir)
        # dataset_info.json and features.json carry no timestamps; the data files are hashed for the manifest
        files = {name: file_sha256(os.path.join(built, name)) for name in sorted(os.listdir(built)) if ".array_record" in name}
        returns = episodes.returns
        payload = {
            "generator": "papers.dmpc.data.OfflineEpisodes", "generator_version": GENERATOR_VERSION,
            "env": env_name, "kind": kind, "obs_dim": config.obs_dim, "action_dim": config.action_dim,
            "counts": {"episodes": int(len(returns)), "steps": int(episodes.lengths.sum()),
                       "terminals": int(episodes.terminal.sum())},
            "episode_return": {"mean": float(returns.mean()), "std": float(returns.std()),
                               "min": float(returns.min()), "max": float(returns.max())},
            "files": files, **manifest}
        with open(os.path.join(built, "manifest.json"), "w") as f:
            json.dump(payload, f, indent=1, sort_keys=True)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(built, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_manifest(path: str) -> dict[str, Any]:
    manifest_path = os.path.join(path, "manifest.json")
    if not os.path.exists(manifest_path):
        raise FileNotFoundError(f"No D-MPC dataset at {path} (manifest.json missing); build it with "
                                "papers.dmpc.pipeline.make_datasets or python -m launch.train_dmpc.")
    with open(manifest_path) as f:
        return json.load(f)


def load_dataset(path: str, env_name: str | None = None, kind: str | None = None, obs_dim: int | None = None,
                 action_dim: int | None = None):
    """Random-access episodes (`source[i]` -> dict of numpy arrays), after checking the manifest against
    what the caller expects (a dataset of another env or shape raises one ValueError)."""
    manifest = read_manifest(path)
    expected = {"env": env_name, "kind": kind, "obs_dim": obs_dim, "action_dim": action_dim}
    for key, value in expected.items():
        if value is not None and manifest.get(key) != value:
            raise ValueError(f"Dataset {path} has {key}={manifest.get(key)!r} but {value!r} was expected; "
                             "point to the right dataset or rebuild it.")
    return tfds.builder_from_directory(path).as_data_source(split="train")


def to_episodes(source) -> Episodes:
    """Pads a data source back into an `Episodes` (zeros past each episode's end)."""
    records = [source[i] for i in range(len(source))]
    horizon = max(len(r["actions"]) for r in records)

    def pad(key, extra):
        arrays = [np.asarray(r[key]) for r in records]
        out = np.zeros((len(arrays), horizon + extra) + arrays[0].shape[1:], arrays[0].dtype)
        for i, a in enumerate(arrays):
            out[i, :len(a)] = a
        return out

    return Episodes(pad("observations", 1), pad("actions", 0), pad("rewards", 0), pad("qpos", 1), pad("qvel", 1),
                    np.array([len(r["actions"]) for r in records], np.int64),
                    np.array([bool(r["terminal"]) for r in records]))


def normalized_score(returns, reference: tuple[float, float]) -> np.ndarray:
    """D4RL: 100 (R - R_random) / (R_expert - R_random)."""
    random_return, expert_return = reference
    return 100.0 * (np.asarray(returns) - random_return) / (expert_return - random_return)
