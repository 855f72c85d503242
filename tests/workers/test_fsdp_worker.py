"""Sharding a trained role reads that role's own model section (not the actor's) and its mixed precision."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from longrl.config import load_config
from longrl.models.adapter import adapter_for
from longrl.protocol import Batch
from longrl.workers.actor import response_log_probs_and_entropy
from longrl.workers.critic import load_value_model
from longrl.workers.fsdp_worker import shard


@pytest.fixture
def world_of_one(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_the_critic_is_sharded_with_its_own_gradient_checkpointing_setting(tiny_qwen2, world_of_one):
    cfg = load_config(["worker.actor.model.enable_gradient_checkpointing=false",
                       "worker.critic.model.enable_gradient_checkpointing=true"])
    critic = cfg.worker.critic
    model = shard(load_value_model(str(tiny_qwen2), torch.float32, critic.model.trust_remote_code),
                  adapter_for("qwen2"), cfg, trainable=True, fsdp=critic.fsdp, model_cfg=critic.model)
    assert model.is_gradient_checkpointing
    actor = shard(load_value_model(str(tiny_qwen2), torch.float32), adapter_for("qwen2"), cfg, trainable=True)
    assert not actor.is_gradient_checkpointing


def test_mp_param_dtype_bf16_on_cpu_computes_in_bf16_with_fp32_master_weights_and_gradients(tiny_qwen2, world_of_one):
    adapter = adapter_for("qwen2")
    batch = Batch({"responses": torch.tensor([[7, 8, 9, 10], [11, 12, 13, 14]]), "response_mask": torch.ones(2, 4, dtype=torch.long)},
                  {"prompt_ids": [[3, 4, 5], [6, 5]]})
    log_probs = {}
    for dtype in ("null", "bf16"):  # null: no cast on CPU (the default there)
        cfg = load_config([f"worker.actor.fsdp.mp_param_dtype={dtype}"])
        model = shard(adapter.load(str(tiny_qwen2), torch.float32, False), adapter, cfg, trainable=True)
        lp, _ = response_log_probs_and_entropy(model, adapter, batch, pad_id=0, temperature=1.0)
        lp.sum().backward()
        params = list(model.parameters())
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in params)
        log_probs[dtype] = lp.detach()
    diff = (log_probs["bf16"] - log_probs["null"]).abs().max()
    assert 0 < diff < 0.05  # bf16 matmuls (not identical), close to fp32
