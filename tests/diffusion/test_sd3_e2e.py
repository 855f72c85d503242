"""Tiny SD3 Flow-GRPO through the one RL loop: 2 Ray workers, FSDP transformer, flow_grpo KL, checkpoints, resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def run(tiny_sd3: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MODEL_PATH": str(tiny_sd3), "PYTHON": sys.executable, "RAY_DEDUP_LOGS": "1"}
    cmd = ["bash", "examples/cpu/sd3_tiny_grpo.sh", f"trainer.save_checkpoint_path={out}", "worker.rollout.num_steps=4",
           "trainer.worker_timeout_s=300", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def test_sd3_grpo_steps_on_two_workers_then_resumes(tiny_sd3, tmp_path):
    out = tmp_path / "run"
    run(tiny_sd3, out, "trainer.max_steps=2")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    for m in lines:
        # the trainer's recomputed log-prob of every stored step equals the sampler's: the PPO ratio starts at 1
        assert m["rollout/log_prob_diff_max"] < 1e-5
        assert m["actor/pg_clipfrac"] == 0.0
        assert m["response_length/mean"] == 3  # 4 steps: every one but the last is noisy and trained
        assert "actor/kl_loss" in m and m["reward/overall"] < 0
    run(tiny_sd3, out, "trainer.max_steps=3")  # resumes at step 2
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]
    assert (out / "global_step_3").is_dir()
