"""GPU check of the hybrid engine with the tiny Qwen2.5-VL on synthetic videos: 3 GRPO steps on one GPU.

A module of its own: the text module's worker group holds the GPU until that module ends.
"""

from __future__ import annotations

import pytest
import ray
import torch

from longrl.config import load_config
from _gpu_run import ONE_GPU, report_steps, three_steps

pytestmark = [pytest.mark.gpu, pytest.mark.e2e,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none is visible here")]


def test_three_grpo_steps_of_tiny_qwen2_5_vl_on_one_gpu(tmp_path_factory):
    from longrl.data.synthetic_video import generate_split
    from longrl.models.tiny_vl import build_qwen2_5_vl
    from longrl.trainer.ray_trainer import RayTrainer

    root = tmp_path_factory.mktemp("gpu_vl")
    model_dir = build_qwen2_5_vl(root / "model")
    train = generate_split(root / "data", "train", 8, frames=64)
    cfg = load_config(["config=configs/cpu_video.yaml", f"worker.actor.model.model_path={model_dir}",
                       f"data.train_files={train}", "data.val_files=", *ONE_GPU,
                       f"trainer.save_checkpoint_path={root / 'run'}"])
    trainer = RayTrainer(cfg)
    try:
        trainer.start_workers()
        report_steps("qwen2_5_vl", three_steps(trainer))
    finally:
        trainer.shutdown()
        ray.shutdown()
