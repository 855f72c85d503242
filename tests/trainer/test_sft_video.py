"""Video CoT-SFT end to end (tiny Qwen2.5-VL, 2 Ray workers, FSDP, frozen tower), then eval/eval.py on it.

A zero-byte video in the training rows keeps its place in the batch without loss; in the test rows
it is counted and named by the evaluation, which goes on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def add_broken_row(jsonl: Path, split: str) -> None:
    (jsonl.parent / f"videos/{split}-broken.mp4").write_bytes(b"")
    row = json.loads(jsonl.read_text().splitlines()[0])
    with open(jsonl, "a") as f:
        f.write(json.dumps({**row, "problem_id": f"{split}-broken", "videos": [f"videos/{split}-broken.mp4"]}) + "\n")


def run(*cmd: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *cmd], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "RAY_DEDUP_LOGS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def test_video_sft_checkpoint_merges_and_evaluates_with_a_broken_video_named(tmp_path):
    from longrl.data.synthetic_video import generate_split
    from longrl.models.tiny_vl import build_qwen2_5_vl

    model = build_qwen2_5_vl(tmp_path / "model")
    data = tmp_path / "data"
    train = generate_split(data, "train", 7, frames=16)
    test = generate_split(data, "test", 3, frames=16)
    add_broken_row(train, "train")
    add_broken_row(test, "test")
    out = tmp_path / "sft"
    run("-m", "longrl.trainer.sft", "config=configs/sft_video.yaml", f"worker.actor.model.model_path={model}",
        f"data.train_files={train}", "data.val_files=", "worker.actor.global_batch_size=8",
        "worker.actor.micro_batch_size_per_device_for_update=2", "worker.rollout.num_video_frames=16",
        "trainer.total_epochs=2", "trainer.worker_timeout_s=300", f"trainer.save_checkpoint_path={out}")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # 8 rows / 8 per step = 1 step per epoch; each step decodes 8 videos, one of them unusable
    assert [line["step"] for line in lines] == [1, 2]
    assert all(line["video/skipped"] == 1 and line["video/decoded"] == 7 for line in lines)
    assert lines[1]["actor/sft_loss"] < lines[0]["actor/sft_loss"]
    run("scripts/model_merger.py", "--local_dir", str(out / "global_step_2" / "actor"))
    merged = out / "global_step_2" / "actor" / "huggingface"
    assert (merged / "video_preprocessor_config.json").is_file()  # vLLM reads the frame size bounds from it
    run("eval/eval.py", "--model-path", str(merged), "--data-path", f"{data}@test", "--output-dir",
        str(tmp_path / "eval"), "--num-video-frames", "16", "--max-new-tokens", "16", "--dtype", "fp32")
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert (results["num_questions"], results["num_scored"], results["num_failed"]) == (4, 3, 1)
    assert results["failed"][0]["id"] == "test-broken" and "test-broken.mp4" in results["failed"][0]["error"]
