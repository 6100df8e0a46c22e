"""Samplers driven by the exact (Bayes-optimal) denoiser of Gaussian data recover the data distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core import diffusion

MEAN = jnp.array([1.5, -2.0, 0.0])
STD = jnp.array([0.5, 1.0, 2.0])


def exact_eps(schedule):
    """E[ε | x_t] for x0 ~ N(MEAN, STD²): b (x_t - a μ) / (a² s² + b²)."""
    def eps_fn(x, t, cond):
        del cond
        a = jnp.sqrt(schedule.alphas_cumprod[t])[:, None]
        b = jnp.sqrt(1.0 - schedule.alphas_cumprod[t])[:, None]
        return b * (x - a * MEAN) / (a**2 * STD**2 + b**2)
    return eps_fn


# The linear schedule needs its standard 1000 steps for ᾱ_T ≈ 0 (x_T pure noise); cosine gets there in 200.
@pytest.mark.parametrize("schedule", [diffusion.linear_schedule(1000), diffusion.cosine_schedule(200)],
                         ids=["linear1000", "cosine200"])
def test_ddpm_and_ddim_recover_gaussian_data(schedule):
    n = 20000  # standard error of the mean: std / 141, so tolerances below are > 4 standard errors
    for sampler in (lambda k: diffusion.ddpm_sample(exact_eps(schedule), schedule, (n, 3), None, k),
                    lambda k: diffusion.ddim_sample(exact_eps(schedule), schedule, (n, 3), None, k, num_steps=200)):
        # DDIM is a first-order ODE solver: at 50 steps its std is ~4% low, at 200 within 1%.
        x = jax.jit(sampler)(jax.random.key(0))
        np.testing.assert_allclose(x.mean(0), MEAN, atol=4.5 * float(STD.max()) / np.sqrt(n) + 0.02)
        np.testing.assert_allclose(x.std(0), STD, rtol=0.03)


def exact_v(schedule):
    """E[v | x_t] = a E[ε | x_t] - b E[x0 | x_t], with E[x0 | x_t] = (x_t - b E[ε | x_t]) / a."""
    def v_fn(x, t, cond):
        a = jnp.sqrt(schedule.alphas_cumprod[t])[:, None]
        b = jnp.sqrt(1.0 - schedule.alphas_cumprod[t])[:, None]
        eps = exact_eps(schedule)(x, t, cond)
        return a * eps - b * (x - b * eps) / a
    return v_fn


def exact_x0(schedule):
    """E[x0 | x_t] = (x_t - b E[ε | x_t]) / a."""
    def x0_fn(x, t, cond):
        a = jnp.sqrt(schedule.alphas_cumprod[t])[:, None]
        b = jnp.sqrt(1.0 - schedule.alphas_cumprod[t])[:, None]
        return (x - b * exact_eps(schedule)(x, t, cond)) / a
    return x0_fn


# (prediction, its exact denoiser, a rival network scored against the same targets, which must lose)
@pytest.mark.parametrize("prediction, exact, rival", [("v", exact_v, exact_eps), ("x0", exact_x0, exact_v)],
                         ids=["v", "x0"])
def test_prediction_samplers_recover_gaussian_data_and_the_loss_prefers_the_exact_denoiser(prediction, exact, rival):
    schedule, n = diffusion.cosine_schedule(200), 20000
    for sampler in (lambda k: diffusion.ddpm_sample(exact(schedule), schedule, (n, 3), None, k, prediction=prediction),
                    lambda k: diffusion.ddim_sample(exact(schedule), schedule, (n, 3), None, k, num_steps=200,
                                                    prediction=prediction)):
        x = jax.jit(sampler)(jax.random.key(0))
        np.testing.assert_allclose(x.mean(0), MEAN, atol=4.5 * float(STD.max()) / np.sqrt(n) + 0.02)
        np.testing.assert_allclose(x.std(0), STD, rtol=0.03)
    x0 = MEAN + STD * jax.random.normal(jax.random.key(1), (4096, 3))
    loss = lambda fn: diffusion.denoising_loss(fn, schedule, x0, None, jax.random.key(2), prediction=prediction)
    assert loss(exact(schedule)) < loss(rival(schedule))
    with pytest.raises(ValueError, match="prediction"):
        diffusion.denoising_loss(exact(schedule), schedule, x0, None, jax.random.key(2), prediction="x_0")


def test_a_wrong_denoiser_is_detected():
    schedule = diffusion.linear_schedule(1000)
    wrong = lambda x, t, c: exact_eps(schedule)(x, t, c) * 0.8
    x = diffusion.ddim_sample(wrong, schedule, (20000, 3), None, jax.random.key(0))
    assert not np.allclose(x.std(0), STD, rtol=0.03)


def test_clipping_x0_stops_the_first_step_amplifying_a_denoiser_error():
    # Bounded data (N(0.3, 0.1²), inside [-1, 1]) and a denoiser 0.02 off everywhere: with the cosine schedule over
    # 1000 steps, DDIM's first x0 estimate divides that error by √ᾱ_T ≈ 5e-5; unclipped, the samples land far
    # outside the data's range; clipped to the range, they stay near the data.
    schedule = diffusion.cosine_schedule(1000)
    mean, std = 0.3, 0.1

    def eps_fn(x, t, cond):
        a = jnp.sqrt(schedule.alphas_cumprod[t])[:, None]
        b = jnp.sqrt(1.0 - schedule.alphas_cumprod[t])[:, None]
        return b * (x - a * mean) / (a**2 * std**2 + b**2) + 0.02

    sample = lambda clip: diffusion.ddim_sample(eps_fn, schedule, (4096, 2), None, jax.random.key(0), num_steps=32,
                                                clip_x0=clip)
    assert float(jnp.abs(sample(None).mean() - mean)) > 1.0
    clipped = sample(1.0)
    assert float(jnp.abs(clipped).max()) <= 1.0
    assert abs(float(clipped.mean()) - mean) < 0.1
    # ancestral DDPM: the x0-form posterior mean with x0 clipped; with the exact denoiser it still recovers the data
    exact = lambda x, t, c: eps_fn(x, t, c) - 0.02
    ddpm = jax.jit(lambda k: diffusion.ddpm_sample(exact, schedule, (8192, 2), None, k, clip_x0=1.0))(jax.random.key(1))
    assert abs(float(ddpm.mean()) - mean) < 0.01 and abs(float(ddpm.std()) - std) < 0.01
    off = jax.jit(lambda k: diffusion.ddpm_sample(eps_fn, schedule, (4096, 2), None, k, clip_x0=1.0))(jax.random.key(1))
    assert abs(float(off.mean()) - mean) < 0.1


def test_denoising_loss_is_lowest_for_the_exact_denoiser():
    schedule = diffusion.cosine_schedule(100)
    x0 = MEAN + STD * jax.random.normal(jax.random.key(1), (4096, 3))
    exact = diffusion.denoising_loss(exact_eps(schedule), schedule, x0, None, jax.random.key(2))
    zero = diffusion.denoising_loss(lambda x, t, c: jnp.zeros_like(x), schedule, x0, None, jax.random.key(2))
    assert exact < zero


def test_bad_step_counts_are_refused():
    with pytest.raises(ValueError, match="at least one step"):
        diffusion.cosine_schedule(0)
    with pytest.raises(ValueError, match="num_steps"):
        diffusion.ddim_sample(lambda x, t, c: x, diffusion.linear_schedule(10), (2, 1), None,
                              jax.random.key(0), num_steps=20)


def test_ddim_starts_from_the_given_noise_and_refuses_a_wrong_shape():
    schedule = diffusion.cosine_schedule(100)
    eps_fn = lambda x, t, cond: 0.5 * x + cond
    key = jax.random.key(0)
    cond = jnp.ones((3, 2))
    default = diffusion.ddim_sample(eps_fn, schedule, (3, 2), cond, key, num_steps=5)
    given = diffusion.ddim_sample(eps_fn, schedule, (3, 2), cond, key, num_steps=5,
                                  x_init=jax.random.normal(jax.random.split(key)[0], (3, 2)))
    np.testing.assert_allclose(given, default, rtol=1e-6)
    shared = diffusion.ddim_sample(eps_fn, schedule, (3, 2), cond, key, num_steps=5, x_init=jnp.ones((3, 2)))
    np.testing.assert_allclose(shared, jnp.broadcast_to(shared[0], (3, 2)), rtol=1e-6)   # eta=0: deterministic
    with pytest.raises(ValueError, match="x_init"):
        diffusion.ddim_sample(eps_fn, schedule, (3, 2), cond, key, num_steps=5, x_init=jnp.ones((1, 2)))
