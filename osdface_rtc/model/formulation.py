"""The OSDFace one-step formulation, shared by the model trained here and the release loader.

ε̂ = UNet(z_L, t, prompt);  x0 = (z_L − sqrt(1−ᾱ_t)·ε̂) / sqrt(ᾱ_t)

ᾱ comes from a diffusers ``DDPMScheduler`` configured like SD-2.1's (scaled-linear betas,
0.00085 → 0.012, 1000 steps). The IDM iterative mode re-noises an estimate to a smaller t and
denoises again: z_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from diffusers import DDPMScheduler

#: SD-2.1's training schedule (the values in its scheduler/scheduler_config.json).
SD21_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
)

#: OSDFace's fixed timestep.
DEFAULT_TIMESTEP = 399


def make_scheduler(**overrides) -> DDPMScheduler:
    cfg = dict(SD21_SCHEDULER)
    cfg.update(overrides)
    return DDPMScheduler(**cfg)


def alpha_bar(scheduler: DDPMScheduler, t: int) -> float:
    """ᾱ_t from the scheduler (float64 precision kept as a Python float)."""
    return float(scheduler.alphas_cumprod[int(t)].double())


def x0_from_eps(z_t: torch.Tensor, eps: torch.Tensor, a_bar: float) -> torch.Tensor:
    """x0 = (z_t − sqrt(1−ᾱ)·ε̂) / sqrt(ᾱ), computed in the dtype of ``z_t``."""
    return (z_t - (1.0 - a_bar) ** 0.5 * eps) / a_bar**0.5


def renoise(x0: torch.Tensor, a_bar: float, noise: torch.Tensor | None = None) -> torch.Tensor:
    """z_t = sqrt(ᾱ)·x0 + sqrt(1−ᾱ)·ε (ε = 0 gives the deterministic DDIM-style re-noise)."""
    z = a_bar**0.5 * x0
    if noise is not None:
        z = z + (1.0 - a_bar) ** 0.5 * noise
    return z


def iterative_timesteps(t0: int, steps: int) -> list[int]:
    """IDM schedule t_k = round(t0·(N−k)/N), k = 0..N−1 (half-up rounding); N=1 gives [t0]."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [int(math.floor(t0 * (steps - k) / steps + 0.5)) for k in range(steps)]


def iterative_denoise(
    z: torch.Tensor,
    eps_fn: Callable[[torch.Tensor, int], torch.Tensor],
    scheduler: DDPMScheduler,
    t0: int = DEFAULT_TIMESTEP,
    steps: int = 1,
) -> torch.Tensor:
    """One-step estimate from the LQ latent, then (IDM) deterministic DDIM re-noise + denoise.

    Step 0 is exactly OSDFace's ``x0 = x0_from_eps(z_L, eps_fn(z_L, t0))``. Each later step k
    re-noises the current x0 to t_k reusing the last ε̂ (``z = √ᾱ·x0 + √(1−ᾱ)·ε̂``, DDIM with
    η = 0) and denoises again, so the whole loop is deterministic.
    """
    x0 = z
    eps: torch.Tensor | None = None
    for k, t in enumerate(iterative_timesteps(t0, steps)):
        a = alpha_bar(scheduler, t)
        z_t = z if k == 0 else renoise(x0, a, eps)
        eps = eps_fn(z_t, t)
        x0 = x0_from_eps(z_t, eps, a)
    return x0
