"""Tiny SD3 images and Wan 9-frame videos through the one RL loop: 3 Flow-GRPO steps on 2 Ray workers (FSDP
transformer, flow_grpo KL, checkpoints), an exact resume of step 3 from step 2's checkpoint, and the last
checkpoint merged into a pipeline directory that `DiffusionPipeline.from_pretrained` loads and samples from.

SD3 runs Long-RL's batch semantics with samples that do not divide by the workers: 3 prompts x 3 images = 9
samples placed 5 + 4 (and a padding copy), one prompt's 3 images per optimizer step (global_batch_size 1), so one
step lies on worker 0, one straddles both and one lies on worker 1 while worker 0 runs padding; the exact resume
checks that this placement, too, is deterministic. SD3 trains every parameter (the reference a frozen copy); Wan
trains LoRA adapters (the reference is the base with
the adapters off; only the adapters are checkpointed; the merge fuses them and writes them alone too). Each run
costs a Ray start-up, so the two training modes share the two families instead of multiplying them; each family x
mode is checked for exact log-probs on one rank in test_actor.py. These are also the runs of
examples/cpu/sd3_tiny_grpo.sh and wan_tiny_grpo.sh (tests/trainer/test_cpu_examples_e2e.py leaves them to it).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e

# family -> (script, fixture, what one sample is, its pixel shape, training-mode overrides, batch overrides)
FAMILIES = {
    "sd3": ("sd3_tiny_grpo", "tiny_sd3", {"height": 32, "width": 32}, (3, 32, 32), [],
            ["data.rollout_batch_size=3", "worker.rollout.n=3", "worker.actor.global_batch_size=1",
             "worker.actor.micro_batch_size_per_device_for_update=2"]),
    "wan_lora": ("wan_tiny_grpo", "tiny_wan", {"height": 16, "width": 16, "num_frames": 9}, (9, 3, 16, 16),
                 ["worker.actor.model.lora.rank=4", "worker.actor.model.lora.alpha=8"], []),
}
# Metrics that measure the machine, not the run: they differ between two runs of the same steps.
MACHINE = ("timing_s/", "perf/", "trainer/")


def run(script: str, model: Path, out: Path, *overrides: str) -> list[dict]:
    env = {**os.environ, "MODEL_PATH": str(model), "PYTHON": sys.executable, "RAY_DEDUP_LOGS": "1"}
    cmd = ["bash", f"examples/cpu/{script}.sh", f"trainer.save_checkpoint_path={out}", "worker.rollout.num_steps=4",
           "trainer.worker_timeout_s=300", "trainer.max_steps=3", "trainer.save_limit=2", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_grpo_steps_on_two_workers_resume_exactly_and_merge_into_a_pipeline_that_samples(family, request, tmp_path):
    from diffusers import DiffusionPipeline

    from longrl.checkpoint.merger import LORA_ADAPTER_DIR, load_model_weights, merge
    from longrl.checkpoint.sharded import MODEL_OPTIM_DIR

    script, fixture, sample_size, pixel_shape, mode, batch = FAMILIES[family]
    model = request.getfixturevalue(fixture)
    lines = run(script, model, tmp_path / "run", *mode, *batch)
    assert [m["step"] for m in lines] == [1, 2, 3]
    for m in lines:
        # the trainer's recomputed log-prob of every stored step equals the sampler's: the PPO ratio starts at 1
        assert m["rollout/log_prob_diff_max"] < 1e-5
        if not batch:  # one on-policy optimizer step per RL step: the ratio stays 1 (with several, later ones move)
            assert m["actor/pg_clipfrac"] == 0.0
        assert m["response_length/mean"] == 3  # 4 steps: every one but the last is noisy and trained
        assert "actor/kl_loss" in m and m["reward/overall"] < 0
    assert lines[-1]["actor/kl_loss"] > 0  # the policy has moved away from the reference

    # step 3 again, resumed from step 2's checkpoint in another directory: the same numbers and weights
    resumed = run(script, model, tmp_path / "resumed", *mode, *batch,
                  f"trainer.load_checkpoint_path={tmp_path / 'run/global_step_2'}")
    assert [m["step"] for m in resumed] == [3]
    for key, value in lines[-1].items():
        if not key.startswith(MACHINE):
            assert resumed[0][key] == pytest.approx(value, abs=1e-5, rel=0), key
    straight = load_model_weights(tmp_path / "run/global_step_3/actor" / MODEL_OPTIM_DIR)
    again = load_model_weights(tmp_path / "resumed/global_step_3/actor" / MODEL_OPTIM_DIR)
    assert straight.keys() == again.keys()
    assert max((straight[k] - again[k]).abs().max().item() for k in straight) < 1e-5

    target = merge(tmp_path / "run/global_step_3/actor", tmp_path / "merged")
    pipe = DiffusionPipeline.from_pretrained(str(target))
    pipe.set_progress_bar_config(disable=True)
    if not mode:
        for name, weight in pipe.transformer.state_dict().items():
            assert torch.equal(weight, straight[name]), name
    else:
        assert all(".lora_A." in k or ".lora_B." in k for k in straight)  # the adapters alone were checkpointed
        # the merged transformer is the base with the adapter (also written alone) fused in, and it has moved
        base = DiffusionPipeline.from_pretrained(str(model)).transformer.state_dict()
        lora = DiffusionPipeline.from_pretrained(str(model))
        lora.load_lora_weights(str(target / LORA_ADAPTER_DIR))
        lora.transformer.fuse_lora()
        lora.transformer.unload_lora()
        fused, merged = lora.transformer.state_dict(), pipe.transformer.state_dict()
        assert fused.keys() == merged.keys() == base.keys()
        assert max((fused[k] - merged[k]).abs().max().item() for k in merged) < 1e-6
        assert any(not torch.equal(base[k], merged[k]) for k in merged)
    out = pipe(prompt="a photo of a red cat", num_inference_steps=2, guidance_scale=1.0, max_sequence_length=16,
               output_type="pt", **sample_size)
    pixels = out.images if family == "sd3" else out.frames
    assert tuple(pixels.shape[1:]) == pixel_shape and torch.isfinite(pixels).all()
