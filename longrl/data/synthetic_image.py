"""A CLEVR-style image question set of real PNG files: scenes of coloured shapes, solver-checked answers.

Each scene is a `size` x `size` image (black background) cut into a grid of 14-pixel cells, one
patch of the vision tower each; 1-6 shapes (square, circle, triangle; colours may repeat) sit in
distinct cells. Questions:

  count        How many shapes are in the image?                        numeric answer
  count_color  How many <colour> shapes are in the image?               numeric answer (may be 0)
  left_of      Which colour is the shape directly left of the <shape>?  multiple choice A-D
  more         (two images) In which image are there more <kind>s?      multiple choice A/B

Every answer is computed by `solve` from the scene's shapes, never stored separately, and the
rendering puts each shape's colour on its cell centre (tests check both). Rows (jsonl, one file per
split; image paths relative to the output directory), with `<image>` placeholders where images go:
  {"problem_id": "train-00000", "problem": "<image>How many red shapes are in the image?",
   "problem_type": "numerical", "category": "count_color", "reasoning": "...",
   "answer": "<answer>2</answer>", "images": ["images/train-00000-0.png"], "data_type": "image"}

    python3 -m longrl.data.synthetic clevr --out data/clevr --n-train 400 --n-val 50 [--multi-image]
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from longrl.data.synthetic_video import COLORS, KINDS, LETTERS, Shape, render

logger = logging.getLogger(__name__)

CELL = 14  # one patch of the Qwen2-VL tower: a shape per patch keeps colours apart for a tiny tower
SINGLE = ("count", "count_color", "left_of")
SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}


@dataclasses.dataclass(frozen=True)
class Piece:
    """A shape of a scene: colour, kind and grid cell (row, col)."""

    color: str
    kind: str
    row: int
    col: int

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"


def make_scene(rng: np.random.Generator, size: int = 56, max_shapes: int = 6,
               colors: tuple[str, ...] = tuple(COLORS)) -> list[Piece]:
    """1..max_shapes shapes in distinct cells of the size/14 grid."""
    cells = (size // CELL) ** 2
    k = int(rng.integers(1, min(max_shapes, cells) + 1))
    where = rng.choice(cells, size=k, replace=False)
    return [Piece(str(rng.choice(colors)), str(rng.choice(KINDS)), int(c) // (size // CELL), int(c) % (size // CELL))
            for c in where]


def draw(scene: list[Piece], size: int = 56) -> np.ndarray:
    """uint8 [size, size, 3]: each shape centred in its cell (radius 5 px)."""
    shapes = [Shape(p.color, p.kind, 0, 1, (p.col + 0.5) * CELL - 0.5, (p.row + 0.5) * CELL - 0.5,
                    (p.col + 0.5) * CELL - 0.5, (p.row + 0.5) * CELL - 0.5, 5, "none") for p in scene]
    return render(shapes, 1, size)[0]


def _left_neighbour(scene: list[Piece], ref: Piece) -> Piece | None:
    """The nearest shape left of `ref` in its grid row."""
    left = [p for p in scene if p.row == ref.row and p.col < ref.col]
    return max(left, key=lambda p: p.col) if left else None


def solve(category: str, scenes: list[list[Piece]], subject: str) -> str:
    """The answer (number, colour, or image index 1/2) to a question about `scenes`, from the shapes alone."""
    if category == "count":
        return str(len(scenes[0]))
    if category == "count_color":
        return str(sum(p.color == subject for p in scenes[0]))
    if category == "left_of":
        ref = next(p for p in scenes[0] if p.name == subject)
        return _left_neighbour(scenes[0], ref).color
    counts = [sum(p.kind == subject for p in scene) for scene in scenes]
    return str(1 + int(np.argmax(counts)))


def _listing(scene: list[Piece]) -> str:
    ordered = sorted(scene, key=lambda p: (p.row, p.col))
    return ", ".join(f"a {p.name} (row {p.row + 1}, column {p.col + 1})" for p in ordered)


def _options(rng: np.random.Generator, correct: str, pool: list[str], letter: str) -> list[str]:
    wrong = list(rng.permutation([c for c in pool if c != correct]))[:3]
    options = list(wrong)
    options.insert(LETTERS.index(letter), correct)
    return [f"{ltr}. {opt}" for ltr, opt in zip(LETTERS, options)]


def make_sample(rng: np.random.Generator, category: str, size: int = 56) -> tuple[list[np.ndarray], dict]:
    """The images and the row (without id and paths) of one question; redraws scenes the question does not fit."""
    while True:
        scenes = [make_scene(rng, size) for _ in range(2 if category == "more" else 1)]
        scene = scenes[0]
        if category == "count":
            subject, question = "", "How many shapes are in the image?"
        elif category == "count_color":
            subject = str(rng.choice([p.color for p in scene] + [str(rng.choice(list(COLORS)))]))
            question = f"How many {subject} shapes are in the image?"
        elif category == "left_of":
            names = [p.name for p in scene]
            refs = [p for p in scene if names.count(p.name) == 1 and _left_neighbour(scene, p) is not None]
            if not refs:
                continue
            subject = refs[int(rng.integers(len(refs)))].name
            question = f"Which colour is the shape directly left of the {subject}?"
        else:
            subject = str(rng.choice(KINDS))
            counts = [sum(p.kind == subject for p in s) for s in scenes]
            if counts[0] == counts[1]:
                continue
            question = f"In which image are there more {subject}s?"
        break
    answer = solve(category, scenes, subject)
    seen = " ".join(f"Image {i + 1} shows {_listing(s)}." for i, s in enumerate(scenes)) if len(scenes) > 1 \
        else f"The image shows {_listing(scene)}."
    row = {"category": category, "data_type": "image"}
    if category in ("count", "count_color"):
        row.update(problem=f"<image>{question}", problem_type="numerical", answer=f"<answer>{answer}</answer>",
                   reasoning=f"{seen} The answer is {answer}.")
    elif category == "left_of":
        letter = LETTERS[int(rng.integers(4))]
        options = _options(rng, answer, list(COLORS), letter)
        row.update(problem=f"<image>{question}\nOptions:\n" + "\n".join(options), problem_type="multiple choice",
                   options=options, answer=f"<answer>{letter}</answer>",
                   reasoning=f"{seen} The shape left of the {subject} is {answer}. The answer is {letter}.")
    else:
        letter = LETTERS[int(answer) - 1]
        options = ["A. Image 1", "B. Image 2"]
        row.update(problem=f"Image 1: <image> Image 2: <image> {question}\nOptions:\n" + "\n".join(options),
                   problem_type="multiple choice", options=options, answer=f"<answer>{letter}</answer>",
                   reasoning=f"{seen} Image {answer} has more {subject}s. The answer is {letter}.")
    return [draw(s, size) for s in scenes], row


def generate_split(out_dir: str | Path, split: str, n: int, size: int = 56, seed: int = 0,
                   categories: tuple[str, ...] = SINGLE) -> Path:
    """Write `n` questions (categories in turn) under out_dir/images and out_dir/<split>.jsonl; returns the jsonl."""
    if size % CELL or size < 2 * CELL:
        raise ValueError(f"size={size}: must be a multiple of {CELL} and at least {2 * CELL}")
    unknown = set(categories) - set(SINGLE) - {"more"}
    if not categories or unknown:
        raise ValueError(f"categories={categories}: choose from {SINGLE + ('more',)}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    jsonl = out / f"{split}.jsonl"
    with open(jsonl, "w") as f:
        for i in range(n):
            rng = np.random.default_rng([seed, SPLIT_OFFSETS[split], i])
            images, row = make_sample(rng, categories[i % len(categories)], size)
            paths = []
            for j, image in enumerate(images):
                paths.append(f"images/{split}-{i:05d}-{j}.png")
                Image.fromarray(image).save(out / paths[-1])
            f.write(json.dumps({"problem_id": f"{split}-{i:05d}", **row, "images": paths}) + "\n")
    logger.info("wrote %d %s image questions (%dx%d) to %s", n, split, size, size, jsonl)
    return jsonl
