"""DAPO online filtering: which groups survive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longrl.algorithms import groups_to_keep


def test_keeps_only_groups_whose_mean_score_is_strictly_inside_the_bounds():
    scores = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5])
    keep = groups_to_keep(scores, ["a", "a", "b", "b", "c", "c", "d", "d"], low=0.01, high=0.99)
    # means a 1 (all solved, dropped), b 0.5, c 0 (all failed, dropped), d 0.5
    assert keep.dtype == np.bool_
    assert keep.tolist() == [False, False, True, True, False, False, True, True]


def test_a_group_mean_equal_to_a_bound_is_dropped():
    # means (exact in binary): g1 (0 + 0.5) / 2 = 0.25 = low ; g2 (1 + 0.5) / 2 = 0.75 = high ; g3 0.5 inside
    scores = torch.tensor([0.0, 0.5, 1.0, 0.5, 0.25, 0.75])
    keep = groups_to_keep(scores, [1, 1, 2, 2, 3, 3], low=0.25, high=0.75)
    assert keep.tolist() == [False, False, False, False, True, True]


def test_groups_need_not_be_contiguous():
    # x: (1 + 0 + 0) / 3 = 0.33333333 kept ; y: (1 + 1) / 2 = 1 dropped
    keep = groups_to_keep(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0]), ["x", "y", "x", "y", "x"], low=0.0, high=1.0)
    assert keep.tolist() == [True, False, True, False, True]


def test_score_and_group_id_counts_must_match():
    with pytest.raises(ValueError, match="got 2 scores but 3 group ids"):
        groups_to_keep(torch.tensor([1.0, 0.0]), [0, 0, 1], low=0.0, high=1.0)
