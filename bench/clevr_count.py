"""A short learning run on images: GRPO raises counting accuracy on the synthetic CLEVR-style task.

    python bench/clevr_count.py [--out runs/clevr_count] [--steps 30]     (~12 minutes on 2 CPU cores)

Stages (each a real run of the CLIs a user would run, 2 Ray workers on CPU):
  1. model  the demo's tiny Qwen2.5-VL (longrl.demo.tiny_demo_model, its sizes): a fixed vision tower that reports
            the colour of each quarter of every 14x14 patch, a random-init language model
  2. data   "How many shapes are in the image?" on 28x28 scenes of 1-4 shapes, one per 14x14 cell
            (longrl.data.synthetic_image): the whole scene is one image token whose 4 patches each see one
            whole cell, so the count is a function of that token's features (4 classes, chance 25%)
  3. sft    CoT-SFT on `<think>x - x x makes N shapes.</think><answer>N</answer>`: which cells hold a shape (clean,
            from the solver's listing), then N, a noisy teacher's count: right in (1 - TEACHER_ERROR) of the rows,
            another count otherwise (as the demo's teacher errs)
  4. grpo   GRPO from the merged SFT model (r1v reward: 0.5 format + 0.5 accuracy), 30 steps of 32 prompts x 8,
            two updates of 16 prompts a step at lr 3e-4

Measured (2 CPU cores, shared; SFT 422 s, GRPO 267 s): SFT (32 epochs, 512 steps) loss 6.24 -> 0.122; the SFT
model reads the cells partly (accuracy 0.37 at GRPO step 1, chance 0.25; the noisy teacher caps it near 0.5).
GRPO accuracy, mean +- per-step sd: steps 1-5 0.345 +- 0.043 -> 26-30 0.478 +- 0.050; steps 1-10 0.386 +- 0.058,
11-20 0.443 +- 0.038, 21-30 0.500 +- 0.046 (slope 0.0058 +- 0.0009 per step); reward/overall 0.661 +- 0.026 ->
0.732 +- 0.022 (blocks 0.684, 0.717, 0.745); format stays 0.98-0.99. What did not: 16 SFT epochs left the model
at chance and GRPO rose only ~2 standard errors; lr 5e-4 (updates of 8 prompts) broke the format in one step;
lr 2e-4 with updates of 8 prompts rose (blocks 0.40, 0.46, 0.49) but one step dropped to format 0.63; asking
only "I count N shapes" (no cells) stayed at chance through 20 steps.

It prints the reward per GRPO step (reward/overall, reward/accuracy, from grpo/metrics.jsonl), the mean and the
per-step noise of the first and last five steps, and plots the curves to <out>/curves.png.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from longrl.data.synthetic_image import CELL  # noqa: E402
from longrl.demo import MODEL, merged, metric_steps, python_cmd, run_stage, tiny_demo_model  # noqa: E402

SIZE = 28  # a 2x2 patch grid: one merged image token, one shape per patch
TEACHER_ERROR = 0.5
COMMON = ["data.image_key=images", "data.format_prompt=null", "data.max_prompt_length=64",
          "data.max_response_length=32", f"data.min_pixels={SIZE * SIZE}", f"data.max_pixels={SIZE * SIZE}",
          "data.val_files="]
SFT = ["config=configs/sft_video.yaml", "data.sft_response_template=<think>{{ cells }} makes {{ said }} shapes.</think><answer>{{ said }}</answer>", "worker.actor.global_batch_size=32",
       "worker.actor.micro_batch_size_per_device_for_update=16", "worker.actor.micro_batch_size_per_device_for_experience=32",
       "worker.actor.optim.lr=3e-3", "worker.actor.optim.lr_warmup_steps=5", "trainer.val_freq=-1"]
GRPO = ["config=configs/cpu_video.yaml", "worker.rollout.n=8",
        "worker.actor.global_batch_size=16", "worker.actor.micro_batch_size_per_device_for_update=32",
        "worker.actor.micro_batch_size_per_device_for_experience=64", "algorithm.kl_coef=1e-3",
        "worker.rollout.limit_images=1", "worker.rollout.limit_videos=0",
        "trainer.save_freq=-1", "trainer.val_freq=-1", "trainer.worker_timeout_s=600"]
LISTED = re.compile(r"\(row (\d+), column (\d+)\)")  # "a red square (row 1, column 2)"
CURVES = ["reward/accuracy", "reward/overall", "reward/format", "actor/kl_loss"]


def with_teacher(train: Path, error: float, seed: int = 0) -> None:
    """Add to each row `cells`, which grid cells hold a shape in reading order ("x - x x", from the solver's listing
    in `reasoning`), and `said`, the noisy teacher's count: the true count, or in `error` of the
    rows (exactly, chosen at random) another count of the scene's range."""
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    side = SIZE // CELL
    counts = sorted({int(r["answer"][len("<answer>"):-len("</answer>")]) for r in rows})
    rng = np.random.default_rng(seed)
    erring = set(rng.permutation(len(rows))[: round(error * len(rows))].tolist())
    out = []
    for i, row in enumerate(rows):
        true = int(row["answer"][len("<answer>"):-len("</answer>")])
        said = int(rng.choice([c for c in counts if c != true])) if i in erring else true
        held = {(int(r) - 1) * side + int(c) - 1 for r, c in LISTED.findall(row["reasoning"])}
        if len(held) != true:
            raise ValueError(f"{train}: row {i} lists {len(held)} shapes but its answer is {true}")
        cells = " ".join("x" if k in held else "-" for k in range(side * side))
        out.append(json.dumps({**row, "cells": cells, "said": said}) + "\n")
    train.write_text("".join(out))


