"""DDPM training loss and samplers (ancestral DDPM, DDIM with stride and eta) as `lax.scan`s.

The denoiser predicts ε (prediction="epsilon", Ho et al. 2020), v = √ᾱ ε - √(1-ᾱ) x0 (prediction="v",
Salimans & Ho 2022) or the clean sample x0 itself (prediction="x0", Diffuser's `predict_epsilon=False` for
locomotion). With v, the network's target at high noise is -x0 itself, so what the condition says about
the clean sample is learned at every noise level; with ε it carries weight √ᾱ/√(1-ᾱ) there, which is ~5e-5 at
the end of a cosine-1000 schedule, and a sampler that starts there commits to a mode nearly at random. With x0
the loss weighs every noise level's clean-sample error alike, as a regression of x0 on (x_t, condition).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from core.diffusion.schedules import NoiseSchedule

EpsFn = Callable[[jax.Array, jax.Array, Any], jax.Array]   # (x_t, t, cond) -> ε, v or x0 (see `prediction`)
PREDICTIONS = ("epsilon", "v", "x0")


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"Unknown diffusion prediction {prediction!r}; choose one of {PREDICTIONS}.")


def x0_and_eps(output: jax.Array, x: jax.Array, alpha_bar: jax.Array, prediction: str = "epsilon"):
    """(x0, ε) at noise level ᾱ from the denoiser's `output` on x_t (ᾱ broadcast against x)."""
    if prediction == "v":
        return jnp.sqrt(alpha_bar) * x - jnp.sqrt(1.0 - alpha_bar) * output, \
            jnp.sqrt(1.0 - alpha_bar) * x + jnp.sqrt(alpha_bar) * output
    if prediction == "x0":
        return output, (x - jnp.sqrt(alpha_bar) * output) / jnp.sqrt(1.0 - alpha_bar)
    return (x - jnp.sqrt(1.0 - alpha_bar) * output) / jnp.sqrt(alpha_bar), output


def _bcast(values: jax.Array, x: jax.Array) -> jax.Array:
    return values.reshape(values.shape + (1,) * (x.ndim - values.ndim))


