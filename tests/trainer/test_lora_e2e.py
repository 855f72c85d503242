"""examples/cpu/qwen2_math_lora_grpo.sh end to end: 2 Ray workers, FSDP2 on CPU, LoRA adapters on the tiny Qwen2.

One run of 3 steps (a reward whose groups differ, so the adapters move), then a resume from its step-2 checkpoint:
only the adapters train and are checkpointed, the KL to the reference (the base model: adapters disabled, see
tests/checkpoint/test_lora_merge.py) grows as they move, vLLM generates with the merged weights (its log-probs match the trainer's after updates), the resume is
exact, the merger writes the merged model and the adapter alone, and the memory LoRA saves is reported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longrl.checkpoint.merger import ADAPTER_DIR, LORA_CONFIG, load_model_weights
from longrl.checkpoint.sharded import MODEL_OPTIM_DIR

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e
RANK, ALPHA, WORLD = 8, 16, 2  # the example's adapters; 2 workers


def run_lora_example(tiny_qwen2: Path, math_data: dict, out: Path, *overrides: str) -> None:
    env = {**os.environ, "MODEL_PATH": str(tiny_qwen2), "DATA_DIR": str(math_data["train"].parent),
           "PYTHON": sys.executable, "RAY_DEDUP_LOGS": "1"}
    cmd = ["bash", "examples/cpu/qwen2_math_lora_grpo.sh", f"trainer.save_checkpoint_path={out}", "trainer.save_freq=1",
           "trainer.save_limit=3", "trainer.val_freq=-1", "trainer.val_before_train=false",
           "trainer.worker_timeout_s=300", "worker.reward.reward_function=tests/trainer/varied_reward.py:compute_score",
           *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def metrics_by_step(out: Path) -> dict[int, dict]:
    return {m["step"]: m for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "step" in m}


@pytest.fixture(scope="module")
def lora_runs(tiny_qwen2, math_data, tmp_path_factory) -> tuple[Path, Path]:
    """(straight, resumed): 3 steps straight; and the same run resumed from a copy of its step-2 checkpoint."""
    root = tmp_path_factory.mktemp("lora")
    straight, resumed = root / "straight", root / "resumed"
    run_lora_example(tiny_qwen2, math_data, straight, "trainer.max_steps=3")
    shutil.copytree(straight, resumed, ignore=shutil.ignore_patterns("global_step_3"))
    run_lora_example(tiny_qwen2, math_data, resumed, "trainer.max_steps=3")
    return straight, resumed


def test_only_adapters_train_and_the_memory_saved_is_reported(lora_runs, tiny_qwen2):
    from transformers import AutoModelForCausalLM

    straight, _ = lora_runs
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    config = base.config
    base_params = sum(p.numel() for p in base.parameters())
    # rank x (in + out) per adapted linear layer: q, k, v, o, gate, up, down in each layer (not the tied head)
    hidden, kv, mlp = config.hidden_size, config.num_key_value_heads * config.head_dim, config.intermediate_size
    per_layer = RANK * ((hidden + hidden) * 2 + (hidden + kv) * 2 + (hidden + mlp) * 3)
    expected = per_layer * config.num_hidden_layers
    m = metrics_by_step(straight)[1]
    assert m["perf/trainable_params"] == expected and m["perf/params"] == base_params + expected
    # AdamW: two fp32 moments per trained parameter, half of them on each rank (+ a 4-byte step per tensor)
    lora_mb = m["perf/optimizer_state_mb"]
    full_mb = base_params * 8 / WORLD / 2 ** 20  # what full fine-tuning holds per rank
    assert abs(lora_mb - expected * 8 / WORLD / 2 ** 20) < 1e-2 * lora_mb
    print(f"trainable parameters: LoRA {expected} vs full {base_params} ({expected / base_params:.1%}); "
          f"AdamW state per rank: LoRA {lora_mb * 2 ** 10:.1f} KiB vs full {full_mb * 2 ** 10:.1f} KiB "
          f"({full_mb / lora_mb:.1f}x less)")


def test_reference_is_the_base_model_and_vllm_generates_with_the_merged_weights(lora_runs):
    straight, _ = lora_runs
    steps = metrics_by_step(straight)
    # lora_B starts at 0 (policy = base = reference); the updates move the adapters away from the reference
    assert steps[1]["actor/grad_norm"] > 0 and steps[3]["actor/kl_loss"] > 0
    for step in (2, 3):  # after updates: vLLM's log-probs are the trainer's only if it got the merged weights
        assert steps[step]["perf/weight_sync_mb"] > 0
        assert steps[step]["rollout/log_prob_diff_max"] < 1e-4, steps[step]


def test_checkpoints_hold_the_adapters_alone_and_the_resume_is_exact(lora_runs):
    straight, resumed = lora_runs
    a = load_model_weights(straight / "global_step_3" / "actor" / MODEL_OPTIM_DIR)
    b = load_model_weights(resumed / "global_step_3" / "actor" / MODEL_OPTIM_DIR)
    assert a.keys() == b.keys() and all(".lora_A.default." in k or ".lora_B.default." in k for k in a)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-6, f"step 3 resumed from step 2 differs from 3 steps straight by {worst}"
    step2 = load_model_weights(straight / "global_step_2" / "actor" / MODEL_OPTIM_DIR)
    assert max((a[k] - step2[k]).abs().max().item() for k in a) > 0  # the adapters moved in step 3
    assert (straight / "global_step_3" / "actor" / LORA_CONFIG).is_file()


def test_model_merger_writes_the_merged_model_and_the_adapter_alone(lora_runs, tiny_qwen2, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    straight, _ = lora_runs
    target = tmp_path / "merged"
    proc = subprocess.run([sys.executable, "scripts/model_merger.py", "--local_dir",
                           str(straight / "global_step_3" / "actor"), "--target_dir", str(target)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32),
                                        target / ADAPTER_DIR)
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    ids = torch.randint(0, merged.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lp = [torch.log_softmax(m(input_ids=ids).logits.float(), -1) for m in (merged, adapter, base)]
    assert (lp[0] - lp[1]).abs().max().item() < 1e-5
    assert (lp[0] - lp[2]).abs().max().item() > 1e-6  # the trained adapters are in the merged model
