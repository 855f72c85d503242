"""The CPU math example end to end: 2 Ray workers, FSDP actor, vLLM rollouts, checkpoints, exact resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longrl.checkpoint.merger import load_model_weights

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def run_example(tiny_qwen2: Path, math_data: dict, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MODEL_PATH": str(tiny_qwen2), "DATA_DIR": str(math_data["train"].parent),
           "PYTHON": sys.executable, "RAY_DEDUP_LOGS": "1"}
    cmd = ["bash", "examples/cpu/qwen2_math_grpo.sh", f"trainer.save_checkpoint_path={out}", "trainer.save_freq=1",
           "trainer.save_limit=2", "trainer.worker_timeout_s=300", "trainer.val_freq=5",
           "trainer.val_generations_to_log=2", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def metric_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def resumed_run(tiny_qwen2, math_data, tmp_path_factory):
    """3 steps, then the same command with trainer.max_steps=5."""
    out = tmp_path_factory.mktemp("runs") / "resumed"
    first = run_example(tiny_qwen2, math_data, out, "trainer.max_steps=3")
    second = run_example(tiny_qwen2, math_data, out, "trainer.max_steps=5")
    return out, first, second


def test_three_steps_write_metrics_and_checkpoints(resumed_run):
    out, first, _ = resumed_run
    assert "effective config" in first.stdout
    steps = metric_lines(out)
    required = {"step", "reward/overall", "response_length/mean", "actor/pg_loss", "actor/kl_loss",
                "actor/grad_norm", "actor/entropy", "actor/lr", "timing_s/gen", "timing_s/update", "timing_s/step",
                "rollout/log_prob_diff_mean", "rollout/log_prob_diff_max", "rollout/kl_to_old",
                "timing_s/weight_sync", "perf/weight_sync_mb"}
    assert all(required <= set(line) for line in steps)
    # the engine (bf16) and the trainer (fp32) score the same weights: close, not equal
    assert all(0 <= line["rollout/log_prob_diff_mean"] <= line["rollout/log_prob_diff_max"] < 5 for line in steps)
    # every rollout after the first streamed the previous update (or, at step 4, the restored checkpoint) into the
    # engine (workers/lifecycle.py); the first rollout ran on the weights the engine loaded from disk
    assert [line["perf/weight_sync_mb"] > 0 for line in steps] == [False, True, True, True, True]
    # validation runs on the last step; two of its generations are logged
    assert {"val/overall", "val/accuracy", "val/response_length"} <= set(steps[-1])
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["step"] for g in generations][:2] == [3, 3] and "What is" in generations[0]["prompt"]


def test_second_run_resumes_at_step_four_and_keeps_save_limit(resumed_run):
    out, _, second = resumed_run
    assert "resumed from" in second.stderr and "at step 3" in second.stderr
    assert [line["step"] for line in metric_lines(out)] == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in out.glob("global_step_*")) == ["global_step_4", "global_step_5"]
    assert (out / "latest_checkpointed_iteration.txt").read_text().strip() == "5"


def test_resume_is_exact(resumed_run, tiny_qwen2, math_data, tmp_path):
    out, _, _ = resumed_run
    straight = tmp_path / "straight"
    run_example(tiny_qwen2, math_data, straight, "trainer.max_steps=5")
    a = load_model_weights(out / "global_step_5" / "actor" / "model_optim")
    b = load_model_weights(straight / "global_step_5" / "actor" / "model_optim")
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < 1e-5, f"3 + resume 2 differs from 5 straight by {worst}"
    # the weights did move between steps 4 and 5
    c = load_model_weights(straight / "global_step_4" / "actor" / "model_optim")
    assert max((b[k].float() - c[k].float()).abs().max().item() for k in b) > 0


def test_model_merger_cli_writes_a_loadable_hf_dir(resumed_run):
    from transformers import AutoModelForCausalLM

    out, _, _ = resumed_run
    actor = out / "global_step_5" / "actor"
    proc = subprocess.run([sys.executable, "scripts/model_merger.py", "--local_dir", str(actor)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = AutoModelForCausalLM.from_pretrained(actor / "huggingface", dtype=torch.float32)
    weights = load_model_weights(actor / "model_optim")
    assert torch.equal(model.state_dict()["model.embed_tokens.weight"], weights["model.embed_tokens.weight"])
