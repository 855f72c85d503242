"""A short learning run on images: GRPO's reward rises on the synthetic CLEVR-style counting task.

    python bench/clevr_count.py [--out runs/clevr_count] [--steps 20]     (a few minutes on 2 CPU cores)

Stages (each a real run of the CLIs a user would run, 2 Ray workers on CPU):
  1. model  the demo's tiny Qwen2.5-VL (longrl.demo.tiny_demo_model): a fixed vision tower that reports the
            colour of each quarter of every 14x14 patch, a random-init language model (hidden 128, 2 layers)
  2. data   "How many shapes are in the image?" on 56x56 scenes of 1-6 shapes, one per 14x14 cell
            (longrl.data.synthetic_image; 4 image tokens of 2x2 cells each)
  3. sft    a short CoT-SFT (8 passes over 256 rows, 64 steps) that teaches the answer format
            `<think>I count N shapes.</think><answer>N</answer>` and little of the counting
  4. grpo   GRPO from the merged SFT model on the same task (r1v reward: 0.5 format + 0.5 accuracy)

It prints the reward per GRPO step (reward/overall, reward/accuracy, from grpo/metrics.jsonl) and the mean of the
first and last five steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from longrl.demo import merged, metric_steps, python_cmd, run_stage, tiny_demo_model  # noqa: E402

PIXELS = 56 * 56  # every scene is 56x56: a 4x4 patch grid, 2x2 merged tokens
COMMON = ["data.image_key=images", "data.format_prompt=null", "data.max_prompt_length=128",
          "data.max_response_length=24", f"data.min_pixels={PIXELS}", f"data.max_pixels={PIXELS}", "data.val_files="]
SFT = ["config=configs/sft_video.yaml", "data.sft_response_template=<think>I count {{ answer }} shapes.</think>"
       "<answer>{{ answer }}</answer>", "worker.actor.global_batch_size=32",
       "worker.actor.micro_batch_size_per_device_for_update=16", "worker.actor.micro_batch_size_per_device_for_experience=32",
       "worker.actor.optim.lr=3e-3", "worker.actor.optim.lr_warmup_steps=2", "trainer.total_epochs=8",
       "trainer.val_freq=-1"]
GRPO = ["config=configs/cpu_video.yaml", "data.rollout_batch_size=16", "worker.rollout.n=8",
        "worker.actor.global_batch_size=8", "worker.actor.micro_batch_size_per_device_for_update=32",
        "worker.actor.micro_batch_size_per_device_for_experience=64", "worker.actor.optim.lr=3e-4",
        "algorithm.kl_coef=1e-2", "worker.rollout.limit_images=1", "worker.rollout.limit_videos=0",
        "trainer.save_freq=-1", "trainer.val_freq=-1", "trainer.worker_timeout_s=600"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SFT then GRPO on synthetic image counting; prints the reward curve.")
    parser.add_argument("--out", type=Path, default=Path("runs/clevr_count"))
    parser.add_argument("--steps", type=int, default=20, help="GRPO steps")
    parser.add_argument("--n-train", type=int, default=256)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    from longrl.data.synthetic_image import generate_split

    model = out / "model"
    if not (model / "model.safetensors").is_file():
        tiny_demo_model(model, hidden_size=128, num_layers=2, min_pixels=PIXELS, max_pixels=PIXELS, seed=0)
    train = out / "data" / "train.jsonl"
    if not train.is_file():
        generate_split(out / "data", "train", args.n_train, size=56, seed=0, categories=("count",))
    data = [f"data.train_files={train}"]
    seconds = {}
    if not (out / "sft" / "latest_checkpointed_iteration.txt").is_file():
        seconds["sft"] = run_stage("SFT", python_cmd("-m", "longrl.trainer.sft", *SFT, *COMMON, *data,
                                                     f"worker.actor.model.model_path={model}",
                                                     f"trainer.save_checkpoint_path={out / 'sft'}"),
                                   out / "logs" / "sft.log", 8 * args.n_train // 32, metric_steps(out / "sft"))
    grpo = out / "grpo"
    seconds["grpo"] = run_stage("GRPO", python_cmd("-m", "longrl.trainer.main", *GRPO, *COMMON, *data,
                                                   f"worker.actor.model.model_path={merged(out / 'sft')}",
                                                   f"trainer.save_checkpoint_path={grpo}", f"trainer.max_steps={args.steps}"),
                                out / "logs" / "grpo.log", args.steps, metric_steps(grpo))
    sft = [json.loads(line) for line in (out / "sft" / "metrics.jsonl").read_text().splitlines()]
    print(f"SFT: {len(sft)} steps, actor/sft_loss {sft[0]['actor/sft_loss']:.3f} -> {sft[-1]['actor/sft_loss']:.3f}")
    lines = [json.loads(line) for line in (grpo / "metrics.jsonl").read_text().splitlines()]
    print("step  reward/overall  reward/accuracy  reward/format")
    for line in lines:
        print(f"{line['step']:>4}  {line['reward/overall']:14.3f}  {line['reward/accuracy']:15.3f}  "
              f"{line['reward/format']:13.3f}")
    first, last = lines[:5], lines[-5:]
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    print(f"mean reward/overall, first 5 steps {mean(first, 'reward/overall'):.3f} -> last 5 steps "
          f"{mean(last, 'reward/overall'):.3f}; accuracy {mean(first, 'reward/accuracy'):.3f} -> "
          f"{mean(last, 'reward/accuracy'):.3f}; stage seconds {json.dumps({k: round(v) for k, v in seconds.items()})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
