"""VILA end to end: tiny VILA (remote-code layout), synthetic 16-frame videos and CLEVR-style scenes, 2 Ray
workers, FSDP, vLLM on the language model fed prompt embeddings.

One trainer (one worker group) serves every test of this module.
"""

from __future__ import annotations

import json
import math

import pytest
import ray
import torch

from longrl.data.dataset import rows_to_batch
from longrl.protocol import Batch
from longrl.workers.rollout import SamplingSpec

pytestmark = pytest.mark.e2e

SAMPLED = SamplingSpec(n=4, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=16)
FRAMES = 16


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from longrl.config import load_config
    from longrl.data.synthetic_image import generate_split as image_split
    from longrl.data.synthetic_video import generate_split
    from longrl.models.tiny_vila import build_vila
    from longrl.trainer.ray_trainer import RayTrainer

    root = tmp_path_factory.mktemp("vila_grpo")
    model_dir = build_vila(root / "model", "mlp_downsample_2x2_fix", "remote", num_video_frames=FRAMES)
    train = generate_split(root / "data", "train", 8, frames=FRAMES)
    images = [json.loads(line) for line in image_split(root / "data", "val", 4).read_text().splitlines()]
    with open(train, "a") as f:  # rows 8-11: one-image CLEVR-style questions
        for row in images:
            f.write(json.dumps({**row, "videos": []}) + "\n")
    cfg = load_config(["config=configs/cpu_video.yaml", f"worker.actor.model.model_path={model_dir}",
                       "data.vila_model=true", "worker.vila_model=true", "worker.rollout.tokens_per_frame=5",
                       "worker.rollout.limit_images=1", f"worker.rollout.num_video_frames={FRAMES}",
                       f"data.train_files={train}", "data.val_files=", "data.shuffle=false",
                       "worker.actor.optim.lr=0.01", "trainer.max_steps=3", "trainer.worker_timeout_s=300",
                       f"trainer.save_checkpoint_path={root / 'run'}"])
    t = RayTrainer(cfg)
    t.start_workers()
    yield t
    t.shutdown()
    ray.shutdown()


def prompts(trainer, rows: list[int]) -> Batch:
    """Rows of the training set as a batch outside any step: the workers forget their media after generating,
    so the training steps below encode their own."""
    return rows_to_batch([trainer.train_set[i] for i in rows])


@pytest.mark.parametrize("rows", [[0, 1, 2, 3], [8, 9, 10, 11]], ids=["videos", "images"])
def test_actor_log_probs_of_vllms_samples_match_vllms_own(trainer, rows):
    rollout = trainer.workers.generate(prompts(trainer, rows), SAMPLED)
    rollout = rollout.union(trainer.workers.log_probs(rollout))
    mask = rollout["response_mask"].bool()
    assert mask.sum() > 0
    diff = (rollout["old_log_probs"] - rollout["rollout_log_probs"])[mask].abs().max()
    print(f"rows {rows}: max |actor - vLLM| log-prob {diff:.2e} over {int(mask.sum())} tokens")
    assert diff < 1e-3
    trainer.workers.video_stats()  # the pass's counters stay out of the next test's


def test_grpo_three_steps_resume_exactly_and_the_merged_checkpoint_reloads(trainer, tmp_path):
    from longrl.checkpoint.merger import merge
    from longrl.models.vila import VILAForCausalLM

    for step in (1, 2, 3):  # 4 rows a step: videos, videos, images
        trainer.step_count = step
        metrics = trainer.step(step)
        assert metrics["image/encoded" if step == 3 else "video/encoded"] == 4.0  # once per item and step
        assert all(math.isfinite(metrics[k]) for k in ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm"))
        # the engine got the update: its samples' log-probs are the actor's
        assert metrics["rollout/log_prob_diff_max"] < 1e-3, metrics["rollout/log_prob_diff_max"]
        if step == 2:
            trainer.save()
    straight = trainer.workers.full_weights()[0]
    trainer.fresh_start()
    trainer.resume(trainer.checkpoints.latest())
    assert trainer.step_count == 2
    again = trainer.step(3)
    assert again["reward/overall"] == metrics["reward/overall"]
    resumed = trainer.workers.full_weights()[0]
    worst = max((resumed[k] - straight[k]).abs().max().item() for k in straight)
    assert worst < 1e-6, f"step 3 after resuming from step 2 differs from step 3 straight by {worst}"

    trainer.save()
    merged = merge(trainer.checkpoints.latest() / "actor", tmp_path / "merged")
    config = json.loads((merged / "config.json").read_text())
    assert config["model_type"] == "vila" and "auto_map" in config  # VILA's own layout, remote-code form
    model = VILAForCausalLM.from_pretrained(merged)
    state = model.state_dict()
    assert all(torch.equal(state[k], resumed[k]) for k in resumed)
