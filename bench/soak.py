"""Soak: many RL steps of the CPU examples with checkpoints and a resume, watching memory and file descriptors.

    python bench/soak.py [--text-steps 200] [--video-steps 50] [--save-freq 10] [--out DIR]

For each example (tiny Qwen2 on arithmetic, tiny Qwen2.5-VL on synthetic videos) the script runs the CLI to
half the steps, then the same command to the full count (it resumes from the last checkpoint), with
checkpoints every --save-freq steps. Every step the driver and each worker process log their own resident
memory (RSS) and open file descriptors into metrics.jsonl (perf/rss_mb_*, perf/open_fds_*; logging/process.py),
so nothing here has to find Ray's processes from outside. The script prints, per run and process, the RSS
growth from the run's 20th step (--warmup; a quarter of the run when it is shorter) to its last step in
percent, the FDs at its first and last step, and steps per minute. Goal: under 5% per process.

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

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = {"text": "examples/cpu/qwen2_math_grpo.sh", "video": "examples/cpu/qwen2_5_vl_video_grpo.sh"}
RSS, FDS = "perf/rss_mb_", "perf/open_fds_"


def run(example: str, out: Path, max_steps: int, save_freq: int, env: dict[str, str]) -> float:
    """One CLI run to `max_steps` (resuming from the newest checkpoint under `out`); its wall seconds."""
    cmd = ["bash", EXAMPLES[example], f"trainer.save_checkpoint_path={out}", f"trainer.max_steps={max_steps}",
           f"trainer.save_freq={save_freq}", "trainer.save_limit=2", "trainer.val_freq=-1",
           "trainer.logger=[file]"]
    log = out.parent / f"{out.name}_{max_steps}.log"
    start = time.monotonic()
    with log.open("w") as f:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (rc {rc}); see {log}")
    return time.monotonic() - start


def report(example: str, label: str, lines: list[dict], seconds: float, warmup: int) -> None:
    """Per process: RSS after `warmup` steps of this run and at its end, growth, FDs first/last."""
    skip = warmup if len(lines) > warmup + 1 else len(lines) // 4
    first, base, last = lines[0], lines[skip], lines[-1]
    step_s = sum(line["timing_s/step"] for line in lines) / len(lines)
    print(f"\n{example}, {label}: steps {first['step']}..{last['step']}, {len(lines) / seconds * 60:.1f} steps/min "
          f"with start-up and checkpoints ({60 / step_s:.1f} steps/min in the steps themselves)")
    print(f"  {'process':10s} {'RSS@' + str(base['step']):>10s} {'RSS@' + str(last['step']):>10s} {'growth':>8s} "
          f"{'max RSS':>9s} {'FDs first':>9s} {'FDs last':>9s}")
    for key in sorted(k for k in last if k.startswith(RSS)):
        name = key.removeprefix(RSS)
        rss0, rss1 = base[key], last[key]
        peak = max(line[key] for line in lines[skip:])
        print(f"  {name:10s} {rss0:9.0f}M {rss1:9.0f}M {100 * (rss1 - rss0) / rss0:7.1f}% {peak:8.0f}M "
              f"{first[FDS + name]:9.0f} {last[FDS + name]:9.0f}", flush=True)


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
            seconds = run(example, out, max_steps, args.save_freq, example_env)
            lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            mine = [line for line in lines if line["step"] > after]
            if [line["step"] for line in mine] != list(range(after + 1, max_steps + 1)):
                raise SystemExit(f"{out}/metrics.jsonl: steps {[line['step'] for line in lines]}, expected each of "
                                 f"1..{max_steps} once")
            report(example, label, mine, seconds, args.warmup)
    print(f"\noutputs under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