def summary(lines: list[dict], key: str) -> str:
    """Mean ± per-step standard deviation of `key` over the first and last five steps."""
    first, last = [r[key] for r in lines[:5]], [r[key] for r in lines[-5:]]
    return (f"{key}: first 5 steps {statistics.mean(first):.3f} ± {statistics.stdev(first):.3f} -> last 5 steps "
            f"{statistics.mean(last):.3f} ± {statistics.stdev(last):.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SFT then GRPO on synthetic image counting; prints the reward curve.")
    parser.add_argument("--out", type=Path, default=Path("runs/clevr_count"))
    parser.add_argument("--steps", type=int, default=30, help="GRPO steps")
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--sft-epochs", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=32, help="GRPO prompts a step (8 samples each)")
    parser.add_argument("--lr", type=float, default=3e-4, help="GRPO learning rate")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    from longrl.data.synthetic_image import generate_split
    from longrl.logging.plots import plot_curves, read_series

    model = out / "model"
    if not (model / "model.safetensors").is_file():
        tiny_demo_model(model, **{**MODEL, "min_pixels": SIZE * SIZE, "max_pixels": SIZE * SIZE})
    train = out / "data" / "train.jsonl"
    if not train.is_file():
        generate_split(out / "data", "train", args.n_train, size=SIZE, seed=0, categories=("count",))
        with_teacher(train, TEACHER_ERROR)
    data = [f"data.train_files={train}"]
    seconds = {}
    if not (out / "sft" / "latest_checkpointed_iteration.txt").is_file():
        seconds["sft"] = run_stage("SFT", python_cmd("-m", "longrl.trainer.sft", *SFT, *COMMON, *data,
                                                     f"trainer.total_epochs={args.sft_epochs}",
                                                     f"worker.actor.model.model_path={model}",
                                                     f"trainer.save_checkpoint_path={out / 'sft'}"),
                                   out / "logs" / "sft.log", args.sft_epochs * args.n_train // 32,
                                   metric_steps(out / "sft"))
    grpo = out / "grpo"
    seconds["grpo"] = run_stage("GRPO", python_cmd("-m", "longrl.trainer.main", *GRPO, *COMMON, *data,
                                                   f"worker.actor.model.model_path={merged(out / 'sft')}",
                                                   f"trainer.save_checkpoint_path={grpo}", f"trainer.max_steps={args.steps}",
                                                   f"worker.actor.optim.lr={args.lr}", f"data.rollout_batch_size={args.prompts}"),
                                out / "logs" / "grpo.log", args.steps, metric_steps(grpo))
    sft = [json.loads(line) for line in (out / "sft" / "metrics.jsonl").read_text().splitlines()]
    print(f"SFT: {len(sft)} steps, actor/sft_loss {sft[0]['actor/sft_loss']:.3f} -> {sft[-1]['actor/sft_loss']:.3f}")
    lines = [json.loads(line) for line in (grpo / "metrics.jsonl").read_text().splitlines()]
    print("step  reward/overall  reward/accuracy  reward/format")
    for line in lines:
        print(f"{line['step']:>4}  {line['reward/overall']:14.3f}  {line['reward/accuracy']:15.3f}  "
              f"{line['reward/format']:13.3f}")
    for key in ("reward/accuracy", "reward/overall"):
        print(summary(lines, key))
    logged = read_series(grpo / "metrics.jsonl")
    png = plot_curves(grpo / "metrics.jsonl", out / "curves.png", [k for k in CURVES if k in logged])
    print(f"stage seconds {json.dumps({k: round(v) for k, v in seconds.items()})}; curves in {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
