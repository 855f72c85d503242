"""DAPO dynamic sampling (https://arxiv.org/abs/2503.14476): keep only prompts whose responses disagree.

A group whose responses all succeed or all fail has zero GRPO advantage and teaches nothing;
the trainer drops such groups and samples more prompts until the batch is full.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import torch
from torch import Tensor

from longrl.algorithms.advantage import group_codes


def groups_to_keep(scores: Tensor, group_ids: Sequence[Hashable], low: float, high: float) -> np.ndarray:
    """Boolean mask `[B]`: True where the sample's group mean score lies strictly inside (low, high)."""
    scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    if len(group_ids) != scores.shape[0]:
        raise ValueError(f"online filtering got {scores.shape[0]} scores but {len(group_ids)} group ids; "
                         f"pass one id per response")
    codes, counts = group_codes(group_ids)
    sums = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, codes, scores)
    means = (sums / counts)[codes]
    return ((means > low) & (means < high)).numpy()
