"""The CoT-SFT worker: one FSDP-sharded policy per rank, trained on reference responses.

Each row is a prompt plus the target response (`responses`, `response_mask`), exactly the
layout of an RL rollout, so the loss reuses the actor's `response_logits`: only the logits that
predict response tokens are ever computed into the loss, and prompt tokens (text and video)
contribute nothing by construction. Checkpoints are the RL ones (global_step_N/actor plus its
huggingface/ metadata), so `merge()` of an SFT checkpoint is a model directory RL starts from.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.distributed as dist

from longrl.config import Config
from longrl.controller.dispatch import Dispatch, verb
from longrl.models.adapter import TextAdapter
from longrl.models.qwen2_5_vl import MEDIA_INPUTS
from longrl.models.ulysses_attention import ulysses_attention
from longrl.models.vision_cache import (describe_media, has_media, max_over_ranks, media_mode, media_refs,
                                         overlong_reason, vision_cache_for)
from longrl.parallel.device import init_distributed, torch_dtype
from longrl.parallel.ulysses import SPGroup, init_sp_groups
from longrl.protocol import Batch
from longrl.workers.actor import NO_SP, build_optimizer, response_log_probs_and_entropy
from longrl.workers.fsdp_worker import load_sharded, model_metadata, save_actor_metadata
from longrl.workers.micro_batches import micro_batches
from longrl.workers.update import minibatch_updates

logger = logging.getLogger(__name__)


def response_nll(model: torch.nn.Module, adapter: TextAdapter, batch: Batch, pad_id: int, sp: SPGroup = NO_SP,
                 padding_free: bool = False) -> torch.Tensor:
    """Negative log-likelihood of each response token, zero on padding: [B, R] (the actor's log-prob path,
    so Ulysses SP and padding-free packing work as in RL)."""
    log_probs, _ = response_log_probs_and_entropy(model, adapter, batch, pad_id, 1.0, sp, padding_free)
    return -log_probs * batch["response_mask"]


def sft_loss(model: torch.nn.Module, adapter: TextAdapter, micro: Batch, pad_id: int, sp: SPGroup = NO_SP,
             padding_free: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean negative log-likelihood of the valid response tokens of `micro`; prompt tokens are never targets.

    Returns the loss and {"sft_loss"}.
    """
    nll = response_nll(model, adapter, micro, pad_id, sp, padding_free)
    loss = nll.sum() / micro["response_mask"].sum().clamp(min=1)
    return loss, {"sft_loss": loss.item()}


