"""The synthetic LongVideo-Reason-style data set: format, balance, determinism, and that the
decoded video alone determines every answer (a hand-written solver gets them all right)."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys

import av
import numpy as np
import pytest

from longrl.data import synthetic_video as S
from longrl.data.video import decode_video

PALETTE = np.array(list(S.COLORS.values()), np.int32)
COLOR_NAMES = list(S.COLORS)


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def _solve(row: dict, frames: np.ndarray) -> str:
    """Answer letter read off the frames: colour masks give appearance order, count and motion."""
    dist = np.abs(frames[..., None, :].astype(np.int32) - PALETTE).sum(-1)  # [F, H, W, colours]
    nearest, close = dist.argmin(-1), dist.min(-1) < 90
    masks = [(nearest == c) & close for c in range(len(PALETTE))]
    present = np.stack([m.sum((1, 2)) >= 6 for m in masks], 1)  # [F, colours]
    seen = sorted((int(np.argmax(present[:, c])), COLOR_NAMES[c]) for c in range(len(PALETTE)) if present[:, c].any())
    order = [name for _, name in seen]
    question = row["problem"].split("\n")[0]
    named = next((c for c in COLOR_NAMES if f"the {c} " in question), None)
    if row["category"] == "count":
        answer = str(len(order))
    elif row["category"] == "order":
        answer = order[0] if "first" in question else order[-1]
    elif row["category"] == "after":
        answer = order[order.index(named) + 1]
    else:
        c = COLOR_NAMES.index(named)
        ts = np.nonzero(present[:, c])[0]
        (y0, x0), (y1, x1) = (np.argwhere(masks[c][t]).mean(0) for t in (ts[0], ts[-1]))
        dx, dy = x1 - x0, y1 - y0
        answer = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
    letters = [opt[0] for opt in row["options"] if opt[3:] == answer or opt[3:].split(" ")[0] == answer]
    assert len(letters) == 1, (row, answer)
    return letters[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("video_ds")
    return out, S.generate_dataset(out, frames=64, n_train=32, n_val=4, n_test=8, seed=3)


def test_rows_have_the_documented_fields_and_relative_video_paths(dataset):
    out, paths = dataset
    assert sorted(paths) == ["test", "train", "val"]
    rows = _rows(paths["train"])
    assert len(rows) == 32 and len(_rows(paths["val"])) == 4 and len(_rows(paths["test"])) == 8
    row = rows[0]
    assert set(row) == {"problem_id", "problem", "problem_type", "category", "options", "reasoning", "videos",
                        "answer", "near_miss", "data_type"}
    assert row["problem_id"] == "train-00000" and row["videos"] == ["videos/train-00000.mp4"]
    assert (out / row["videos"][0]).is_file()
    assert row["problem_type"] == "multiple choice" and row["data_type"] == "video"
    assert re.fullmatch(r"<answer>[ABCD]</answer>", row["answer"])
    assert row["problem"].endswith("\nOptions:\n" + "\n".join(row["options"]))
    assert [o[:3] for o in row["options"]] == ["A. ", "B. ", "C. ", "D. "]


def test_answer_letters_and_categories_are_balanced(dataset):
    rows = _rows(dataset[1]["train"])
    # 32 rows: 8 per letter and 8 per category; within a category 8 rows give 2 per letter
    assert collections.Counter(r["answer"][8] for r in rows) == {"A": 8, "B": 8, "C": 8, "D": 8}
    assert collections.Counter(r["category"] for r in rows) == {"count": 8, "order": 8, "after": 8, "direction": 8}
    assert set(collections.Counter((r["category"], r["answer"]) for r in rows).values()) == {2}


def test_options_are_distinct_and_the_reasoning_ends_with_the_answer(dataset):
    for row in _rows(dataset[1]["train"]):
        assert len({o[3:] for o in row["options"]}) == 4
        letter = row["answer"][8]
        assert row["reasoning"].endswith(f"The answer is {letter}.")
        correct = row["options"]["ABCD".index(letter)][3:]
        assert correct in row["reasoning"]


def test_the_video_alone_determines_the_answer_after_uniform_sampling(dataset):
    out, paths = dataset
    for row in _rows(paths["train"]):
        frames = decode_video(out / row["videos"][0], num_frames=16).frames  # 16 of 64, as a trainer samples
        assert _solve(row, frames) == row["answer"][8], row


def test_shortest_videos_are_answerable_too(tmp_path):
    path = S.generate_split(tmp_path, "val", n=8, frames=8, seed=1)
    for row in _rows(path):
        frames = decode_video(tmp_path / row["videos"][0]).frames
        assert frames.shape == (8, 56, 56, 3)
        assert _solve(row, frames) == row["answer"][8], row


def test_the_same_seed_gives_the_same_data_set_and_another_seed_differs(tmp_path):
    a = S.generate_split(tmp_path / "a", "test", n=4, frames=16, seed=7)
    b = S.generate_split(tmp_path / "b", "test", n=4, frames=16, seed=7)
    c = S.generate_split(tmp_path / "c", "test", n=4, frames=16, seed=8)
    assert _rows(a) == _rows(b) and _rows(a) != _rows(c)
    va, vb = (decode_video(p.parent / "videos/test-00002.mp4").frames for p in (a, b))
    np.testing.assert_array_equal(va, vb)


def test_a_4096_frame_video_is_written(tmp_path):
    path = S.generate_split(tmp_path, "test", n=1, frames=4096, size=28, seed=0)
    with av.open(str(path.parent / _rows(path)[0]["videos"][0])) as c:
        assert c.streams.video[0].frames == 4096


@pytest.mark.parametrize("frames", [7, 4097])
def test_frame_counts_outside_8_to_4096_are_refused(tmp_path, frames):
    with pytest.raises(ValueError, match=f"frames={frames}"):
        S.generate_split(tmp_path, "train", n=1, frames=frames)


def test_cli_writes_the_splits(tmp_path):
    cmd = [sys.executable, "-m", "longrl.data.synthetic_video", "--out", str(tmp_path), "--frames", "8",
           "--n-train", "4", "--n-val", "1", "--n-test", "2"]
    printed = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    assert {k: len(_rows(v)) for k, v in printed.items()} == {"train": 4, "val": 1, "test": 2}


@pytest.fixture(scope="module")
def teacher_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher_ds")
    task = S.Task(categories=("count", "order", "after"), kinds=("square",), timestamps=False, shape_radius=0.2,
                  max_shapes=3, teacher_error=0.5)
    return out, S.generate_dataset(out, frames=32, n_train=24, n_val=4, n_test=6, size=28, seed=5, task=task)


def test_a_task_narrows_categories_kinds_and_shape_counts_and_drops_timestamps(teacher_dataset):
    rows = _rows(teacher_dataset[1]["train"])
    assert collections.Counter(r["category"] for r in rows) == {"count": 8, "order": 8, "after": 8}
    assert max(r["reasoning"].count(" square") for r in rows if r["category"] != "after") <= 3 + 1  # + conclusion
    assert all(o.endswith((" square",)) or o[3:].isdigit() for r in rows for o in r["options"])
    assert not any(" s)" in r["reasoning"] for r in rows)


def test_the_teacher_errs_on_the_asked_share_of_train_rows_with_a_near_miss_and_the_answer_stays_true(
        teacher_dataset):
    out, paths = teacher_dataset
    rows = _rows(paths["train"])
    # 0.5 of each category's 8 rows: 4 + 4 + 4
    erring = [r for r in rows if r.get("teacher_correct") is False]
    assert collections.Counter(r["category"] for r in erring) == {"count": 4, "order": 4, "after": 4}
    for row in rows:
        frames = decode_video(out / row["videos"][0]).frames
        assert _solve(row, frames) == row["answer"][8], row  # the answer is the truth, teacher or not
        said = row["reasoning"].rstrip(".")[-1]
        assert (said == row["answer"][8]) == (row not in erring)
        assert row["near_miss"] != row["answer"][8] and (said == row["near_miss"]) == (row in erring)
        if row["category"] == "count" and row in erring:  # one too many
            assert int(row["options"]["ABCD".index(said)][3:]) == len(re.findall(r", then", row["reasoning"])) + 2


def test_val_and_test_rows_are_never_taught_wrong(teacher_dataset):
    for split in ("val", "test"):
        assert all("teacher_correct" not in r and r["reasoning"].endswith(f"The answer is {r['answer'][8]}.")
                   for r in _rows(teacher_dataset[1][split]))


def test_an_unknown_category_a_single_shape_or_an_error_rate_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="categories="):
        S.Task(categories=("colour",))
    with pytest.raises(ValueError, match="teacher_error=1.5"):
        S.Task(teacher_error=1.5)
    with pytest.raises(ValueError, match="max_shapes=1"):
        S.Task(max_shapes=1)
