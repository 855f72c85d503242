"""A LongVideo-Reason-style multiple-choice data set of real mp4 files, generated in seconds.

Each video shows 1-5 coloured shapes on black; each shape appears, moves in a straight line
(left, right, up or down) and disappears. Shapes appear one after another (strictly ordered
start times, each visible for at least ~0.8 of its time slot, so uniform sampling of >= 2
frames per slot sees every shape) and every shape in a video has its own colour, so colours
identify shapes. Questions (four options A-D, the correct letter balanced over each split):

  count      How many shapes appear in the video?
  order      Which shape appears first / last?
  after      Which shape appears right after the <shape>?
  direction  In which direction does the <shape> move?

A `Task` narrows what is drawn and asked (categories, shape kinds, timestamps in the reasoning) and
can make the training split's reasoning come from an imperfect teacher: on a fraction of train rows
the reasoning lists the shapes correctly but concludes with a near miss (the neighbouring shape, a
count one too high, the opposite direction), like chain-of-thought written by an unverified model.
Those rows keep the true `answer` (what a reward checks) and say `"teacher_correct": false`; the
reasoning ends with the teacher's letter. Val and test rows are always correct. Every row names the
near miss's letter (`near_miss`), so an evaluation can count how often a model answers the teacher's
mistake instead of the truth.

Row format (jsonl, one file per split; video paths relative to the output directory):
  {"problem_id": "train-00000", "problem": "<question>\\nOptions:\\nA. ..\\nB. ..\\nC. ..\\nD. ..",
   "problem_type": "multiple choice", "category": "count", "options": ["A. 3", ...],
   "reasoning": "<short correct reasoning>", "videos": ["videos/train-00000.mp4"],
   "answer": "<answer>B</answer>", "near_miss": "C", "data_type": "video"}

    python3 -m longrl.data.synthetic_video --out data/video --frames 64 --n-train 400 --n-val 50 --n-test 200
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
          "magenta": (255, 0, 255), "cyan": (0, 255, 255), "white": (255, 255, 255)}
KINDS = ("square", "circle", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
CATEGORIES = ("count", "order", "after", "direction")
LETTERS = "ABCD"
SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}  # distinct random streams per split
MIN_FRAMES, MAX_FRAMES = 8, 4096


@dataclasses.dataclass(frozen=True)
class Task:
    """What the videos show and what is asked (the defaults: everything, correct reasoning)."""

    categories: tuple[str, ...] = CATEGORIES
    kinds: tuple[str, ...] = KINDS
    timestamps: bool = True  # the reasoning says when each shape appears ("the red circle (1.2 s)")
    shape_radius: float = 1 / 9  # half a shape's width, as a fraction of the frame size (at least 3 px)
    max_shapes: int = 5  # shapes per video, at most (and at most frames / 2)
    teacher_error: float = 0.0  # fraction of train rows whose reasoning concludes with a near miss

    def __post_init__(self) -> None:
        if not self.categories or set(self.categories) - set(CATEGORIES):
            raise ValueError(f"categories={self.categories}: choose a non-empty subset of {CATEGORIES}")
        if not self.kinds or set(self.kinds) - set(KINDS):
            raise ValueError(f"kinds={self.kinds}: choose a non-empty subset of {KINDS}")
        if not 2 <= self.max_shapes <= len(COLORS):
            raise ValueError(f"max_shapes={self.max_shapes}: must be in [2, {len(COLORS)}] (one colour a shape)")
        if not 0.0 <= self.teacher_error <= 1.0:
            raise ValueError(f"teacher_error={self.teacher_error}: must be a fraction in [0, 1]")


@dataclasses.dataclass(frozen=True)
class Shape:
    """One shape: visible in frames [start, end); its centre moves (x0, y0) -> (x1, y1) in pixels."""

    color: str
    kind: str
    start: int
    end: int
    x0: float
    y0: float
    x1: float
    y1: float
    radius: int
    direction: str

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"


def _schedule(rng: np.random.Generator, k: int, frames: int, size: int, task: Task) -> list[Shape]:
    """k shapes with strictly increasing start frames, one per time slot of frames/k."""
    slot = frames / k
    colors = rng.choice(list(COLORS), size=k, replace=False)
    radius = max(3, int(size * task.shape_radius))
    shapes = []
    for i, color in enumerate(colors):
        start = int(i * slot + rng.uniform(0, 0.2) * slot)
        end = min(frames, max(start + 2, int(start + slot * rng.uniform(0.8, 1.6))))
        direction = str(rng.choice(list(DIRECTIONS)))
        dx, dy = DIRECTIONS[direction]
        lo, hi = radius + 1, size - radius - 2
        travel = min(hi - lo, rng.uniform(0.3, 0.5) * size)  # far enough that the direction is unambiguous
        # pick the start so the whole straight path stays inside the frame
        x0 = rng.uniform(lo - min(dx, 0) * travel, hi - max(dx, 0) * travel)
        y0 = rng.uniform(lo - min(dy, 0) * travel, hi - max(dy, 0) * travel)
        shapes.append(Shape(str(color), str(rng.choice(task.kinds)), start, end, x0, y0,
                            x0 + dx * travel, y0 + dy * travel, radius, direction))
    return shapes


def render(shapes: list[Shape], frames: int, size: int) -> np.ndarray:
    """uint8 [frames, size, size, 3] video of the shapes (later shapes drawn on top)."""
    video = np.zeros((frames, size, size, 3), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for s in shapes:
        for t in range(s.start, s.end):
            a = (t - s.start) / max(1, s.end - s.start - 1)
            cx, cy = s.x0 + a * (s.x1 - s.x0), s.y0 + a * (s.y1 - s.y0)
            dx, dy = xx - cx, yy - cy
            if s.kind == "square":
                mask = (np.abs(dx) <= s.radius) & (np.abs(dy) <= s.radius)
            elif s.kind == "circle":
                mask = dx * dx + dy * dy <= s.radius * s.radius
            else:  # triangle pointing up: half-width grows from 0 at the top to radius at the base
                mask = (dy >= -s.radius) & (dy <= s.radius) & (np.abs(dx) <= (dy + s.radius) / 2)
            video[t][mask] = COLORS[s.color]
    return video


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 8.0, codec: str = "libx264",
              audio: np.ndarray | None = None, sample_rate: int = 44100) -> None:
    """Encode uint8 [T, H, W, 3] frames (H, W even) as an mp4 with PyAV; `audio`: float [channels, N] in
    [-1, 1] at `sample_rate`, written as an AAC track (1 channel: mono, 2: stereo)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast"}  # near-lossless colours, fast
        track = None
        if audio is not None:  # every stream must exist before the first packet is written
            layout = {1: "mono", 2: "stereo"}[audio.shape[0]]
            track = container.add_stream("aac", rate=sample_rate)
            track.layout = layout
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if track is not None:
            samples = np.ascontiguousarray(audio, dtype=np.float32)
            for start in range(0, samples.shape[1], 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]),
                                                   format="fltp", layout=layout)
                chunk.sample_rate, chunk.pts = sample_rate, start
                for packet in track.encode(chunk):
                    container.mux(packet)
            for packet in track.encode():
                container.mux(packet)


