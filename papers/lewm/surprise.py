"""Violation of expectation (LeWM §5.2): latent prediction error along trajectories of the data's policy
(the expert; Reacher's random actions) that are left alone, recoloured, or teleported at the same step; a
paired test across episodes at the perturbation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from scipy import stats

from papers.lewm import data as lewm_data

CONDITIONS = ("unperturbed", "colour", "teleport")


def surprise_curves(model, config: ml_collections.ConfigDict, num_episodes: int = 32, num_frames: int = 12,
                    perturb_frame: int = 6, seed: int = 0) -> np.ndarray:
    """errors[condition, episode, frame] = Σ_d (ẑ_t - z_t)² for frames ≥ history (NaN before)."""
    env = lewm_data.make_env(config)
    fs, h = config.model.frameskip, config.model.history
    if not h <= perturb_frame < num_frames:
        raise ValueError(f"perturb_frame must lie in [history={h}, num_frames={num_frames}).")
    graphdef, state = nnx.split(model)

    def one(state, key):
        model = nnx.merge(graphdef, state)
        traj = lewm_data.voe_rollouts(env, lewm_data.data_policy(config, env), key, num_frames * fs,
                                        perturb_frame * fs)
        frames = traj.frames[:, ::fs][:, :num_frames]                              # [3, F, H, W, C]
        blocks = traj.actions.reshape(3, num_frames, fs * traj.actions.shape[-1])   # block t follows frame t
        z = model.encode(frames)                                                   # [3, F, D]
        errors = [jnp.full((3,), jnp.nan)] * h
        for t in range(h, num_frames):
            pred = model.predict(z[:, t - h:t], blocks[:, t - h:t])[:, -1]
            errors.append(jnp.sum(jnp.square(pred - z[:, t]), -1))
        return jnp.stack(errors, 1)                                                # [3, F]

    keys = jax.random.split(jax.random.key(seed), num_episodes)
    errors = jax.jit(jax.vmap(one, in_axes=(None, 0)))(state, keys)
    return np.asarray(jnp.moveaxis(errors, 0, 1))                                  # [3, E, F]


def paired_tests(errors: np.ndarray, perturb_frame: int = 6) -> dict:
    """Perturbed vs unperturbed error at the perturbation frame, paired over episodes."""
    base = errors[0, :, perturb_frame]
    out = {}
    for index, name in enumerate(CONDITIONS[1:], start=1):
        perturbed = errors[index, :, perturb_frame]
        if np.allclose(perturbed, base):      # no change at all: the tests are undefined, nothing to detect
            out[name] = dict(mean_increase=float(np.mean(perturbed - base)), t_pvalue=1.0, wilcoxon_pvalue=1.0)
            continue
        out[name] = dict(mean_increase=float(np.mean(perturbed - base)),
                         t_pvalue=float(stats.ttest_rel(perturbed, base, alternative="greater").pvalue),
                         wilcoxon_pvalue=float(stats.wilcoxon(perturbed, base, alternative="greater").pvalue))
    return out


def plot(errors: np.ndarray, path: str, perturb_frame: int = 6) -> None:
    import matplotlib          # lazy: matplotlib loads slowly and only plotting needs it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2))
    frames = np.flatnonzero(~np.isnan(errors[0, 0]))          # frames with a full history
    for index, name in enumerate(CONDITIONS):
        ax.plot(frames, errors[index][:, frames].mean(0), "o-", label=name)
    ax.axvline(perturb_frame, color="gray", ls="--", lw=1)
    ax.set_xlabel("frame (frameskip 5)")
    ax.set_ylabel("surprise: latent prediction error")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
