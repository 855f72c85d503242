import numpy as np
import pytest
import torch

from longrl.protocol import Batch


def make(n: int, width: int = 3) -> Batch:
    return Batch({"x": torch.arange(n * width).reshape(n, width), "s": torch.arange(n)},
                 {"ids": [[i] * (i + 1) for i in range(n)]}, {"step": 7})


def test_objects_are_one_dimensional_even_for_equal_length_lists():
    b = Batch(objects={"ids": [[1, 2], [3, 4]]})
    assert b["ids"].shape == (2,) and b["ids"][1] == [3, 4]


def test_mismatched_field_sizes_are_refused_with_the_sizes():
    with pytest.raises(ValueError, match="disagree"):
        Batch({"a": torch.zeros(2)}, {"b": [1, 2, 3]})


def test_repeat_keeps_groups_adjacent():
    assert make(2).repeat(3)["s"].tolist() == [0, 0, 0, 1, 1, 1]


def test_chunk_then_concat_round_trips():
    b = make(6)
    back = Batch.concat(b.chunk(3))
    assert torch.equal(back["x"], b["x"]) and list(back["ids"]) == list(b["ids"]) and back.meta == {"step": 7}


def test_concat_right_pads_per_token_tensors_to_the_widest():
    merged = Batch.concat([make(1, width=2), make(1, width=4)])
    # row 0 had width 2: [0, 1] -> [0, 1, 0, 0]
    assert merged["x"].tolist() == [[0, 1, 0, 0], [0, 1, 2, 3]]


def test_pad_to_multiple_appends_copies_and_reports_the_count():
    padded, pad = make(5).pad_to_multiple(4)
    assert (len(padded), pad) == (8, 3) and padded["s"].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]


def test_select_union_and_index():
    b = make(3)
    sel = b.select("s")
    assert sel.keys() == ["s"]
    u = sel.union(Batch({"y": torch.ones(3)}))
    assert sorted(u.keys()) == ["s", "y"]
    assert b.index(np.array([2, 0]))["s"].tolist() == [2, 0]
    with pytest.raises(KeyError, match="no fields"):
        b.select("nope")


def test_split_gives_parts_of_at_most_size():
    assert [len(p) for p in make(5).split(2)] == [2, 2, 1]
