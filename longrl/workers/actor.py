"""The policy model on one rank: log-probs of response tokens, and the PPO-style update.

Shapes: B responses on this rank, R = padded response width, V = vocabulary.
The model is an FSDP2 module sharded over the whole world; every rank runs the same code
on its own slice of the batch, and FSDP averages gradients over ranks. With Ulysses sequence
parallelism (worker.actor.ulysses_size > 1) the ranks of one SP group hold the same rows and
each runs 1/sp of every sequence; `padding_free` packs a micro-batch into one row without pads.
Both go through `sp_response_log_probs`, which is also the plain path (sp=1, padded).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch.distributed.tensor import DTensor

from longrl.algorithms import RolloutDrift, aggregate_loss, compute_policy_loss, kl_penalty
from longrl.config import ActorConfig, AlgorithmConfig, OptimConfig
from longrl.models.adapter import TextAdapter
from longrl.models.ulysses_attention import split_media, sp_response_log_probs, ulysses_attention
from longrl.parallel.ulysses import SPGroup
from longrl.protocol import Batch
from longrl.workers.micro_batches import in_batch_order, micro_batches
from longrl.workers.optim import OPTIMIZERS
from longrl.workers.prefix_sharing import shared_prefix_log_probs
from longrl.workers.update import minibatch_updates, on_policy_drift, world_drift_metrics


def response_logits(model: torch.nn.Module, adapter: TextAdapter, batch: Batch, pad_id: int,
                    temperature: float) -> torch.Tensor:
    """Logits that predict each response token, divided by the sampling temperature: [B, R, V].

    The adapter builds the inputs (media included, e.g. a `video_inputs` column) and says where
    each prompt ends once its media placeholders are expanded.
    """
    device = next(model.parameters()).device
    inputs, prompt_lens = adapter.model_inputs(model, batch, pad_id, device)
    logits = model(**inputs, use_cache=False).logits  # [B, L, V]
    width = batch["responses"].shape[1]
    prompt_lens = prompt_lens.to(device)
    # the token at position t is predicted by the logits at t-1
    index = (prompt_lens[:, None] - 1 + torch.arange(width, device=device)).clamp(max=logits.shape[1] - 1)
    picked = torch.gather(logits, 1, index[..., None].expand(-1, -1, logits.shape[-1]))
    return picked.float() / temperature


def token_log_probs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under `logits`: [B, R, V], [B, R] -> [B, R]."""
    return torch.gather(torch.log_softmax(logits, -1), -1, tokens[..., None]).squeeze(-1)


def entropy_of(logits: torch.Tensor) -> torch.Tensor:
    """Per-token entropy of the distributions [B, R, V] -> [B, R]."""
    logp = torch.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1)


NO_SP = SPGroup(0, 1, None)
"""One rank holds whole sequences (no sequence parallelism)."""


