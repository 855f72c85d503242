"""Synthetic CLEVR-style image questions: real PNGs, answers that the solver and the pixels agree on."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from longrl.data.synthetic import write_clevr_dataset
from longrl.data.synthetic_image import COLORS, Piece, draw, generate_split, solve


def test_solve_answers_hand_worked_scenes():
    scene = [Piece("red", "circle", 0, 0), Piece("blue", "square", 0, 2), Piece("red", "triangle", 1, 3)]
    other = [Piece("green", "circle", 2, 2), Piece("green", "circle", 3, 3)]
    assert solve("count", [scene], "") == "3"
    assert solve("count_color", [scene], "red") == "2" and solve("count_color", [scene], "white") == "0"
    assert solve("left_of", [scene], "blue square") == "red"  # row 0: red at column 0, blue at column 2
    assert solve("more", [scene, other], "circle") == "2"  # one circle against two


def test_each_shape_is_drawn_in_its_colour_at_its_cell_centre():
    scene = [Piece("yellow", "triangle", 1, 2), Piece("cyan", "square", 3, 0)]
    image = draw(scene)
    # cell (1, 2) spans rows 14..27 and columns 28..41: its centre pixel (20, 34) is yellow
    assert image[20, 34].tolist() == list(COLORS["yellow"]) and image[48, 6].tolist() == list(COLORS["cyan"])
    assert image[6, 6].tolist() == [0, 0, 0]


def test_rows_answer_what_the_saved_images_show(tmp_path):
    jsonl = generate_split(tmp_path, "train", 12)
    for line in jsonl.read_text().splitlines():
        row = json.loads(line)
        [path] = row["images"]
        image = np.asarray(Image.open(tmp_path / path))
        assert image.shape == (56, 56, 3) and row["problem"].startswith("<image>")
        listed = row["reasoning"].count(" (row ")
        # every listed shape's cell centre is coloured: count the coloured cell centres
        centres = [image[r * 14 + 6, c * 14 + 6] for r in range(4) for c in range(4)]
        assert sum(int(px.any()) for px in centres) == listed
        if row["category"] == "count":
            assert row["answer"] == f"<answer>{listed}</answer>"


def test_the_multi_image_variant_has_two_images_with_different_counts(tmp_path):
    paths = write_clevr_dataset(tmp_path, n_train=6, n_val=2, multi_image=True)
    rows = [json.loads(line) for line in paths["train"].read_text().splitlines()]
    assert all(len(r["images"]) == 2 and r["problem"].count("<image>") == 2 for r in rows)
    assert {r["answer"] for r in rows} <= {"<answer>A</answer>", "<answer>B</answer>"}


def test_the_same_seed_writes_the_same_files(tmp_path):
    a, b = generate_split(tmp_path / "a", "val", 5), generate_split(tmp_path / "b", "val", 5)
    assert a.read_text() == b.read_text()
    assert (tmp_path / "a/images/val-00004-0.png").read_bytes() == (tmp_path / "b/images/val-00004-0.png").read_bytes()


def test_a_size_that_is_not_a_whole_number_of_cells_is_refused(tmp_path):
    with pytest.raises(ValueError, match="size=50: must be a multiple of 14"):
        generate_split(tmp_path, "train", 1, size=50)