def _distractor_names(rng: np.random.Generator, shapes: list[Shape], exclude: set[str], n: int,
                      kinds: tuple[str, ...] = KINDS) -> list[str]:
    """n wrong shape names: other shapes of the video first, then shapes in colours it lacks."""
    others = [s.name for s in shapes if s.name not in exclude]
    rng.shuffle(others)
    absent = [c for c in COLORS if c not in {s.color for s in shapes}]
    rng.shuffle(absent)
    fillers = [f"{c} {rng.choice(kinds)}" for c in absent]
    return (others + fillers)[:n]


def _question(rng: np.random.Generator, category: str, shapes: list[Shape], fps: float, task: Task
              ) -> tuple[str, str, list[str], Callable[[str], str]]:
    """(question, correct option, three distractors, reasoning concluding with a given option) for one video.

    The first distractor is the near miss an imperfect teacher concludes with.
    """
    when = {s.name: f" ({s.start / fps:.1f} s)" if task.timestamps else "" for s in shapes}
    seq = ", then ".join(f"the {s.name}{when[s.name]}" for s in shapes)
    if category == "count":
        k = len(shapes)
        wrong = [str(k + 1)] + [str(v) for v in rng.choice([v for v in range(1, 8) if v not in (k, k + 1)], size=2,
                                                           replace=False)]
        return ("How many shapes appear in the video?", str(k), wrong,
                lambda n: f"The shapes appear in turn: {seq}. That is {n} shape{'s' * (n != '1')}.")
    if category == "order":
        first = bool(rng.integers(2))
        target, near = (shapes[0], shapes[1]) if first else (shapes[-1], shapes[-2])
        word = "first" if first else "last"
        return (f"Which shape appears {word} in the video?", target.name,
                [near.name] + _distractor_names(rng, shapes, {target.name, near.name}, 2, task.kinds),
                lambda name: f"The shapes appear in this order: {seq}. So the {name} appears {word}.")
    if category == "after":
        i = int(rng.integers(len(shapes) - 1))
        a, b = shapes[i], shapes[i + 1]
        near = shapes[i + 2] if i + 2 < len(shapes) else a  # one shape too far, or the named one itself
        return (f"Which shape appears right after the {a.name}?", b.name,
                [near.name] + _distractor_names(rng, shapes, {b.name, near.name}, 2, task.kinds),
                lambda name: f"The shapes appear in this order: {seq}. The next one after the {a.name} is the {name}.")
    s = shapes[int(rng.integers(len(shapes)))]
    axis = "x" if s.direction in ("left", "right") else "y"
    p0, p1 = (s.x0, s.x1) if axis == "x" else (s.y0, s.y1)
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}[s.direction]
    return (f"In which direction does the {s.name} move?", s.direction,
            [opposite] + [d for d in DIRECTIONS if d not in (s.direction, opposite)],
            lambda d: f"The {s.name} goes from {axis}={p0:.0f} to {axis}={p1:.0f} pixels, so it moves {d}.")