def q_sample(schedule: NoiseSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε, with t broadcast over x0's leading (batch) dim."""
    alpha_bar = _bcast(schedule.alphas_cumprod[t], x0)
    return jnp.sqrt(alpha_bar) * x0 + jnp.sqrt(1.0 - alpha_bar) * noise


def denoising_loss(eps_fn: EpsFn, schedule: NoiseSchedule, x0: jax.Array, cond: Any,
                   key: jax.Array, prediction: str = "epsilon") -> jax.Array:
    """E_t,ε ||target - eps_fn(x_t, t, cond)||², t uniform over the schedule, target ε, v or x0 (`prediction`);
    x0 has a leading batch dim."""
    _check_prediction(prediction)
    t_key, noise_key = jax.random.split(key)
    t = jax.random.randint(t_key, (x0.shape[0],), 0, schedule.num_steps)
    noise = jax.random.normal(noise_key, x0.shape, x0.dtype)
    target = noise.astype(jnp.float32)
    if prediction == "v":
        alpha_bar = _bcast(schedule.alphas_cumprod[t], x0)
        target = jnp.sqrt(alpha_bar) * noise - jnp.sqrt(1.0 - alpha_bar) * x0.astype(jnp.float32)
    elif prediction == "x0":
        target = x0.astype(jnp.float32)
    predicted = eps_fn(q_sample(schedule, x0, t, noise), t, cond)
    return jnp.mean(jnp.square(predicted.astype(jnp.float32) - target))


def ddpm_sample(eps_fn: EpsFn, schedule: NoiseSchedule, shape: tuple[int, ...], cond: Any,
                key: jax.Array, clip_x0: float | jax.Array | None = None, prediction: str = "epsilon") -> jax.Array:
    """Ancestral sampling with the posterior variance β̃_t (Ho et al. 2020, Alg. 2). clip_x0: as in
    `ddim_sample`; the step then uses the posterior mean written in x0 (Ho et al. eq. 7) with x0 clipped.
    With prediction="v" or "x0" the posterior mean is always written in x0."""
    _check_prediction(prediction)
    init_key, key = jax.random.split(key)
    x = jax.random.normal(init_key, shape)
    betas, alpha_bar = schedule.betas, schedule.alphas_cumprod
    alpha_bar_prev = jnp.concatenate([jnp.ones((1,)), alpha_bar[:-1]])

    def step(x, inputs):
        t, step_key = inputs
        t_batch = jnp.full((shape[0],), t)
        output = eps_fn(x, t_batch, cond).astype(jnp.float32)
        if clip_x0 is None and prediction == "epsilon":
            mean = (x - betas[t] / jnp.sqrt(1.0 - alpha_bar[t]) * output) / jnp.sqrt(1.0 - betas[t])
        else:
            x0, _ = x0_and_eps(output, x, alpha_bar[t], prediction)
            if clip_x0 is not None:
                x0 = jnp.clip(x0, -clip_x0, clip_x0)
            mean = (jnp.sqrt(alpha_bar_prev[t]) * betas[t] * x0
                    + jnp.sqrt(1.0 - betas[t]) * (1.0 - alpha_bar_prev[t]) * x) / (1.0 - alpha_bar[t])
        variance = betas[t] * (1.0 - alpha_bar_prev[t]) / (1.0 - alpha_bar[t])
        noise = jax.random.normal(step_key, shape)
        return mean + jnp.where(t > 0, jnp.sqrt(variance), 0.0) * noise, None

    timesteps = jnp.arange(schedule.num_steps - 1, -1, -1)
    x, _ = jax.lax.scan(step, x, (timesteps, jax.random.split(key, schedule.num_steps)))
    return x


def ddim_sample(eps_fn: EpsFn, schedule: NoiseSchedule, shape: tuple[int, ...], cond: Any, key: jax.Array,
                num_steps: int = 50, eta: float = 0.0, clip_x0: float | jax.Array | None = None,
                prediction: str = "epsilon", x_init: jax.Array | None = None) -> jax.Array:
    """DDIM (Song et al. 2021) over `num_steps` evenly strided timesteps; eta=0 is deterministic given the
    starting noise, `x_init` (of `shape`; default drawn from `key`).

    clip_x0: bound (scalar, or per trailing dimension) on the predicted clean sample, with ε re-derived from the
    clipped x0 ("clip_denoised" of DDPM / Diffuser). Use it when the data are bounded: at the first step of a
    schedule whose ᾱ_T is tiny (cosine over 1000 steps: ᾱ_T ≈ 2e-9), x0 = (x - √(1-ᾱ) ε)/√ᾱ multiplies any
    error in ε by ~2e4, and without the clip that error survives into the sample."""
    _check_prediction(prediction)
    if not 1 <= num_steps <= schedule.num_steps:
        raise ValueError(f"DDIM num_steps must be in [1, {schedule.num_steps}], got {num_steps}.")
    init_key, key = jax.random.split(key)
    if x_init is not None and tuple(x_init.shape) != tuple(shape):
        raise ValueError(f"DDIM x_init has shape {tuple(x_init.shape)}, expected {tuple(shape)}.")
    x = jax.random.normal(init_key, shape) if x_init is None else x_init
    timesteps = jnp.linspace(schedule.num_steps - 1, 0, num_steps).round().astype(jnp.int32)
    previous = jnp.concatenate([timesteps[1:], jnp.array([-1], jnp.int32)])
    alpha_bar = schedule.alphas_cumprod

    def step(x, inputs):
        t, t_prev, step_key = inputs
        output = eps_fn(x, jnp.full((shape[0],), t), cond).astype(jnp.float32)
        a_t = alpha_bar[t]
        a_prev = jnp.where(t_prev >= 0, alpha_bar[jnp.maximum(t_prev, 0)], 1.0)
        x0, eps = x0_and_eps(output, x, a_t, prediction)
        if clip_x0 is not None:
            x0 = jnp.clip(x0, -clip_x0, clip_x0)
            eps = (x - jnp.sqrt(a_t) * x0) / jnp.sqrt(1.0 - a_t)
        sigma = eta * jnp.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
        direction = jnp.sqrt(jnp.maximum(1.0 - a_prev - sigma**2, 0.0)) * eps
        noise = jax.random.normal(step_key, shape)
        return jnp.sqrt(a_prev) * x0 + direction + sigma * noise, None

    x, _ = jax.lax.scan(step, x, (timesteps, previous, jax.random.split(key, num_steps)))
    return x
