"""GPU checks of the hybrid engine with the tiny Qwen2: GRPO steps on one GPU (bf16, vLLM asleep during training),
trainer vs vLLM log-probs in bf16, flash-attn. Each prints a `GPU-SMOKE` line that scripts/gpu_smoke.sh collects.

Skipped with a reason where no CUDA GPU is visible (the CPU suite covers the same code paths on CPU).
"""

from __future__ import annotations

import pytest
import ray
import torch

from longrl.config import load_config
from longrl.workers.rollout import SamplingSpec

from _gpu_run import ONE_GPU, report, report_steps, three_steps

pytestmark = [pytest.mark.gpu, pytest.mark.e2e,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none is visible here")]

@pytest.fixture(scope="module")
def text_trainer(tiny_qwen2, math_data, tmp_path_factory):
    from longrl.trainer.ray_trainer import RayTrainer

    cfg = load_config(["config=configs/cpu_math.yaml", f"worker.actor.model.model_path={tiny_qwen2}",
                       f"data.train_files={math_data['train']}", f"data.val_files={math_data['val']}",
                       "worker.actor.global_batch_size=4", *ONE_GPU,
                       f"trainer.save_checkpoint_path={tmp_path_factory.mktemp('gpu_text')}"])
    trainer = RayTrainer(cfg)
    trainer.start_workers()
    yield trainer
    trainer.shutdown()
    ray.shutdown()


def test_three_grpo_steps_of_tiny_qwen2_on_one_gpu_with_the_engine_asleep_during_training(text_trainer):
    report_steps("qwen2", three_steps(text_trainer))


def test_trainer_and_vllm_log_probs_agree_in_bf16(text_trainer):
    prompts = next(text_trainer.loader)
    prompts.meta["step"] = 99
    spec = SamplingSpec(n=2, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=32)
    batch = text_trainer.workers.generate(prompts, spec)
    batch = batch.union(text_trainer.workers.log_probs(batch))
    mask = batch["response_mask"].bool()
    diff = (batch["old_log_probs"] - batch["rollout_log_probs"])[mask].abs()
    report("logprob_bf16", max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()), tokens=int(mask.sum()))
    assert float(diff.mean()) < 0.05  # bf16 rounding in two different kernels, not a different distribution


def test_flash_attn_is_used_where_installed(tiny_qwen2):
    from longrl.models.adapter import TextAdapter, _has_flash_attn

    if not _has_flash_attn():
        pytest.skip("flash-attn is not installed here: sdpa is used (make install tries to install it on GPU)")
    model = TextAdapter().load(tiny_qwen2, torch.bfloat16)
    assert model.config._attn_implementation == "flash_attention_2"
    report("flash_attn", used=True)
