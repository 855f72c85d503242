"""Video and image CoT-SFT end to end (tiny Qwen2.5-VL, 2 Ray workers, FSDP, frozen tower), then eval/eval.py on it.

A zero-byte video in the training rows keeps its place in the batch without loss; in the test rows
it is counted and named by the evaluation, which goes on. Synthetic CLEVR-style image rows (one or two
images) train and are evaluated beside the videos.
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


def add_image_rows(jsonl: Path, n: int, categories: tuple[str, ...]) -> None:
    from longrl.data.synthetic_image import generate_split

    name = f"clevr-{jsonl.stem}-{categories[0]}"
    rows = [json.loads(line) for line in generate_split(jsonl.parent / name, "val", n, categories=categories)
            .read_text().splitlines()]
    with open(jsonl, "a") as f:
        for row in rows:
            row.update(problem_id=f"{name}-{row['problem_id']}", images=[f"{name}/{p}" for p in row["images"]])
            f.write(json.dumps(row) + "\n")


def run(*cmd: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *cmd], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "RAY_DEDUP_LOGS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def test_video_and_image_sft_merges_evaluates_and_image_grpo_starts_from_it(tmp_path):
    from longrl.data.synthetic_video import generate_split
    from longrl.models.tiny_vl import build_qwen2_5_vl

    model = build_qwen2_5_vl(tmp_path / "model")
    data = tmp_path / "data"
    train = generate_split(data, "train", 7, frames=16)
    test = generate_split(data, "test", 3, frames=16)
    add_broken_row(train, "train")
    add_broken_row(test, "test")
    add_image_rows(train, 8, ("count", "count_color", "left_of"))  # rows 8-15: one image each
    add_image_rows(test, 1, ("count",))
    add_image_rows(test, 1, ("more",))  # two images
    out = tmp_path / "sft"
    run("-m", "longrl.trainer.sft", "config=configs/sft_video.yaml", f"worker.actor.model.model_path={model}",
        f"data.train_files={train}", "data.val_files=", "worker.actor.global_batch_size=8",
        "worker.actor.micro_batch_size_per_device_for_update=2", "worker.rollout.num_video_frames=16",
        "trainer.total_epochs=2", "trainer.worker_timeout_s=300", f"trainer.save_checkpoint_path={out}")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # 16 rows / 8 per step = 2 steps per epoch; an epoch decodes 8 videos, one of them unusable, and 8 images
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    for epoch in (lines[:2], lines[2:]):
        totals = {k: sum(line.get(k, 0) for line in epoch) for k in ("video/skipped", "video/decoded", "image/decoded")}
        assert totals == {"video/skipped": 1, "video/decoded": 7, "image/decoded": 8}
    assert lines[2]["actor/sft_loss"] + lines[3]["actor/sft_loss"] < lines[0]["actor/sft_loss"] + lines[1]["actor/sft_loss"]
    run("scripts/model_merger.py", "--local_dir", str(out / "global_step_4" / "actor"))
    merged = out / "global_step_4" / "actor" / "huggingface"
    assert (merged / "video_preprocessor_config.json").is_file()  # vLLM reads the frame size bounds from it
    assert (merged / "preprocessor_config.json").is_file()  # ... and the image size bounds from this one
    run("eval/eval.py", "--model-path", str(merged), "--data-path", f"{data}@test", "--output-dir",
        str(tmp_path / "eval"), "--num-video-frames", "16", "--max-new-tokens", "16", "--dtype", "fp32")
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert (results["num_questions"], results["num_scored"], results["num_failed"]) == (6, 5, 1)
    assert results["failed"][0]["id"] == "test-broken" and "test-broken.mp4" in results["failed"][0]["error"]
    # GRPO on CLEVR-style scenes from the merged SFT model: the CPU image example, 2 steps
    from longrl.data.synthetic import write_clevr_dataset

    clevr = write_clevr_dataset(tmp_path / "clevr", n_train=8, n_val=2)["train"].parent
    grpo = tmp_path / "grpo"
    proc = subprocess.run(["bash", "examples/cpu/qwen2_5_vl_image_grpo.sh", "trainer.max_steps=2",
                           "trainer.worker_timeout_s=300", f"trainer.save_checkpoint_path={grpo}", "trainer.save_freq=-1"],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "RAY_DEDUP_LOGS": "1", "PYTHON": sys.executable, "MODEL_PATH": str(merged),
                               "DATA_DIR": str(clevr)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert f'"model_path": "{merged}"' in proc.stdout  # the effective config: RL starts from the SFT model
    steps = [json.loads(line) for line in (grpo / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in steps] == [1, 2]
    # 4 one-image prompts a step (rollout_batch_size=4), each decoded once and encoded
    assert all(line["image/decoded"] == 4 and line["image/encoded"] >= 4 and 0 <= line["reward/overall"] <= 1
               for line in steps)