class SFTWorker:
    """Policy + optimizer on one rank; verbs: setup, train_step, val_loss, save/load_checkpoint."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    @verb(Dispatch.ALL)
    def setup(self, total_steps: int) -> dict[str, object]:
        """Join the world, load and shard the model, build the optimizer for `total_steps` updates."""
        self.rank, self.world = init_distributed()
        # ranks [k*sp, (k+1)*sp) split each sequence of the same rows (a collective: every rank calls it)
        self.sp = init_sp_groups(self.cfg.worker.actor.ulysses_size)
        model_cfg = self.cfg.worker.actor.model
        self.tokenizer, self.pad_id, self.hf_config, self.adapter = model_metadata(model_cfg)
        dtype = torch_dtype(self.cfg.worker.actor.fsdp.torch_dtype or "fp32")
        self.model = load_sharded(self.adapter, model_cfg.model_path, dtype, self.cfg, trainable=True)
        self.optimizer, self.lr_scheduler = build_optimizer(self.model, self.cfg.worker.actor.optim, total_steps)
        self.vision = vision_cache_for(self.cfg, self.adapter.media_config(self.hf_config),  # None for text models
                                       self.adapter.hears_audio)
        return {"rank": self.rank, "model_type": self.hf_config.model_type}

    @verb(Dispatch.SPLIT_BY_DP)
    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimizer step on this rank's rows (micro-batched); returns actor/* and video/* metrics."""
        actor = self.cfg.worker.actor
        batch = self._with_videos(batch, "update")
        with ulysses_attention(self.model, self.sp):  # backward (checkpoint recomputation) inside the block too
            stats = minibatch_updates(
                self.model, self.optimizer, self.lr_scheduler, [batch],
                micro_split=lambda mini: micro_batches(mini, actor.micro_batch_size_per_device_for_update,
                                                       actor.dynamic_batching, actor.padding_free)[0],
                epochs=1, loss_avg_mode="token",
                max_grad_norm=actor.max_grad_norm,
                micro_loss=lambda micro: sft_loss(self.model, self.adapter, micro, self.pad_id, self.sp,
                                                  actor.padding_free))
        return {**{f"actor/{k}": v for k, v in stats.items()}, **self._video_stats()}

    @verb(Dispatch.SPLIT_BY_DP)
    @torch.no_grad()
    def val_loss(self, batch: Batch) -> Batch:
        """Per row: summed NLL of its response tokens and their count (`nll_sum`, `tokens`, [B])."""
        self.model.eval()
        batch = self._with_videos(batch, "log_probs")
        actor = self.cfg.worker.actor
        sums, counts = [], []
        with ulysses_attention(self.model, self.sp):
            for micro in batch.split(actor.micro_batch_size_per_device_for_experience):
                sums.append(response_nll(self.model, self.adapter, micro, self.pad_id, self.sp,
                                         actor.padding_free).sum(-1))
                counts.append(micro["response_mask"].sum(-1).float())
        self._video_stats()
        return Batch({"nll_sum": torch.cat(sums).cpu(), "tokens": torch.cat(counts).cpu()})

    # ---- checkpoints ------------------------------------------------------------------------
    @verb(Dispatch.ALL)
    def save_checkpoint(self, step_dir: str) -> None:
        """Sharded model + optimizer + scheduler + RNG into step_dir/actor, plus its huggingface/ metadata."""
        from longrl.checkpoint.sharded import save_train_state

        actor_dir = Path(step_dir) / "actor"
        model_cfg = self.cfg.worker.actor.model
        optimizer = None if self.cfg.trainer.save_model_only else self.optimizer
        save_train_state(actor_dir, self.model, optimizer, self.lr_scheduler,
                         trainable_only=model_cfg.lora.rank > 0)
        if self.rank == 0:
            save_actor_metadata(actor_dir, model_cfg, self.hf_config, self.tokenizer)
        dist.barrier()

    @verb(Dispatch.ALL)
    def load_checkpoint(self, step_dir: str) -> None:
        """Restore what save_checkpoint wrote."""
        from longrl.checkpoint.sharded import load_train_state

        load_train_state(Path(step_dir) / "actor", self.model, self.optimizer, self.lr_scheduler,
                         trainable_only=self.cfg.worker.actor.model.lora.rank > 0)

    # ---- videos -----------------------------------------------------------------------------
    def _with_videos(self, batch: Batch, purpose: str) -> Batch:
        """`batch` plus its MEDIA_INPUTS column. A row whose video is unusable or too long keeps its place
        (every rank must run the same number of micro-batches) but loses its video and its loss."""
        if self.vision is None or not has_media(batch):
            return batch
        frozen = self.cfg.worker.actor.model.freeze_vision_tower
        rows = self.vision.row_inputs(media_refs(batch), media_mode(purpose, True, tower_trainable=not frozen),
                                      "actor", lambda video: self.adapter.encode(self.model, video),
                                      max_over_ranks)
        for i, (ids, row) in enumerate(zip(batch["prompt_ids"], rows)):
            reason = row and overlong_reason(ids, row, self.cfg.data.max_prompt_length)  # video tokens on top
            if reason:
                message = f"the prompt with {describe_media(batch, i)} {reason}"
                if not self.cfg.data.filter_overlong_prompts:
                    raise ValueError(f"{message}; raise the limit, lower worker.rollout.num_video_frames or "
                                     f"data.max_pixels, or set data.filter_overlong_prompts=true to skip such rows")
                logger.warning("skipping: %s", message)
                rows[i] = None
        skipped = [row is None for row in rows]
        if any(skipped):
            batch = batch.index(range(len(batch)))  # a copy
            batch["prompt_ids"] = [self.adapter.strip_media(self.hf_config, ids) if skip else ids
                                   for ids, skip in zip(batch["prompt_ids"], skipped)]
            batch["response_mask"] = batch["response_mask"] * ~torch.tensor(skipped)[:, None]
        return batch.union(Batch(objects={MEDIA_INPUTS: [[] if row is None else row for row in rows]}))

    def _video_stats(self) -> dict[str, float]:
        if self.vision is None:
            return {}
        self.vision.clear()  # the batch is done; the next one brings other videos
        return self.vision.take_stats()
