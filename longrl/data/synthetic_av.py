"""A synthetic audio-visual multiple-choice data set: real mp4 files with sound, for omni models.

Each clip shows a sequence of coloured squares, one at a time (every square in a clip has its own colour and
lasts the same slot), while a tone of one pitch beeps a few times; every beep falls inside one square's slot.
Questions (four options A-D, the correct letter balanced within each category):

  beeps   How many beeps do you hear?                           (audio only)
  pitch   Which pitch is the tone?  (300 / 600 / 1200 / 2400 Hz)  (audio only)
  color   Which colour is the first square?                     (video only)
  during  Which colour is on screen during the first beep?       (audio and video)

The audio is written as AAC: 16 kHz mono on even rows, 44.1 kHz stereo on odd rows, so the data exercises the
decoder's resampling and downmixing. A solver (`solve`) answers each row from the generated schedule, and a
test checks that it agrees with the stored answer.

Row format (jsonl; video paths relative to the output directory), as longrl.data.synthetic_video:
  {"problem_id": "train-00000", "problem": "<question>\\nOptions:\\nA. ..", "category": "beeps",
   "options": [...], "videos": ["videos/train-00000.mp4"], "answer": "<answer>B</answer>",
   "data_type": "video", "schedule": {...}}

    python3 -m longrl.data.synthetic_av --out data/av --n-train 32 --n-val 8 --n-test 8
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from longrl.data.synthetic_video import COLORS, LETTERS, SPLIT_OFFSETS, write_mp4

logger = logging.getLogger(__name__)

CATEGORIES = ("beeps", "pitch", "color", "during")
PITCHES = (300, 600, 1200, 2400)
BEEP_SECONDS = 0.15


def make_schedule(rng: np.random.Generator, seconds: float) -> dict:
    """Squares (colours, in order) and beeps (start times, inside the squares' slots) of one clip."""
    k = int(rng.integers(2, 5))
    colors = [str(c) for c in rng.choice(list(COLORS), k, replace=False)]
    slot = seconds / k
    beeps = int(rng.integers(1, 5))
    # beeps start at distinct slots' quarter points, well apart, and end inside their slot
    starts = sorted(rng.choice(np.arange(k * 2) * slot / 2 + slot / 8, beeps, replace=False).tolist())
    return {"colors": colors, "slot": slot, "beeps": [round(s, 3) for s in starts],
            "pitch": int(rng.choice(PITCHES)), "seconds": seconds}


def render(schedule: dict, fps: float, size: int) -> np.ndarray:
    """uint8 [frames, size, size, 3]: each slot a centred square of its colour on black."""
    frames = int(round(schedule["seconds"] * fps))
    video = np.zeros((frames, size, size, 3), dtype=np.uint8)
    lo, hi = size // 4, 3 * size // 4
    for i in range(frames):
        color = schedule["colors"][min(int(i / fps / schedule["slot"]), len(schedule["colors"]) - 1)]
        video[i, lo:hi, lo:hi] = COLORS[color]
    return video


def sound(schedule: dict, rate: int, channels: int) -> np.ndarray:
    """float32 [channels, N]: silence with a beep of the clip's pitch at each start time."""
    wave = np.zeros(int(schedule["seconds"] * rate), dtype=np.float32)
    t = np.arange(int(BEEP_SECONDS * rate)) / rate
    beep = (0.5 * np.sin(2 * np.pi * schedule["pitch"] * t)).astype(np.float32)
    for start in schedule["beeps"]:
        at = int(start * rate)
        wave[at: at + len(beep)] = beep[: len(wave) - at]
    return np.repeat(wave[None], channels, axis=0)


def solve(category: str, schedule: dict) -> str:
    """The correct option text of a question about `schedule`."""
    if category == "beeps":
        return str(len(schedule["beeps"]))
    if category == "pitch":
        return f"{schedule['pitch']} Hz"
    if category == "color":
        return schedule["colors"][0]
    return schedule["colors"][int(schedule["beeps"][0] / schedule["slot"])]


QUESTIONS = {"beeps": "How many beeps do you hear?", "pitch": "Which pitch is the tone?",
             "color": "Which colour is the first square?", "during": "Which colour is on screen during the first beep?"}


def _distractors(rng: np.random.Generator, category: str, correct: str) -> list[str]:
    pool = {"beeps": [str(n) for n in range(1, 6)], "pitch": [f"{p} Hz" for p in PITCHES], "color": list(COLORS),
            "during": list(COLORS)}[category]
    return [str(x) for x in rng.permutation([p for p in pool if p != correct])[:3]]


def make_sample(rng: np.random.Generator, category: str, letter: str, seconds: float) -> tuple[dict, dict]:
    """(schedule, row without id and path) of one clip."""
    schedule = make_schedule(rng, seconds)
    correct = solve(category, schedule)
    options = _distractors(rng, category, correct)
    options.insert(LETTERS.index(letter), correct)
    lines = [f"{ltr}. {opt}" for ltr, opt in zip(LETTERS, options)]
    row = {"problem": QUESTIONS[category] + "\nOptions:\n" + "\n".join(lines), "problem_type": "multiple choice",
           "category": category, "options": lines, "answer": f"<answer>{letter}</answer>", "data_type": "video",
           "schedule": schedule}
    return schedule, row


def generate_split(out_dir: str | Path, split: str, n: int, seconds: float = 2.0, fps: float = 4.0, size: int = 56,
                   seed: int = 0) -> Path:
    """Write `n` clips under out_dir/videos and out_dir/<split>.jsonl; returns the jsonl path."""
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, SPLIT_OFFSETS[split]])
    categories = [CATEGORIES[i % len(CATEGORIES)] for i in range(n)]
    letters = [LETTERS[(i // len(CATEGORIES)) % len(LETTERS)] for i in range(n)]
    order = rng.permutation(n)
    jsonl = out / f"{split}.jsonl"
    with open(jsonl, "w") as f:
        for i in range(n):
            category, letter = categories[order[i]], letters[order[i]]
            schedule, row = make_sample(np.random.default_rng([seed, SPLIT_OFFSETS[split], i]), category, letter,
                                        seconds)
            rate, channels = (16000, 1) if i % 2 == 0 else (44100, 2)
            rel = f"videos/{split}-{i:05d}.mp4"
            write_mp4(out / rel, render(schedule, fps, size), fps, audio=sound(schedule, rate, channels),
                      sample_rate=rate)
            f.write(json.dumps({"problem_id": f"{split}-{i:05d}", **row, "videos": [rel]}) + "\n")
    logger.info("wrote %d %s audio-visual clips (%.1f s at %g fps, %dx%d) to %s", n, split, seconds, fps, size, size,
                jsonl)
    return jsonl


def generate_dataset(out_dir: str | Path, n_train: int = 32, n_val: int = 8, n_test: int = 8, seconds: float = 2.0,
                     fps: float = 4.0, size: int = 56, seed: int = 0) -> dict[str, Path]:
    """Write the train/val/test splits; returns {split: jsonl path}."""
    counts = {"train": n_train, "val": n_val, "test": n_test}
    return {split: generate_split(out_dir, split, n, seconds, fps, size, seed) for split, n in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate a synthetic audio-visual multiple-choice data set.")
    parser.add_argument("--out", required=True, help="output directory (jsonl files + videos/)")
    parser.add_argument("--n-train", type=int, default=32)
    parser.add_argument("--n-val", type=int, default=8)
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--fps", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=56, help="frame width and height in pixels (even)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    paths = generate_dataset(args.out, args.n_train, args.n_val, args.n_test, args.seconds, args.fps, args.size,
                             args.seed)
    print(json.dumps({split: str(p) for split, p in paths.items()}))


if __name__ == "__main__":
    main()
