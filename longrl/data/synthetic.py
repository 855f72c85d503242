"""A small synthetic arithmetic data set: questions a tiny model can learn to answer.

`python3 -m longrl.data.synthetic math --out data/math` writes train.jsonl and val.jsonl with
rows {"problem": "What is 3 + 4?", "answer": "7"}. Operands are small (0..max_operand) so
the answers stay a token or two of the tiny tokenizer, whose corpus holds the same phrasing.
The same seed always writes the same files.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def math_rows(n: int, rng: random.Random, max_operand: int = 9) -> list[dict[str, str]]:
    """`n` addition questions with operands in [0, max_operand]."""
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
        rows.append({"problem": f"What is {a} + {b}?", "answer": str(a + b)})
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def write_math_dataset(out_dir: str | Path, n_train: int = 512, n_val: int = 64, seed: int = 0,
                       max_operand: int = 9) -> dict[str, Path]:
    """Write train.jsonl and val.jsonl under `out_dir`; returns {"train": path, "val": path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # One generator per split, so changing n_train leaves the validation set unchanged.
    paths = {}
    for split, n in (("train", n_train), ("val", n_val)):
        paths[split] = out / f"{split}.jsonl"
        # A str seed is hashed with sha512, identically in every process (unlike hash()).
        _write_jsonl(paths[split], math_rows(n, random.Random(f"{seed}:{split}"), max_operand))
    return paths


def write_clevr_dataset(out_dir: str | Path, n_train: int = 512, n_val: int = 64, seed: int = 0,
                        multi_image: bool = False, size: int = 56) -> dict[str, Path]:
    """CLEVR-style scenes of coloured shapes as PNG files (longrl.data.synthetic_image); {"train", "val"} jsonl paths.

    multi_image: two images per question ("in which image are there more circles?")."""
    from longrl.data.synthetic_image import SINGLE, generate_split

    categories = ("more",) if multi_image else SINGLE
    return {split: generate_split(out_dir, split, n, size, seed, categories)
            for split, n in (("train", n_train), ("val", n_val))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic data set for RL demos and tests.")
    parser.add_argument("kind", choices=["math", "clevr"],
                        help="math: 'What is a + b?' questions; clevr: questions about images of coloured shapes")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--n-val", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-operand", type=int, default=9, help="math: largest operand")
    parser.add_argument("--multi-image", action="store_true", help="clevr: two images per question")
    parser.add_argument("--size", type=int, default=56, help="clevr: image side in pixels (a multiple of 14)")
    args = parser.parse_args(argv)
    if args.kind == "clevr":
        paths = write_clevr_dataset(args.out, args.n_train, args.n_val, args.seed, args.multi_image, args.size)
    else:
        paths = write_math_dataset(args.out, args.n_train, args.n_val, args.seed, args.max_operand)
    print(json.dumps({k: str(v) for k, v in paths.items()}))


if __name__ == "__main__":
    main()
