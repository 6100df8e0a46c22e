"""Training segments from episodes: history of H states, the next F actions and F states, a value target.

Segment (episode i, time t) exists when t + F <= length_i. The history is s_{t-H+1..t}, with times before the
episode's start clamped to s_0. The value target is the discounted return from t to the episode's end, plus
`terminal_penalty` discounted to the last step when the episode ended by falling (not by the time limit).
"""

from __future__ import annotations

import numpy as np

from papers.dmpc.data import Episodes


def discounted_returns(episodes: Episodes, discount: float, terminal_penalty: float) -> np.ndarray:
    """G[i, t] = sum_{k >= t} discount^(k-t) r[i, k] (+ penalty at the terminal step), [N, T]."""
    rewards = episodes.rewards.astype(np.float64).copy()
    last = np.maximum(episodes.lengths - 1, 0)
    rows = np.flatnonzero(episodes.terminal & (episodes.lengths > 0))
    rewards[rows, last[rows]] += terminal_penalty
    returns = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + discount * running
        returns[:, t] = running
    return returns.astype(np.float32)


class Segments:
    """All valid (episode, t) pairs of a dataset; `batch(rng, size)` gathers one training batch (numpy)."""

    def __init__(self, episodes: Episodes, history: int, horizon: int, discount: float = 0.99,
                 terminal_penalty: float = -100.0):
        self.episodes, self.history, self.horizon = episodes, history, horizon
        self.returns = discounted_returns(episodes, discount, terminal_penalty)
        starts = [(i, t) for i, n in enumerate(episodes.lengths) for t in range(int(n) - horizon + 1)]
        if not starts:
            raise ValueError(f"No episode has {horizon} steps; lower the planning horizon or collect longer episodes.")
        self.index = np.asarray(starts, np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def gather(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        # one `take` per array on flat (episode * time) rows: 2.8x faster than 2-D fancy indexing at batch 2048
        # (0.68 vs 1.9 ms), which matters when several training seeds draw their batches on the host each step
        i, t = self.index[rows, 0], self.index[rows, 1]
        H, F = self.history, self.horizon
        obs, actions = self.episodes.observations, self.episodes.actions
        window = np.maximum(t[:, None] + np.arange(-H + 1, F + 1)[None], 0)    # history (clamped to s_0), future
        states = obs.reshape(-1, obs.shape[-1]).take((i * obs.shape[1])[:, None] + window, axis=0)
        acts = actions.reshape(-1, actions.shape[-1]).take((i * actions.shape[1] + t)[:, None] + np.arange(F)[None],
                                                           axis=0)
        return {"history": states[:, :H], "actions": acts, "future": states[:, H:],
                "value_target": self.returns.reshape(-1).take(i * self.returns.shape[1] + t)}

    def batch(self, rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
        return self.gather(rng.integers(0, len(self), size))

    def statistics(self, max_rows: int = 100_000, seed: int = 0) -> dict[str, np.ndarray]:
        """Normalisation constants for `models.set_statistics`, from (a sample of) the segments."""
        rows = np.random.default_rng(seed).permutation(len(self))[:max_rows]
        b = self.gather(rows)
        obs_mean = b["history"][:, -1].mean(0)
        obs_std = b["history"][:, -1].std(0) + 1e-3
        norm = lambda x: (x - obs_mean) / obs_std
        delta = norm(b["future"]) - norm(b["history"][:, -1:])
        delta_std = delta.reshape(-1, delta.shape[-1]).std(0) + 1e-3
        return {"obs_mean": obs_mean, "obs_std": obs_std, "delta_std": delta_std,
                # the dynamics denoiser's sample space is delta / delta_std over [F, S]; its range in the data
                # bounds the sampler's x0 (planning.diffusion_states)
                "delta_bound": np.abs(delta / delta_std).max(0).reshape(-1).astype(np.float32),
                "value_mean": np.float32(b["value_target"].mean()), "value_std": np.float32(b["value_target"].std() + 1e-3)}
