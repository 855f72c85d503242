"""The Flow-GRPO SDE step with its Gaussian log-prob, and which denoising steps are stochastic (and trained).

Notation (flow_grpo `diffusers_patch/sd3_sde_with_logprob.py`, https://arxiv.org/abs/2505.05470): sigma runs from 1
(noise) to 0 (data) over `num_steps + 1` values; at step i, x is the latent at sigma_i, v the model's velocity
(after CFG), dt = sigma_{i+1} - sigma_i < 0 and a the noise level. The reverse-time SDE that has the flow's
marginals gives a Gaussian step

    s  = a * sqrt(sigma / (1 - sigma))       (at sigma = 1: sigma_1 in the denominator, else s is infinite)
    mu = x * (1 + s^2 dt / (2 sigma)) + v * (1 + s^2 (1 - sigma) / (2 sigma)) * dt
    x' = mu + s * sqrt(-dt) * eps

and its log-density, averaged (not summed) over every non-batch dimension, is the "token log-prob" of the step.
With a = 0 the step is the deterministic Euler (ODE) step x' = x + v dt, which has no density: only the noisy
steps are stored and trained.
"""

from __future__ import annotations

import dataclasses
import math
import random

import torch
from torch import Tensor

from longrl.config import ConfigError


@dataclasses.dataclass
class StepOutput:
    """One SDE step: the next latent, its log-prob `[B]`, the Gaussian's mean and the noise scale s `[B, 1, ...]`."""

    next_latents: Tensor
    log_prob: Tensor
    mean: Tensor
    std: Tensor


def noise_scale(sigmas: Tensor, index: Tensor, noise_level: float) -> Tensor:
    """s at the steps `index` `[B]` -> `[B]` (fp32). At sigma = 1 the denominator uses sigmas[1], as flow_grpo does."""
    sigma = sigmas[index].float()
    denominator = 1 - torch.where(sigma == 1, sigmas[1].float(), sigma)
    return torch.sqrt(sigma / denominator) * noise_level


def sde_step(latents: Tensor, velocity: Tensor, sigmas: Tensor, index: Tensor, noise_level: float,
             next_latents: Tensor | None = None, noise: Tensor | None = None) -> StepOutput:
    """One Flow-GRPO SDE step at the steps `index` (`[B]` long, one per row) from `latents` `[B, ...]`.

    Given `next_latents` it returns their log-prob (training: the stored sample's); otherwise it samples them
    from the standard normal `noise` (shaped as `latents`). Everything is computed in fp32 (bf16 overflows in the mean, as flow_grpo notes).
    """
    x, v = latents.float(), velocity.float()
    shape = (-1,) + (1,) * (x.ndim - 1)
    sigma = sigmas[index].float().view(shape)
    dt = sigmas[index + 1].float().view(shape) - sigma
    s = noise_scale(sigmas, index, noise_level).view(shape)
    mean = x * (1 + s**2 / (2 * sigma) * dt) + v * (1 + s**2 * (1 - sigma) / (2 * sigma)) * dt
    step_std = s * torch.sqrt(-dt)
    if next_latents is None:
        if noise is None:
            raise ValueError("sde_step samples next_latents from `noise`: pass one of next_latents or noise")
        next_latents = mean + step_std * noise.float()
    nxt = next_latents.float().detach()
    log_prob = -((nxt - mean) ** 2) / (2 * step_std**2) - torch.log(step_std) - math.log(math.sqrt(2 * math.pi))
    return StepOutput(next_latents, log_prob.mean(dim=tuple(range(1, log_prob.ndim))), mean, s)


def ode_step(latents: Tensor, velocity: Tensor, sigmas: Tensor, index: int) -> Tensor:
    """The deterministic Euler step x + v * (sigma_{i+1} - sigma_i) (fp32), outside the SDE window."""
    return latents.float() + velocity.float() * (sigmas[index + 1] - sigmas[index]).float()


def sde_window(num_steps: int, size: int | None, window_range: tuple[int, int] | None, schedule: str, rl_step: int,
               seed: int) -> list[int]:
    """The denoising steps sampled with noise and trained, in order; the others are ODE steps.

    size None: full-trajectory Flow-GRPO, every step but the last (sigma_{T-1} -> 0, nearly deterministic).
    schedule 'random' (Flow-GRPO-Fast): a window of `size` steps whose start is drawn uniformly in
    `window_range` [lo, hi) once per RL step (the same draw on every rank: seeded by `seed` and `rl_step`).
    schedule 'sliding' (MixGRPO, https://arxiv.org/abs/2507.21802): the start moves one step per RL step through
    [lo, hi) and wraps around (MixGRPO's roll-back).
    """
    if size is None:
        return list(range(num_steps - 1))
    lo, hi = window_range if window_range is not None else (0, num_steps - size + 1)
    if not (0 <= lo < hi and hi + size - 1 <= num_steps and size >= 1):
        raise ConfigError(f"worker.rollout.sde_window_range=[{lo}, {hi}] with sde_window_size={size} must fit in "
                          f"num_steps={num_steps}: need 0 <= lo < hi and hi + size - 1 <= num_steps")
    if schedule == "random":
        start = random.Random(f"{seed}/{rl_step}").randrange(lo, hi)
    elif schedule == "sliding":
        start = lo + (rl_step - 1) % (hi - lo)
    else:
        raise ConfigError(f"worker.rollout.sde_window_schedule={schedule!r} is unknown; choose random or sliding")
    return list(range(start, start + size))
