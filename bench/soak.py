"""Soak: many RL steps of the CPU examples with checkpoints and a resume, watching memory and file descriptors.

    python bench/soak.py [--text-steps 200] [--video-steps 50] [--save-freq 10] [--out DIR]

For each example (tiny Qwen2 on arithmetic, tiny Qwen2.5-VL on synthetic videos) the script runs the CLI to
half the steps, then the same command to the full count (it resumes from the last checkpoint), with
checkpoints every --save-freq steps. At every step (a new metrics.jsonl line) it samples the resident memory
(RSS) of the driver and of each worker process and their open file descriptors. It prints, per run and
process, the RSS growth from the run's 20th step (--warmup; a quarter of the run when it is shorter) to its
last step in percent, the FDs at its first and last step, and steps per minute. Goal: under 5% per process.

Growth is measured within one process lifetime: each run's driver and workers are new processes, so the
first run (1 .. N/2) and the resumed run (N/2+1 .. N) are reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = {"text": "examples/cpu/qwen2_math_grpo.sh", "video": "examples/cpu/qwen2_5_vl_video_grpo.sh"}


def _descendants(root: psutil.Process) -> list[psutil.Process]:
    """Every process below `root`, walked one level at a time: psutil's recursive walk gives up on the whole
    tree when one process in it exits (Ray starts and reaps short-lived helpers all the time)."""
    found, todo = [], [root]
    while todo:
        try:
            children = todo.pop().children()
        except psutil.Error:
            continue
        found += children
        todo += children
    return found


def processes(driver: psutil.Process) -> dict[str, psutil.Process]:
    """{'driver': ..., 'worker rank?': ...} for the driver and its Ray worker actors (by process title)."""
    found = {"driver": driver}
    workers = []
    for child in _descendants(driver):
        try:
            if "HybridWorker" in " ".join(child.cmdline()):  # Ray's process title: ray::HybridWorker.<verb>
                workers.append(child)
        except psutil.Error:
            continue
    for i, proc in enumerate(sorted(workers, key=lambda p: p.pid)):
        found[f"worker{i} (pid {proc.pid})"] = proc
    return found


def sample(procs: dict[str, psutil.Process]) -> dict[str, tuple[int, int]]:
    """name -> (rss bytes, open fds)."""
    out = {}
    for name, proc in procs.items():
        try:
            out[name] = (proc.memory_info().rss, proc.num_fds())
        except psutil.Error:
            pass
    return out


def _driver(launcher: int) -> psutil.Process | None:
    """The trainer process the example script started, once it exists."""
    try:
        for child in psutil.Process(launcher).children():
            if "longrl.trainer.main" in " ".join(child.cmdline()):
                return child
    except psutil.Error:
        pass
    return None


def run(example: str, out: Path, max_steps: int, save_freq: int, env: dict[str, str],
        after_step: int = 0) -> dict[int, dict]:
    """One CLI run to `max_steps`; {step: {name: (rss, fds)}} sampled as each step's metrics line appears
    (steps up to `after_step` belong to the run this one resumed)."""
    cmd = ["bash", EXAMPLES[example], f"trainer.save_checkpoint_path={out}", f"trainer.max_steps={max_steps}",
           f"trainer.save_freq={save_freq}", "trainer.save_limit=2", "trainer.val_freq=-1",
           "trainer.logger=[file]"]
    log = out.parent / f"{out.name}_{max_steps}.log"
    metrics = out / "metrics.jsonl"
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    samples: dict[int, dict] = {}
    driver = None
    while proc.poll() is None:
        if driver is None:
            driver = _driver(proc.pid)
        if driver is not None and metrics.exists():
            lines = metrics.read_text().splitlines()
            step = json.loads(lines[-1])["step"] if lines else 0
            if step > after_step and step not in samples:
                samples[step] = sample(processes(driver))
        time.sleep(0.5)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed (rc {proc.returncode}); see {log}")
    return samples


def report(example: str, label: str, samples: dict[int, dict], seconds: float, warmup: int) -> None:
    """Per process: RSS after `warmup` steps of this run and at its end, growth, FDs first/last."""
    ordered = sorted(samples)
    skip = warmup if len(ordered) > warmup + 1 else len(ordered) // 4
    base_step = ordered[skip]
    first, base, last = samples[ordered[0]], samples[base_step], samples[ordered[-1]]
    print(f"\n{example}, {label}: steps {ordered[0]}..{ordered[-1]}, {len(ordered) / seconds * 60:.1f} steps/min "
          f"(startup included)")
    print(f"  {'process':24s} {'RSS@' + str(base_step):>10s} {'RSS@' + str(ordered[-1]):>10s} {'growth':>8s} "
          f"{'FDs first':>9s} {'FDs last':>9s}")
    for name in base:
        if name not in last:
            continue
        rss0, rss1 = base[name][0], last[name][0]
        print(f"  {name:24s} {rss0 / 2**20:9.0f}M {rss1 / 2**20:9.0f}M {100 * (rss1 - rss0) / rss0:7.1f}% "
              f"{first.get(name, (0, 0))[1]:9d} {last[name][1]:9d}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--text-steps", type=int, default=200)
    p.add_argument("--video-steps", type=int, default=50)
    p.add_argument("--save-freq", type=int, default=10)
    p.add_argument("--warmup", type=int, default=20, help="steps of each run before the RSS baseline")
    p.add_argument("--out", default=None, help="working directory (default: a temporary one)")
    args = p.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="soak_"))
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHON": sys.executable, "RAY_DEDUP_LOGS": "1",
           "MODEL_PATH": str(root / "models" / "tiny-qwen2"), "DATA_DIR": str(root / "data" / "math")}
    for example, steps in (("text", args.text_steps), ("video", args.video_steps)):
        if steps <= 0:
            continue
        example_env = env if example == "text" else {**env, "MODEL_PATH": str(root / "models" / "tiny-vl"),
                                                     "DATA_DIR": str(root / "data" / "video")}
        out = root / example
        for label, max_steps, after in (("first run", steps // 2, 0), ("resumed run", steps, steps // 2)):
            start = time.monotonic()
            samples = run(example, out, max_steps, args.save_freq, example_env, after)
            report(example, label, samples, time.monotonic() - start, args.warmup)
    print(f"\noutputs under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
