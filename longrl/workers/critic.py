"""The value model on one rank (PPO with GAE): per-token values, and the clipped value-loss update.

The critic is a token-classification head (one label) on the same backbone as the policy,
initialised from `worker.critic.model.model_path` (default: the actor's checkpoint), sharded
with FSDP like the actor. Text models only. Under Ulysses sequence parallelism it splits each
sequence over the SP group like the actor (`sp_response_values`), padded or padding-free.
"""

from __future__ import annotations

import torch

from longrl.algorithms import compute_value_loss
from longrl.config import CriticConfig
from longrl.models.adapter import TextAdapter, load_pretrained
from longrl.models.ulysses_attention import split_media, sp_response_values, ulysses_attention
from longrl.parallel.ulysses import SPGroup
from longrl.protocol import Batch
from longrl.workers.actor import NO_SP, build_optimizer
from longrl.workers.micro_batches import in_batch_order, micro_batches
from longrl.workers.update import minibatch_updates


def load_value_model(path: str, dtype: torch.dtype, trust_remote_code: bool = False,
                     empty: bool = False) -> torch.nn.Module:
    """A one-label token-classification model: the backbone of `path` with a fresh value head (`empty`: on the
    meta device, see load_pretrained)."""
    from transformers import AutoModelForTokenClassification

    return load_pretrained(AutoModelForTokenClassification, path, empty, num_labels=1, dtype=dtype,
                           attn_implementation="sdpa", trust_remote_code=trust_remote_code)


class Critic:
    def __init__(self, model: torch.nn.Module, adapter: TextAdapter, cfg: CriticConfig, loss_avg_mode: str,
                 pad_id: int, dp_size: int, total_steps: int, sp: SPGroup = NO_SP, padding_free: bool = False,
                 max_response_length: int | None = None, *, responses_per_prompt: int):
        self.model, self.adapter, self.cfg, self.loss_avg_mode = model, adapter, cfg, loss_avg_mode
        self.pad_id, self.sp, self.padding_free = pad_id, sp, padding_free
        self.mini_size = cfg.global_batch_size * responses_per_prompt // dp_size  # global_batch_size counts prompts
        self.norm_length = max_response_length  # the constant divisor of loss_avg_mode=seq-mean-token-sum-norm
        self.optimizer, self.lr_scheduler = build_optimizer(model, cfg.optim, total_steps)

    def _values(self, batch: Batch) -> torch.Tensor:
        # The value of the state before each response token sits where the policy's logits for it sit.
        device = next(self.model.parameters()).device
        inputs, prompt_lens = self.adapter.model_inputs(self.model, batch, self.pad_id, device)
        rows, media = split_media(inputs)
        return sp_response_values(self.model, rows, prompt_lens, batch["responses"].shape[1], self.sp,
                                  self.padding_free, media)

    @torch.no_grad()
    def values(self, batch: Batch) -> torch.Tensor:
        """V(s_t) for every response token, zero on padding: [B, R]."""
        self.model.eval()
        micros, rows = micro_batches(batch, self.cfg.micro_batch_size_per_device_for_experience,
                                     self.cfg.dynamic_batching, self.padding_free)
        values = [self._values(mb) for mb in micros]
        return in_batch_order(values, rows, batch["responses"].shape[1]) * batch["response_mask"]

    def update(self, batch: Batch) -> dict[str, float]:
        """Clipped value regression onto `returns`, in mini-batches of global_batch_size x n / dp responses."""
        def micro_loss(micro: Batch) -> tuple[torch.Tensor, dict[str, float]]:
            return compute_value_loss(self._values(micro), micro["values"], micro["returns"],
                                      micro["response_mask"].float(), self.cfg.cliprange_value, self.loss_avg_mode,
                                      self.norm_length)

        with ulysses_attention(self.model, self.sp):  # backward (checkpoint recomputation) inside the block too
            stats = minibatch_updates(
                self.model, self.optimizer, self.lr_scheduler, batch.split(self.mini_size), schedule_per_call=True,
                micro_split=lambda mini: micro_batches(mini, self.cfg.micro_batch_size_per_device_for_update,
                                                       self.cfg.dynamic_batching, self.padding_free)[0],
                epochs=self.cfg.ppo_epochs,
                loss_avg_mode=self.loss_avg_mode, max_grad_norm=self.cfg.max_grad_norm, micro_loss=micro_loss)
        return {f"critic/{k}": v for k, v in stats.items()}
