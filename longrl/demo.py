"""`make demo`: a tiny Qwen2.5-VL learns synthetic long-video multiple choice by CoT-SFT, then GRPO.

    python3 -m longrl.demo [--out demo_out]

Stages (each a real run of the CLIs a user would run; a stage whose output exists is skipped,
so an interrupted demo continues where it stopped):

  1. model   tiny Qwen2.5-VL (`tiny_demo_model`): random-init language model; a fixed vision tower
             that reports the colour of each quarter of every 14x14 patch in both frames of a
             temporal patch (the stand-in for a pretrained tower, which a random one is not)
  2. data    synthetic LongVideo-Reason-style set: train, val, and a held-out test split
  3. sft     python3 -m longrl.trainer.sft  (configs/sft_video_demo.yaml) + merge
  4. eval    eval/eval.py on the test split (all 200 questions in one generate call)
  5. grpo    python3 -m longrl.trainer.main (configs/demo_grpo_video.yaml) from the merged SFT model
             with vLLM rollouts and the vision cache + merge
  6. eval    eval/eval.py on the test split
  7. control python3 -m longrl.trainer.sft from the SFT model (more SFT, as many rows as GRPO used), with
             its validation loss before its first step and after its last + eval
  8. report  demo_out/report.md (rows with 95% intervals, margins, plateau checks, seconds per stage)
             and demo_out/curves.png

The control runs by default (`--no-control` skips it): an SFT-only run that continues the SFT
checkpoint for as many extra trained responses as GRPO trained on, evaluated the same way. Without it
a gain over SFT could be nothing but more training; the report states GRPO's margin over it.

SFT plateau: SFT's own validation loss, between its last two evaluations, is still inside its cosine
schedule (the learning rate decaying to its floor), so it is shown but not judged. The checks are what
GRPO's budget spent on more SFT (the control) does: to the held-out loss (less than 5% lower: plateaued)
and to held-out accuracy (less than +5 points: plateaued). SFT counts as plateaued when either holds, as
the issue asks ("held-out loss or accuracy"); accuracy is the one the claim rests on: the loss averages
over every token of the reasoning, while accuracy scores the conclusion, where the near miss is. Seed 0:
the control's 120 steps lowered the held-out loss from 0.0405 to 0.0305 (-24.7%, the loss check fails)
while held-out accuracy fell from 29.0% to 23.5% and the near-miss share rose from 59.5% to 67.5% (the
accuracy check holds): more SFT fits the traces better and answers worse.

The task makes the gap one that only a reward on the final answer can close: the teacher's traces list
the shapes correctly but conclude with a near miss on 60% of the training rows (TASK.teacher_error), so
the imitation optimum puts 60% on the near miss and greedy decoding answers it; training longer only
fits that better. Measured (seed 0, 200 test questions): the SFT model answers the near miss on 59.5%
(29.0% correct); the control, 120 more SFT steps, on 67.5% (23.5% correct); 31% of GRPO's first sampled
responses are correct, enough reward signal to bring the near misses down to 35% (47.5% correct after
30 steps, +24.0 points over the control, 95% interval +14.3..+33.7).

Splits: val and test are drawn by the same generator and Task (correct reasoning, categories and
letters balanced), from their own random streams. Val has 100 questions: the binomial standard error
of an accuracy near 50% on 100 questions is 5 points, so the validation curve follows the test
accuracy within about +-10 points (95%), small enough to see a 10-point gain, while a validation pass
with vLLM stays under a minute (32 questions, as before, had a 9-point standard error and once scored
the SFT model 19% against 40% on test; with 100, seed 0 scored SFT 33% on val against 29% on test, and
GRPO 50% against 47.5%).

`--seeds N` runs the whole demo for seeds 0..N-1 (data, model initialisation, shuffles, rollouts) in
<out>/seed_<k> and writes <out>/seeds.md: every model's accuracy and every margin, per seed, with mean,
standard deviation and range.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from longrl.data.synthetic_video import Task

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]

# The task and model sizes, tuned so that the whole demo fits 20 minutes on 2 CPU cores.
TASK = Task(categories=("count", "order", "after"), kinds=("square",), timestamps=False, shape_radius=0.2,
            max_shapes=3, teacher_error=0.6)
DATA = dict(frames=32, size=28, n_train=1600, n_val=100, n_test=200, fps=8.0, seed=0)
MODEL = dict(hidden_size=256, num_layers=4, min_pixels=28 * 28, max_pixels=28 * 28 * 16, seed=0)
FRAME_OVERRIDES = [f"worker.rollout.num_video_frames={DATA['frames']}", f"data.min_pixels={MODEL['min_pixels']}",
                   f"data.max_pixels={MODEL['max_pixels']}"]
# every test question in one generate call: the engine decodes all 200 together instead of 4 batches of 64
EVAL_ARGS = ["--num-video-frames", str(DATA["frames"]), "--max-new-tokens", "192", "--dtype", "fp32",
             "--format-prompt", "none", "--batch-size", str(DATA["n_test"])]


class DemoError(RuntimeError):
    """A stage failed; the message names its log file."""


# ---------------------------------------------------------------------------------------------
# the tiny model
# ---------------------------------------------------------------------------------------------
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def colour_tower(model) -> None:
    """Set the vision tower so each video token says which colours lie where in its frames.

    Per 14x14 patch and frame of a temporal patch, the patch embedding averages each colour channel
    over each 7x7 quarter (3 x 2 x 4 = 24 numbers); the first block's MLP bias maps black to zero; the
    blocks otherwise pass their input through; the merger copies the 4 patches of a merged token into
    the first 96 dimensions of the language model's embedding. A real Qwen2.5-VL has a pretrained
    tower that sees colours and positions; a random tiny one hides them in noise (a linear probe reads
    a video's first colour from it at 36% (7 colours), a 4-layer language model not at all).
    """
    import torch

    vision = model.model.visual
    cfg = model.config.vision_config
    patch, frames, dim = cfg.patch_size, cfg.temporal_patch_size, cfg.hidden_size
    half, used = patch // 2, 3 * cfg.temporal_patch_size * 4
    with torch.no_grad():
        weight = torch.zeros(dim, 3, frames, patch, patch)
        for c in range(3):
            for t in range(frames):
                for q in range(4):
                    y, x = divmod(q, 2)
                    weight[(c * frames + t) * 4 + q, c, t, y * half:(y + 1) * half, x * half:(x + 1) * half] = half ** -2
        vision.patch_embed.proj.weight.copy_(weight)
        for i, block in enumerate(vision.blocks):
            for layer in (block.attn.proj, block.mlp.down_proj):
                layer.weight.zero_()
                layer.bias.zero_()
            if i == 0:  # normalised black is -mean/std per channel: add it back
                for c in range(3):
                    block.mlp.down_proj.bias[c * frames * 4:(c + 1) * frames * 4] = CLIP_MEAN[c] / CLIP_STD[c]
        merger = vision.merger
        merger.ln_q.weight.fill_(1.0)
        merger.mlp[0].weight.copy_(torch.eye(merger.hidden_size))
        merger.mlp[0].bias.zero_()
        merger.mlp[2].weight.zero_()
        merger.mlp[2].bias.zero_()
        for k in range(cfg.spatial_merge_size ** 2):
            for f in range(used):
                merger.mlp[2].weight[k * used + f, k * dim + f] = 1.0


def tiny_demo_model(out_dir: Path, hidden_size: int, num_layers: int, min_pixels: int, max_pixels: int,
                    seed: int) -> Path:
    """The demo's tiny Qwen2.5-VL: language model initialised like transformers does (std 0.02), colour tower."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from longrl.models.tiny_vl import build_qwen2_5_vl

    build_qwen2_5_vl(out_dir, seed=seed, hidden_size=hidden_size, num_layers=num_layers, min_pixels=min_pixels,
                     max_pixels=max_pixels)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(out_dir, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith("model.visual") and param.ndim >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    colour_tower(model)
    model.save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------
def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


def count_lines(path: Path) -> int:
    """Lines of a jsonl file that is being written (0 while it does not exist)."""
    try:
        with open(path) as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def run_stage(name: str, cmd: list[str], log: Path, total: int, progress: Callable[[], int]) -> float:
    """Run `cmd` with its output in `log`, showing a progress bar fed by `progress()`; returns seconds taken."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = {**os.environ, "RAY_DEDUP_LOGS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as out, tqdm(total=total, desc=f"{name:<10}", dynamic_ncols=True) as bar:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            while proc.poll() is None:
                time.sleep(2.0)
                bar.n = min(total, progress())
                bar.refresh()
        finally:  # interrupted (Ctrl-C, an error): stop the stage, which is not ours to leave running
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
        bar.n = min(total, progress())
        bar.refresh()
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise DemoError(f"stage {name!r} failed with exit code {proc.returncode}; its log is {log}:\n{tail}")
    return time.perf_counter() - start


def latest_actor(run_dir: Path) -> Path:
    """global_step_N/actor of a run's latest checkpoint."""
    step = (run_dir / "latest_checkpointed_iteration.txt").read_text().strip()
    return run_dir / f"global_step_{step}" / "actor"


def merged(run_dir: Path) -> Path:
    """The Hugging Face directory of a run's latest checkpoint (merged once)."""
    from longrl.checkpoint.merger import merge

    actor = latest_actor(run_dir)
    hf = actor / "huggingface"
    if not (hf / "model.safetensors").is_file():
        merge(actor)
    return hf


def metric_steps(run_dir: Path) -> Callable[[], int]:
    return lambda: count_lines(run_dir / "metrics.jsonl")


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def write_data(out_dir: Path, frames: int, size: int, n_train: int, n_val: int, n_test: int, fps: float,
               seed: int) -> dict[str, Path]:
    """The synthetic set (TASK), each row with its question also under `question` (the prompt key), so that
    the reward function receives `problem`, with the options it needs to grade an answer given as option
    text, and with `concluded`, the text of the option its reasoning concludes with (the SFT target)."""
    from longrl.data.synthetic_video import generate_dataset

    paths = generate_dataset(out_dir, frames, n_train, n_val, n_test, size, fps, seed, TASK)
    for path in paths.values():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({**row, "question": row["problem"], "concluded": concluded(row)}) + "\n"
                                for row in rows))
    return paths


