"""longrl.data.synthetic: the arithmetic data set is well formed and deterministic."""

import json
import subprocess
import sys
from pathlib import Path

from longrl.data.synthetic import write_math_dataset


def read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rows_are_small_additions_with_correct_answers(tmp_path):
    paths = write_math_dataset(tmp_path, n_train=50, n_val=10, seed=0)
    train, val = read(paths["train"]), read(paths["val"])
    assert (len(train), len(val)) == (50, 10)
    for row in train + val:
        a, b = (int(x) for x in row["problem"].removeprefix("What is ").removesuffix("?").split(" + "))
        assert 0 <= a <= 9 and 0 <= b <= 9 and row["answer"] == str(a + b)


def test_same_seed_writes_identical_files_and_another_seed_differs(tmp_path):
    first = write_math_dataset(tmp_path / "a", n_train=20, n_val=5, seed=3)
    again = write_math_dataset(tmp_path / "b", n_train=20, n_val=5, seed=3)
    other = write_math_dataset(tmp_path / "c", n_train=20, n_val=5, seed=4)
    assert first["train"].read_text() == again["train"].read_text()
    assert first["val"].read_text() == again["val"].read_text()
    assert first["train"].read_text() != other["train"].read_text()


def test_validation_set_does_not_depend_on_the_training_set_size(tmp_path):
    small = write_math_dataset(tmp_path / "a", n_train=5, n_val=8, seed=1)
    large = write_math_dataset(tmp_path / "b", n_train=500, n_val=8, seed=1)
    assert small["val"].read_text() == large["val"].read_text()


def test_cli_writes_the_files_and_prints_their_paths(tmp_path):
    out = subprocess.run([sys.executable, "-m", "longrl.data.synthetic", "math", "--out", str(tmp_path / "m"),
                          "--n-train", "4", "--n-val", "2"], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    paths = json.loads(out.stdout)
    assert len(read(tmp_path / "m" / "train.jsonl")) == 4 and paths["val"].endswith("val.jsonl")
