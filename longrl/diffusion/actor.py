"""Flow-GRPO on one rank: sample trajectories with per-step log-probs, recompute them, and the PPO update.

Shapes: B samples on this rank, T = trained (noisy) steps per sample, the sequence axis of the batch; latents are
`[C, H, W]` (images) or `[C, F, H, W]` (videos) per sample. Trajectories (latents before and after each trained
step, the conditioning) stay on the worker that sampled them, keyed by a per-sample `trajectory` id; the driver
gets the decoded pixels and `[B, T]` log-probs only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import zlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from longrl.algorithms import RolloutDrift, aggregate_loss, compute_policy_loss, kl_penalty
from longrl.config import ActorConfig, AlgorithmConfig, RolloutConfig
from longrl.controller.dispatch import PADDING, ROW_INDEX
from longrl.diffusion.pipelines import Cond, DiffusionAdapter
from longrl.diffusion.sde import StepOutput, ode_step, sde_step
from longrl.protocol import Batch
from longrl.workers.update import (even_micro_batches, minibatch_updates, on_policy_drift, placed_minibatches,
                                   world_drift_metrics)


@dataclasses.dataclass
class Trajectory:
    """One sample's trained steps: latents before and after each `[T, ...]`, the step indices `[T]`, and its
    conditioning (one row of each Cond tensor)."""

    latents: Tensor
    next_latents: Tensor
    steps: Tensor
    cond: Cond


Reference = Callable[[], contextlib.AbstractContextManager[torch.nn.Module]]
"""Enters the model that plays the KL reference: a frozen copy, or the trained transformer with its LoRA off."""


def frozen_copy(model: torch.nn.Module) -> Reference:
    """The reference of full-parameter training: a frozen copy of the starting transformer."""
    return lambda: contextlib.nullcontext(model)


def adapters_off(transformer: torch.nn.Module) -> Reference:
    """The reference of LoRA training: the trained transformer itself with its adapters disabled, which is the base
    model exactly (no second copy in memory). They are enabled again on exit, before any backward."""

    @contextlib.contextmanager
    def base() -> Iterator[torch.nn.Module]:
        transformer.disable_adapters()
        try:
            yield transformer
        finally:
            transformer.enable_adapters()

    return base


def _seeded(name: str) -> torch.Generator:
    """A CPU generator seeded by a name (crc32: stable across processes, unlike hash())."""
    return torch.Generator().manual_seed(zlib.crc32(name.encode()))


def sigmas_of(scheduler, num_steps: int) -> Tensor:
    """The `num_steps + 1` sigmas from 1 (noise) to 0 of the pipeline's flow-matching scheduler, set once per
    sampling (Long-RL's port reset it to the 1000-step grid inside every step, so its dt was 100x too small)."""
    scheduler.set_timesteps(num_steps, device="cpu")
    return scheduler.sigmas.float().clone()


class DiffusionActor:
    """Sampling with log-probs, log-prob recomputation and the clipped-ratio update of one transformer."""

    def __init__(self, pipe, adapter: DiffusionAdapter, transformer: torch.nn.Module, rollout: RolloutConfig,
                 actor: ActorConfig, algo: AlgorithmConfig, max_prompt_length: int,
                 optimizer=None, lr_scheduler=None, ref: Reference | None = None):
        self.pipe, self.adapter, self.transformer, self.ref = pipe, adapter, transformer, ref
        self.rollout, self.cfg, self.algo = rollout, actor, algo
        self.max_prompt_length = max_prompt_length
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.sigmas = sigmas_of(pipe.scheduler, rollout.num_steps)
        self.timestep_scale = float(pipe.scheduler.config.num_train_timesteps)  # the transformer's t = sigma x 1000
        self.trajectories: dict[str, Trajectory] = {}

    @property
    def guided(self) -> bool:
        return self.rollout.guidance_scale != 1.0

    def _velocity(self, model: torch.nn.Module, latents: Tensor, steps: Tensor, cond: Cond) -> Tensor:
        timesteps = self.sigmas[steps].to(latents.device) * self.timestep_scale
        return self.adapter.velocity(model, latents, timesteps, cond, self.rollout.guidance_scale)

    # ---- sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, prompts: list[str], keys: list[str], noise_keys: list[str], window: list[int],
               seed: str) -> tuple[Tensor, Tensor]:
        """One sample per row of `prompts`, SDE on the `window` steps and ODE elsewhere; stores each sample's
        trajectory under `keys[row]`. Returns the decoded pixels (uint8) and log-probs `[B, T]`.

        The noise is drawn per row from generators seeded by `seed` and the row's names, never by the rank or the
        row's place: a sample is the same on whichever rank, in whichever batch, it is drawn. The initial noise is
        named by `noise_keys[row]` (Flow-GRPO-Fast: a group's prompt uid, so its members share the noise and the
        ODE prefix and differ inside the window; else the sample's own key), the SDE noise by `keys[row]`."""
        self.transformer.eval()
        device = next(self.transformer.parameters()).device
        unique = list(dict.fromkeys(prompts))  # each prompt encoded once, however many of its samples are here
        encoded = self.adapter.encode(self.pipe, unique, self.max_prompt_length, self.guided)
        where = torch.tensor([unique.index(p) for p in prompts])
        cond = {k: v[where] for k, v in encoded.items()}
        shape = self.adapter.latent_shape(self.pipe, self.rollout)
        rows = len(prompts)
        x = torch.stack([torch.randn(shape, generator=_seeded(f"{seed}/{name}")) for name in noise_keys]).to(device)
        sde_noise = [_seeded(f"{seed}/{key}/sde") for key in keys]
        before, after, log_probs = [], [], []
        for i in range(self.rollout.num_steps):
            steps = torch.full((rows,), i, dtype=torch.long)
            v = self._velocity(self.transformer, x, steps, cond)
            if i in window:
                noise = torch.stack([torch.randn(shape, generator=g) for g in sde_noise]).to(device)
                out = sde_step(x, v, self.sigmas.to(device), steps.to(device), self.rollout.noise_level, noise=noise)
                before.append(x)
                after.append(out.next_latents)
                log_probs.append(out.log_prob)
                x = out.next_latents
            else:
                x = ode_step(x, v, self.sigmas.to(device), i)
        stacked_before, stacked_after = torch.stack(before, 1), torch.stack(after, 1)  # [B, T, ...]
        steps = torch.tensor(window, dtype=torch.long)
        for row, key in enumerate(keys):
            self.trajectories[key] = Trajectory(stacked_before[row], stacked_after[row], steps,
                                                {k: v[row] for k, v in cond.items()})
        return self.adapter.decode(self.pipe, x), torch.stack(log_probs, 1).float().cpu()

    def forget(self) -> None:
        """Drop the stored trajectories (the step is over)."""
        self.trajectories.clear()

    # ---- log-probs --------------------------------------------------------------------------
    def _stored(self, keys) -> list[Trajectory]:
        missing = [k for k in keys if k not in self.trajectories]
        if missing:
            raise KeyError(f"no stored trajectory for samples {missing[:3]} on this worker: log-probs and updates must "
                           f"reach the worker that sampled them (data.rollout_batch_size a multiple of the "
                           f"data-parallel size), within the same RL step")
        return [self.trajectories[k] for k in keys]

    def step_outputs(self, model: torch.nn.Module, keys) -> tuple[StepOutput, int]:
        """The SDE step outputs of `model` on the stored trained steps of `keys`: log_prob `[b*T]`, mean, std; T."""
        trajectories = self._stored(keys)
        t = len(trajectories[0].steps)
        latents = torch.cat([tr.latents for tr in trajectories])
        next_latents = torch.cat([tr.next_latents for tr in trajectories])
        steps = torch.cat([tr.steps for tr in trajectories])
        cond = {k: torch.stack([tr.cond[k] for tr in trajectories]).repeat_interleave(t, 0)
                for k in trajectories[0].cond}
        v = self._velocity(model, latents, steps, cond)
        return sde_step(latents, v, self.sigmas.to(latents.device), steps.to(latents.device), self.rollout.noise_level,
                        next_latents=next_latents), t

    @torch.no_grad()
    def log_probs(self, model: torch.nn.Module, batch: Batch) -> Tensor:
        """Log-probs `[B, T]` of the stored trained steps under `model`, micro-batched."""
        model.eval()
        parts = []
        for micro in batch.split(self.cfg.micro_batch_size_per_device_for_experience):
            out, t = self.step_outputs(model, micro["trajectory"])
            parts.append(out.log_prob.view(-1, t).float().cpu())
        return torch.cat(parts)

    def ref_log_probs(self, batch: Batch) -> Tensor:
        """Log-probs `[B, T]` of the stored trained steps under the reference."""
        assert self.ref is not None, "ref_log_probs called with algorithm.disable_kl=true"
        with self.ref() as ref:
            return self.log_probs(ref, batch)

    # ---- update -----------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        """PPO epochs over the world's mini-batches of global_batch_size x n samples (global_batch_size counts
        prompts, as in Long-RL and EasyR1): optimizer step k trains on the samples of the step's prompts
        k x global_batch_size ... (k+1) x global_batch_size - 1, on whichever ranks they were sampled (the batch's
        ROW_INDEX, from Dispatch.SPLIT_SAMPLES), so the steps and their gradients are those of one process holding
        every sample. The LR schedule advances once per RL step; actor/* and rollout/* metrics. Without
        `old_log_probs` (an on-policy update, config.skips_old_log_probs) pi_old is the update's own forward."""
        minis = placed_minibatches(batch, self.cfg.global_batch_size * self.rollout.n)
        drift = on_policy_drift(batch, len(minis), self.cfg.ppo_epochs)
        micro_size = self.cfg.micro_batch_size_per_device_for_update
        stats = minibatch_updates(self.transformer, self.optimizer, self.lr_scheduler, minis, schedule_per_call=True,
                                  micro_split=lambda mini: even_micro_batches(mini, micro_size),
                                  epochs=self.cfg.ppo_epochs, loss_avg_mode=self.cfg.loss_avg_mode,
                                  max_grad_norm=self.cfg.max_grad_norm,
                                  micro_loss=lambda micro: self._micro_loss(micro, drift))
        return {**{f"actor/{k}": v for k, v in stats.items()}, **world_drift_metrics(drift)}

    def _micro_loss(self, micro: Batch, drift: RolloutDrift | None) -> tuple[Tensor, dict[str, float]]:
        out, t = self.step_outputs(self.transformer, micro["trajectory"])
        device = out.log_prob.device
        log_probs = out.log_prob.view(-1, t)
        mask = micro["response_mask"].to(device).float()
        # on-policy (see update): pi_old is this very forward, so the ratio is 1 and the gradient that of the PG loss
        old_log_probs = micro["old_log_probs"].to(device) if "old_log_probs" in micro else log_probs.detach()
        if drift is not None and micro[ROW_INDEX][0] != PADDING:  # (a micro-batch is all padding or none)
            drift.add(micro["rollout_log_probs"].to(device), old_log_probs, mask)
        loss, stats = compute_policy_loss(log_probs, old_log_probs, micro["advantages"].to(device), mask, self.cfg)
        per_step_kl = self._kl_to_reference(micro, out, log_probs, t)
        if per_step_kl is not None:
            kl = aggregate_loss(per_step_kl, mask, self.cfg.loss_avg_mode)
            loss = loss + self.algo.kl_coef * kl
            stats.update(kl_loss=kl.item(), kl_coef=self.algo.kl_coef)
        return loss, stats

    def _kl_to_reference(self, micro: Batch, out: StepOutput, log_probs: Tensor, t: int) -> Tensor | None:
        """Per-step KL `[b, T]` for the KL loss; flow_grpo's closed form reads both models' step means."""
        if not self.algo.use_kl_loss or self.ref is None:
            return None
        if self.algo.kl_penalty != "flow_grpo":
            return kl_penalty(log_probs, micro["ref_log_probs"].to(log_probs.device), self.algo.kl_penalty)
        with torch.no_grad(), self.ref() as ref:
            ref_out, _ = self.step_outputs(ref, micro["trajectory"])
        rows = log_probs.shape[0]
        scale = out.std.view(-1, 1)  # the same s for both models at a step
        return kl_penalty((out.mean.flatten(1) / scale).view(rows, t, -1),
                          (ref_out.mean.flatten(1) / scale).view(rows, t, -1), "flow_grpo")
