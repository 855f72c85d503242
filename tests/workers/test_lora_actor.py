"""The actor with LoRA adapters: only they move, the exact (`full`) KL loss is taken to the base model (the same
model with its adapters disabled), and the update reports what trains and the optimizer state it holds."""

from __future__ import annotations

import dataclasses

import torch

from longrl.config import LoraConfig, load_config
from longrl.models.lora import adapters_disabled, inject_lora
from longrl.protocol import Batch


def test_only_adapters_move_and_the_full_kl_is_to_the_base_model(tiny_qwen2):
    from longrl.models.adapter import adapter_for
    from longrl.workers.actor import Actor

    cfg = load_config([f"worker.actor.model.model_path={tiny_qwen2}", "algorithm.use_kl_loss=true",
                       "algorithm.kl_penalty=full", "algorithm.kl_coef=0.1", "worker.actor.optim.lr=1e-2"])
    actor_cfg = dataclasses.replace(cfg.worker.actor, global_batch_size=4, micro_batch_size_per_device_for_update=4)
    adapter = adapter_for("qwen2")
    model = inject_lora(adapter.load(str(tiny_qwen2), torch.float32), LoraConfig(rank=4, alpha=8))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    actor = Actor(model, adapter, actor_cfg, cfg.algorithm, 0, 1, 10, reference=lambda: adapters_disabled(model),
                  responses_per_prompt=1)
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(4, 5, dtype=torch.long)
    batch = Batch({"responses": torch.randint(3, 500, (4, 5), generator=g), "response_mask": mask,
                   "advantages": torch.tensor([1.0, -1.0, 0.5, -0.5])[:, None] * mask},
                  {"prompt_ids": [torch.randint(3, 500, (6,), generator=g).tolist() for _ in range(4)]})
    first = actor.update(batch, 1.0)
    second = actor.update(batch, 1.0)
    assert first["actor/kl_loss"] == 0.0  # lora_B starts at 0: the policy is the base model
    assert second["actor/kl_loss"] > 0  # the adapters moved; the reference did not
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trained = {n for n, p in model.named_parameters() if ".lora_" in n}
    assert moved and moved <= trained
    assert all(p.requires_grad == (n in trained) for n, p in model.named_parameters())  # back on after the KL
    lora_params = sum(p.numel() for n, p in model.named_parameters() if n in trained)
    assert second["perf/trainable_params"] == lora_params
    # AdamW: exp_avg and exp_avg_sq in fp32 per trained parameter, plus a 4-byte step per tensor
    assert second["perf/optimizer_state_mb"] * 2 ** 20 == 8 * lora_params + 4 * len(trained)
