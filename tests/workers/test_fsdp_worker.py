"""Sharding a trained role reads that role's own model section (not the actor's)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from longrl.config import load_config
from longrl.models.adapter import adapter_for
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