def concluded(row: dict) -> str:
    """The text of the option a row's reasoning ends with ("... The answer is B." -> "blue square")."""
    letter = row["reasoning"].rstrip(".")[-1]
    return row["options"]["ABCD".index(letter)][3:]


# ---------------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------------
def data_overrides(data: dict[str, Path]) -> list[str]:
    return [f"data.train_files={data['train']}", f"data.val_files={data['val']}", "data.prompt_key=question",
            *FRAME_OVERRIDES]


def seed_overrides(seed: int) -> list[str]:
    """The training runs' shuffles and sampling for demo seed `seed` (seed 0 keeps the configs' value 1)."""
    return [f"data.seed={seed + 1}", f"worker.rollout.seed={seed + 1}"]


def sft_stage(out: Path, model: Path, data: dict[str, Path], extra: list[str]) -> float:
    run = out / "sft"
    cmd = python_cmd("-m", "longrl.trainer.sft", "config=configs/sft_video_demo.yaml", f"worker.actor.model.model_path={model}",
                     f"trainer.save_checkpoint_path={run}", *data_overrides(data), *extra)
    return run_stage("SFT", cmd, out / "logs" / f"{run.name}.log", total=sft_steps(data["train"], extra),
                     progress=metric_steps(run))


def sft_steps(train: Path, extra: list[str]) -> int:
    from longrl.config import load_config

    cfg = load_config(["config=configs/sft_video_demo.yaml", *extra])
    return cfg.trainer.max_steps or cfg.trainer.total_epochs * (count_lines(train) // cfg.worker.actor.global_batch_size)


def grpo_stage(out: Path, start: Path, data: dict[str, Path], extra: list[str]) -> float:
    from longrl.config import load_config

    run = out / "grpo"
    args = ["config=configs/demo_grpo_video.yaml", f"worker.actor.model.model_path={start}",
            f"trainer.save_checkpoint_path={run}", *data_overrides(data), *extra]
    steps = load_config(args).trainer.max_steps
    return run_stage("GRPO", python_cmd("-m", "longrl.trainer.main", *args), out / "logs" / "grpo.log", total=steps,
                     progress=metric_steps(run))


def eval_stage(name: str, out: Path, model: Path, test: Path, n_test: int) -> dict:
    target = out / f"eval_{name}"
    results = target / "results.json"
    cmd = python_cmd("eval/eval.py", "--model-path", str(model), "--data-path", str(test), "--output-dir", str(target),
                     "--prompt-key", "question", *EVAL_ARGS)
    seconds = run_stage(f"eval {name}", cmd, out / "logs" / f"eval_{name}.log", total=n_test,
                        progress=lambda: count_lines(target / "generations.jsonl"))
    return {**json.loads(results.read_text()), "seconds": seconds}


def control_args(sft_model: Path, run: Path, data: dict[str, Path], extra_rows: int, seed: int) -> list[str]:
    """The control's SFT overrides: more SFT from the SFT model, on the same data, for as many rows as GRPO
    trained on responses, at the learning rate SFT ended with (a fresh optimizer, a new shuffle). It validates
    before its first step and after its last: the report's held-out loss plateau check, what GRPO's budget
    spent on more SFT does to the held-out loss."""
    from longrl.config import load_config

    optim = load_config(["config=configs/sft_video_demo.yaml"]).worker.actor.optim
    steps = max(1, extra_rows // 32)
    return ["config=configs/sft_video_demo.yaml", f"worker.actor.model.model_path={sft_model}",
            f"trainer.save_checkpoint_path={run}", *data_overrides(data),
            f"trainer.max_steps={steps}", "worker.actor.global_batch_size=32",
            f"worker.actor.optim.lr={optim.lr * (optim.min_lr_ratio or 1.0)}", "worker.actor.optim.lr_scheduler_type=constant",
            "worker.actor.optim.min_lr_ratio=null", "worker.actor.optim.lr_warmup_steps=0",
            "trainer.val_before_train=true", f"trainer.val_freq={steps}", f"data.seed={seed + 2}"]


def control_stage(out: Path, sft_model: Path, data: dict[str, Path], extra_rows: int, seed: int) -> float:
    """The SFT-only control (`control_args`)."""
    run = out / "sft_control"
    return run_stage("SFT more", python_cmd("-m", "longrl.trainer.sft", *control_args(sft_model, run, data, extra_rows, seed)),
                     out / "logs" / "sft_control.log", total=max(1, extra_rows // 32), progress=metric_steps(run))


def run_demo(out: Path, seed: int, control: bool) -> dict[str, float]:
    """Every stage of one demo (seed `seed`) into `out`, skipping those whose output exists; seconds per stage
    (also in out/timings.json), then out/report.md."""
    from longrl.demo_report import write_report

    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {}
    begin = time.perf_counter()
    seeds = seed_overrides(seed)
    try:
        model = out / "model"
        if not (model / "model.safetensors").is_file():
            start = time.perf_counter()
            tiny_demo_model(model, **{**MODEL, "seed": seed})
            timings["model"] = time.perf_counter() - start
        data = {split: out / "data" / f"{split}.jsonl" for split in ("train", "val", "test")}
        if not all(p.is_file() for p in data.values()):
            start = time.perf_counter()
            data = write_data(out / "data", **{**DATA, "seed": seed})
            timings["data"] = time.perf_counter() - start
        if not (out / "sft" / "latest_checkpointed_iteration.txt").is_file():
            timings["sft"] = sft_stage(out, model, data, seeds)
        sft_model = merged(out / "sft")
        if not (out / "eval_sft" / "results.json").is_file():
            timings["eval_sft"] = eval_stage("sft", out, sft_model, data["test"], DATA["n_test"])["seconds"]
        if not (out / "grpo" / "latest_checkpointed_iteration.txt").is_file():
            timings["grpo"] = grpo_stage(out, sft_model, data, seeds)
        grpo_model = merged(out / "grpo")
        if not (out / "eval_grpo" / "results.json").is_file():
            timings["eval_grpo"] = eval_stage("grpo", out, grpo_model, data["test"], DATA["n_test"])["seconds"]
        if control:
            if not (out / "sft_control" / "latest_checkpointed_iteration.txt").is_file():
                timings["sft_control"] = control_stage(out, sft_model, data, grpo_rows(), seed)
            if not (out / "eval_sft_control" / "results.json").is_file():
                timings["eval_sft_control"] = eval_stage("sft_control", out, merged(out / "sft_control"),
                                                         data["test"], DATA["n_test"])["seconds"]
    finally:
        timings["total_this_run"] = time.perf_counter() - begin
        (out / "timings.json").write_text(json.dumps(timings, indent=1))
    write_report(out, timings)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SFT -> eval -> GRPO -> eval, and the equal-compute SFT control, "
                                                 "on a tiny Qwen2.5-VL; writes a report.")
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--no-control", dest="control", action="store_false",
                        help="skip the control (SFT continued for as many rows as GRPO trained on)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="run the demo for seeds 0..N-1 (N > 1: in <out>/seed_<k>, summary in <out>/seeds.md)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds={args.seeds}: must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = args.out.resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    runs = {0: out} if args.seeds == 1 else {seed: out / f"seed_{seed}" for seed in range(args.seeds)}
    try:
        for seed, run_out in runs.items():
            if len(runs) > 1:
                print(f"seed {seed} of {len(runs)} -> {run_out}")
            run_demo(run_out, seed, args.control)
            print(f"wrote {run_out / 'report.md'} and {run_out / 'curves.png'}")
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if len(runs) > 1:
        from longrl.demo_report import seeds_summary

        summary = out / "seeds.md"
        summary.write_text("\n".join([f"# longrl demo over {len(runs)} seeds (accuracy and margins in points, "
                                       f"{DATA['n_test']} held-out questions each)", "", *seeds_summary(runs), ""]))
        print(f"wrote {summary}")
    return 0


def grpo_rows() -> int:
    """Responses GRPO trained on: steps x prompts x samples (from its saved config)."""
    from longrl.config import load_config

    cfg = load_config(["config=configs/demo_grpo_video.yaml"])
    return cfg.trainer.max_steps * cfg.data.rollout_batch_size * cfg.worker.rollout.n


if __name__ == "__main__":
    sys.exit(main())