def response_log_probs_and_entropy(model: torch.nn.Module, adapter: TextAdapter, batch: Batch, pad_id: int,
                                   temperature: float, sp: SPGroup = NO_SP, padding_free: bool = False,
                                   with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and entropies) of each response token, [B, R] each; junk past a row's end (mask it).

    Every rank of an SP group passes the same rows and gets the same result.
    """
    device = next(model.parameters()).device
    inputs, prompt_lens = adapter.model_inputs(model, batch, pad_id, device)
    rows, media = split_media(inputs)
    return sp_response_log_probs(model, rows, prompt_lens, batch["responses"].shape[1], sp, temperature,
                                 padding_free=padding_free, with_entropy=with_entropy, media=media)


@torch.no_grad()
def response_log_probs(model: torch.nn.Module, adapter: TextAdapter, batch: Batch, pad_id: int,
                       temperature: float, micro_batch_size: int, sp: SPGroup = NO_SP,
                       padding_free: bool = False, share_prompt_prefix: bool = False,
                       dynamic_batching: bool = False) -> torch.Tensor:
    """Log-probs of the response tokens under `model`, micro-batched, zero on padding: [B, R].
    `share_prompt_prefix`: each unique prompt of a micro-batch runs once (sp=1, padded; see prefix_sharing), in
    fixed micro-batches; else `dynamic_batching` packs micro-batches to a token budget (see micro_batches)."""
    model.eval()
    if share_prompt_prefix:
        parts = [shared_prefix_log_probs(model, adapter, mb, pad_id, temperature)[0]
                 for mb in batch.split(micro_batch_size)]
        return torch.cat(parts) * batch["response_mask"]
    micros, rows = micro_batches(batch, micro_batch_size, dynamic_batching, padding_free)
    parts = [response_log_probs_and_entropy(model, adapter, mb, pad_id, temperature, sp, padding_free)[0]
             for mb in micros]
    return in_batch_order(parts, rows, batch["responses"].shape[1]) * batch["response_mask"]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, total_steps: int):
    """AdamW (optim.strategy: fp32 or bf16 moments) + linear warmup, then a constant lr or a cosine decay to
    lr*min_lr_ratio (optim.lr_scheduler_type)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = OPTIMIZERS[cfg.strategy](params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    warmup = cfg.lr_warmup_steps if cfg.lr_warmup_steps is not None else int(cfg.lr_warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.lr_scheduler_type == "constant":
            return 1.0
        floor = cfg.min_lr_ratio or 0.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of optimizer state held on this rank (its shards of AdamW's moments; 0 before the first step)."""
    return sum((t.to_local() if isinstance(t, DTensor) else t).nbytes
               for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor))


class Actor:
    """Log-probs and updates of one FSDP-sharded policy."""

    def __init__(self, model: torch.nn.Module, adapter: TextAdapter, cfg: ActorConfig, algo: AlgorithmConfig,
                 pad_id: int, dp_size: int, total_steps: int, sp: SPGroup = NO_SP,
                 reference: Callable[[], AbstractContextManager[torch.nn.Module]] | None = None,
                 max_response_length: int | None = None, *, responses_per_prompt: int):
        self.model, self.adapter, self.cfg, self.algo = model, adapter, cfg, algo
        # cfg.global_batch_size counts prompts: a mini-batch holds their worker.rollout.n responses each
        self.mini_size = cfg.global_batch_size * responses_per_prompt // dp_size
        self.norm_length = max_response_length  # the constant divisor of loss_avg_mode=seq-mean-token-sum-norm
        self.pad_id, self.sp = pad_id, sp
        self.reference = reference  # the reference policy in a `with` (read only by the exact `full` KL loss)
        self.optimizer, self.lr_scheduler = build_optimizer(model, cfg.optim, total_steps)
        # what LoRA saves: parameters that train (world-wide) against all of them (DTensor.numel is the global one)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.param_counts = {"perf/trainable_params": float(trainable),
                             "perf/params": float(sum(p.numel() for p in model.parameters()))}

    def log_probs(self, batch: Batch, temperature: float) -> torch.Tensor:
        """Log-probs of the response tokens under the current policy: [B, R]."""
        return response_log_probs(self.model, self.adapter, batch, self.pad_id, temperature,
                                  self.cfg.micro_batch_size_per_device_for_experience, self.sp, self.cfg.padding_free,
                                  self.cfg.share_prompt_prefix, self.cfg.dynamic_batching)

    def update(self, batch: Batch, temperature: float) -> dict[str, float]:
        """PPO epochs over mini-batches of global_batch_size x n / dp responses; one optimizer step per mini-batch.

        Without an `old_log_probs` column the update must be on-policy (config.skips_old_log_probs): one epoch of
        one mini-batch takes pi_old from its own forward, detached, and reports the rollout/* drift from it."""
        minis = batch.split(self.mini_size)
        drift = on_policy_drift(batch, len(minis), self.cfg.ppo_epochs)
        # backward too runs inside the block: gradient checkpointing recomputes attention there
        with ulysses_attention(self.model, self.sp):
            stats = minibatch_updates(
                self.model, self.optimizer, self.lr_scheduler, minis, schedule_per_call=True,
                micro_split=self._micro_split, epochs=self.cfg.ppo_epochs,
                loss_avg_mode=self.cfg.loss_avg_mode, max_grad_norm=self.cfg.max_grad_norm,
                micro_loss=lambda micro: self._micro_loss(micro, temperature, drift))
        # an SP group's ranks count alike rows alike: the world's figures stay the ratios they should be
        return {**{f"actor/{k}": v for k, v in stats.items()}, **world_drift_metrics(drift), **self.param_counts,
                "perf/optimizer_state_mb": optimizer_state_bytes(self.optimizer) / 2 ** 20}

    def _micro_split(self, mini: Batch) -> list[Batch]:
        # shared prompt prefixes need a prompt's rows together, as the fixed split keeps them
        dynamic = self.cfg.dynamic_batching and not self.cfg.share_prompt_prefix
        return micro_batches(mini, self.cfg.micro_batch_size_per_device_for_update, dynamic, self.cfg.padding_free)[0]

    def _micro_loss(self, micro: Batch, temperature: float,
                    drift: RolloutDrift | None) -> tuple[torch.Tensor, dict[str, float]]:
        mask = micro["response_mask"].float()
        full_kl = self.algo.use_kl_loss and self.algo.kl_penalty == "full" and self.reference is not None
        if full_kl:  # the exact KL needs both models' whole distributions at every response position
            logits = response_logits(self.model, self.adapter, micro, self.pad_id, temperature)
            log_probs, entropy = token_log_probs(logits, micro["responses"]), entropy_of(logits)
        elif self.cfg.share_prompt_prefix and not self.cfg.model.enable_gradient_checkpointing:
            log_probs, entropy = shared_prefix_log_probs(self.model, self.adapter, micro, self.pad_id, temperature,
                                                         with_entropy=True)
        else:
            log_probs, entropy = response_log_probs_and_entropy(self.model, self.adapter, micro, self.pad_id,
                                                                temperature, self.sp, self.cfg.padding_free,
                                                                with_entropy=True)
        rollout_lp = micro.tensors.get("rollout_log_probs")
        # on-policy (see update): pi_old is this very forward, so the ratio is 1 and the gradient that of the PG loss
        old_log_probs = micro["old_log_probs"] if "old_log_probs" in micro else log_probs.detach()
        if drift is not None:
            drift.add(rollout_lp, old_log_probs, mask)
        loss, stats = compute_policy_loss(log_probs, old_log_probs, micro["advantages"], mask, self.cfg,
                                          rollout_log_probs=rollout_lp, norm_length=self.norm_length)
        if self.cfg.entropy_coef == 0:  # a statistic only
            entropy = entropy.detach()
        entropy = aggregate_loss(entropy, mask, self.cfg.loss_avg_mode, self.norm_length)
        if self.cfg.entropy_coef:
            loss = loss - self.cfg.entropy_coef * entropy
        stats["entropy"] = entropy.item()
        per_token_kl = self._kl_to_reference(micro, log_probs, logits if full_kl else None, temperature)
        if per_token_kl is not None:
            kl = aggregate_loss(per_token_kl, mask, self.cfg.loss_avg_mode, self.norm_length)
            loss = loss + self.algo.kl_coef * kl
            stats["kl_loss"] = kl.item()
            stats["kl_coef"] = self.algo.kl_coef
        return loss, stats

    def _kl_to_reference(self, micro: Batch, log_probs: torch.Tensor, logits: torch.Tensor | None,
                         temperature: float) -> torch.Tensor | None:
        """Per-token KL to the reference for the KL loss ([B, R]), or None when the loss has no KL term.
        With `logits` (kl_penalty=full) it is the exact KL over the vocabulary."""
        if not self.algo.use_kl_loss:
            return None
        if logits is not None:
            with torch.no_grad(), self.reference() as ref_model:
                ref_logits = response_logits(ref_model, self.adapter, micro, self.pad_id, temperature)
            return kl_penalty(torch.log_softmax(logits, -1), torch.log_softmax(ref_logits, -1), "full")
        if "ref_log_probs" not in micro:
            return None
        return kl_penalty(log_probs, micro["ref_log_probs"], self.algo.kl_penalty)
