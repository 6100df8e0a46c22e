"""Diffusion: noise schedules, the denoising loss and DDPM / DDIM samplers over any denoiser.

A denoiser is `eps_fn(x_t, t, cond) -> predicted noise` (or v, with prediction="v") with integer timesteps t
in [0, T). D-MPC's
action-proposal and dynamics models are such denoisers; samplers are `lax.scan`s so they jit and vmap.
"""

from core.diffusion.schedules import NoiseSchedule, cosine_schedule, linear_schedule
from core.diffusion.samplers import PREDICTIONS, ddim_sample, ddpm_sample, denoising_loss, q_sample, x0_and_eps

__all__ = ["NoiseSchedule", "cosine_schedule", "linear_schedule", "ddim_sample", "ddpm_sample",
           "denoising_loss", "q_sample", "x0_and_eps", "PREDICTIONS"]