def make_sample(rng: np.random.Generator, category: str, letter: str, frames: int, size: int, fps: float,
                task: Task = Task(), teacher_errs: bool = False) -> tuple[np.ndarray, dict]:
    """One video (uint8 [frames, size, size, 3]) and its row (without id and path).

    With `teacher_errs` the reasoning concludes with the near miss (and says its letter); `answer` stays true.
    """
    max_k = min(task.max_shapes, frames // 2)  # at least two frames per slot
    k = int(rng.integers(1 if category == "count" else 2, max_k + 1))
    shapes = _schedule(rng, k, frames, size, task)
    question, correct, wrong, reasoning = _question(rng, category, shapes, fps, task)
    near_miss = wrong[0]
    options = list(rng.permutation(wrong))
    options.insert(LETTERS.index(letter), correct)
    option_lines = [f"{ltr}. {opt}" for ltr, opt in zip(LETTERS, options)]
    concluded = near_miss if teacher_errs else correct
    row = {"problem": question + "\nOptions:\n" + "\n".join(option_lines), "problem_type": "multiple choice",
           "category": category, "options": option_lines,
           "reasoning": f"{reasoning(concluded)} The answer is {LETTERS[options.index(concluded)]}.",
           "answer": f"<answer>{letter}</answer>", "near_miss": LETTERS[options.index(near_miss)],
           "data_type": "video"}
    if teacher_errs:
        row["teacher_correct"] = False
    return render(shapes, frames, size), row


def _balanced(rng: np.random.Generator, values: tuple | str, n: int) -> list:
    """n values, each used n/len(values) times (+-1), in random order."""
    return list(rng.permutation([values[i % len(values)] for i in range(n)]))


def generate_split(out_dir: str | Path, split: str, n: int, frames: int = 64, size: int = 56,
                   fps: float = 8.0, seed: int = 0, task: Task = Task()) -> Path:
    """Write `n` videos under out_dir/videos and out_dir/<split>.jsonl; returns the jsonl path."""
    if not MIN_FRAMES <= frames <= MAX_FRAMES:
        raise ValueError(f"frames={frames}: must be in [{MIN_FRAMES}, {MAX_FRAMES}]")
    if size % 2 or size < 28:
        raise ValueError(f"size={size}: must be even (yuv420p) and >= 28 (one 2x2 merged patch of 14 px)")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, SPLIT_OFFSETS[split]])
    categories = _balanced(rng, task.categories, n)
    letters = [""] * n
    for category in task.categories:  # balance letters within each category too, so neither predicts the other
        where = [i for i in range(n) if categories[i] == category]
        for i, letter in zip(where, _balanced(rng, LETTERS, len(where))):
            letters[i] = letter
    # the teacher's mistakes: an exact share of the train rows, spread evenly over categories
    erring: set[int] = set()
    if split == "train" and task.teacher_error:
        for category in task.categories:
            where = [i for i in range(n) if categories[i] == category]
            erring.update(rng.permutation(where)[: round(task.teacher_error * len(where))].tolist())
    jsonl = out / f"{split}.jsonl"
    with open(jsonl, "w") as f:
        for i in range(n):
            video, row = make_sample(np.random.default_rng([seed, SPLIT_OFFSETS[split], i]),
                                     str(categories[i]), str(letters[i]), frames, size, fps, task, i in erring)
            rel = f"videos/{split}-{i:05d}.mp4"
            write_mp4(out / rel, video, fps)
            f.write(json.dumps({"problem_id": f"{split}-{i:05d}", **row, "videos": [rel]}) + "\n")
    logger.info("wrote %d %s samples (%d frames of %dx%d) to %s", n, split, frames, size, size, jsonl)
    return jsonl


def generate_dataset(out_dir: str | Path, frames: int = 64, n_train: int = 400, n_val: int = 50,
                     n_test: int = 200, size: int = 56, fps: float = 8.0, seed: int = 0,
                     task: Task = Task()) -> dict[str, Path]:
    """Write the train/val/test splits; returns {split: jsonl path}."""
    counts = {"train": n_train, "val": n_val, "test": n_test}
    return {split: generate_split(out_dir, split, n, frames, size, fps, seed, task) for split, n in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate a synthetic long-video multiple-choice data set.")
    parser.add_argument("--out", required=True, help="output directory (jsonl files + videos/)")
    parser.add_argument("--frames", type=int, default=64, help=f"frames per video, {MIN_FRAMES}..{MAX_FRAMES}")
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--n-val", type=int, default=50)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--size", type=int, default=56, help="frame width and height in pixels (even)")
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    paths = generate_dataset(args.out, args.frames, args.n_train, args.n_val, args.n_test, args.size, args.fps,
                             args.seed)
    print(json.dumps({split: str(p) for split, p in paths.items()}))


if __name__ == "__main__":
    main()
