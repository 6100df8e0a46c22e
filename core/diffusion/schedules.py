"""Variance schedules (Ho et al. 2020 linear; Nichol & Dhariwal 2021 cosine) as arrays over T steps."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
    """betas[t] and alphas_cumprod[t] (ᾱ_t) for t = 0..T-1."""

    betas: jax.Array
    alphas_cumprod: jax.Array

    @classmethod
    def from_betas(cls, betas) -> "NoiseSchedule":
        betas = jnp.asarray(betas, jnp.float32)
        return cls(betas=betas, alphas_cumprod=jnp.cumprod(1.0 - betas))

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]


def linear_schedule(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    if num_steps < 1:
        raise ValueError(f"A noise schedule needs at least one step, got {num_steps}.")
    return NoiseSchedule.from_betas(np.linspace(beta_start, beta_end, num_steps))


def cosine_schedule(num_steps: int, offset: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    if num_steps < 1:
        raise ValueError(f"A noise schedule needs at least one step, got {num_steps}.")
    steps = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    alpha_bar = np.cos((steps + offset) / (1 + offset) * np.pi / 2) ** 2
    betas = np.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 0.0, max_beta)
    return NoiseSchedule.from_betas(betas)
