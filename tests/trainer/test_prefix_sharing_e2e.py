"""GRPO on videos with worker.actor.share_prompt_prefix=true: 2 Ray workers, FSDP, vLLM, tiny Qwen2.5-VL.

The shared-prefix log-probs (old and reference) must still be those vLLM sampled with, and a full step
(update included, which shares the prefix too) must train.
"""

from __future__ import annotations

import math

import pytest
import ray
import torch

from longrl.config import load_config
from longrl.data.dataset import rows_to_batch
from longrl.workers.rollout import SamplingSpec

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from longrl.data.synthetic_video import generate_split
    from longrl.models.tiny_vl import build_qwen2_5_vl
    from longrl.trainer.ray_trainer import RayTrainer

    root = tmp_path_factory.mktemp("prefix_sharing")
    model_dir = build_qwen2_5_vl(root / "model")
    train = generate_split(root / "data", "train", 4, frames=64)
    cfg = load_config(["config=configs/cpu_video.yaml", f"worker.actor.model.model_path={model_dir}",
                       f"data.train_files={train}", "data.val_files=", "worker.actor.share_prompt_prefix=true",
                       "trainer.max_steps=1", "trainer.worker_timeout_s=300", "data.shuffle=false",
                       f"trainer.save_checkpoint_path={root / 'run'}"])
    t = RayTrainer(cfg)
    t.start_workers()
    yield t
    t.shutdown()
    ray.shutdown()


def test_shared_prefix_log_probs_match_vllms_and_a_grpo_step_trains(trainer):
    batch = rows_to_batch([trainer.train_set[i] for i in range(4)])
    batch.meta["step"] = 101
    rollout = trainer.workers.generate(batch, SamplingSpec(n=4, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=16))
    rollout = rollout.union(trainer.workers.log_probs(rollout)).union(trainer.workers.ref_log_probs(rollout))
    mask = rollout["response_mask"].bool()
    diff = (rollout["old_log_probs"] - rollout["rollout_log_probs"])[mask].abs().max()
    assert diff < 1e-3, f"shared-prefix trainer vs vLLM log-prob max abs diff {diff}"
    assert (rollout["ref_log_probs"] - rollout["old_log_probs"])[mask].abs().max() < 1e-4  # nothing trained yet
    rollout["advantages"] = torch.randn(rollout["response_mask"].shape) * rollout["response_mask"]
    trainer.workers.update_actor(rollout)  # this step's videos are released by the update
    metrics = trainer.step(1)
    assert all(math.isfinite(metrics[k]) for k in ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm"))
    assert metrics["response_length/max"] > 0
