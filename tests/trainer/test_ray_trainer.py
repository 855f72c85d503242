"""The driver's pieces of a step that need no workers: online filtering's rounds and metrics, the
rollout-vs-trainer log-prob gap."""

from __future__ import annotations

import math

import pytest
import torch

from longrl.config import load_config
from longrl.protocol import Batch
from longrl.trainer.ray_trainer import fill_with_mixed_groups, rollout_drift_metrics


def scored(round_: int, group_scores: list[list[float]]) -> Batch:
    """A scored generation round: one group of len(scores) responses per prompt."""
    rows = [(f"{round_}.{g}", s) for g, scores in enumerate(group_scores) for s in scores]
    batch = Batch({"response_mask": torch.ones(len(rows), 2, dtype=torch.long)})
    batch["uid"] = [uid for uid, _ in rows]
    batch["scores"] = [{"overall": s, "accuracy": s} for _, s in rows]
    return batch


def test_online_filtering_reports_rewards_over_every_round_not_only_the_last():
    cfg = load_config(["data.rollout_batch_size=2", "worker.rollout.n=2", "algorithm.online_filtering=true",
                       "algorithm.filter_low=0.01", "algorithm.filter_high=0.99"])
    rounds = {1: [[1.0, 1.0], [1.0, 0.0]],   # the all-equal group is dropped, the mixed one kept
              2: [[0.0, 0.0], [0.0, 1.0]]}
    batch, metrics = fill_with_mixed_groups(lambda r: scored(r, rounds[r]), cfg, n=2)
    assert list(batch["uid"]) == ["1.1", "1.1", "2.1", "2.1"]
    # every response generated: (1 + 1 + 1 + 0 + 0 + 0 + 0 + 1) / 8 = 0.5 (the last round alone: 1/4)
    assert metrics["reward/overall"] == 0.5 and metrics["reward/accuracy"] == 0.5
    assert (metrics["rollout/gen_rounds"], metrics["rollout/kept_groups"], metrics["rollout/seen_groups"]) == (2, 2, 4)


def test_rollout_drift_metrics_compare_engine_and_trainer_log_probs_on_valid_tokens():
    batch = Batch({"response_mask": torch.tensor([[1, 1, 0], [1, 0, 0]]),
                   "rollout_log_probs": torch.tensor([[-1.0, -2.0, -9.0], [-0.5, 0.0, 0.0]]),
                   "old_log_probs": torch.tensor([[-1.0, -1.5, 0.0], [-0.7, 0.0, 0.0]])})
    metrics = rollout_drift_metrics(batch)
    # |diffs| on valid tokens: 0, 0.5, 0.2 -> mean 0.7/3, max 0.5
    assert metrics["rollout/log_prob_diff_mean"] == pytest.approx(0.7 / 3, abs=1e-6)
    assert metrics["rollout/log_prob_diff_max"] == pytest.approx(0.5, abs=1e-6)
    # k3 with d = old - rollout: d = 0, 0.5, -0.2 -> (0 + (e^0.5 - 1.5) + (e^-0.2 - 0.8)) / 3
    expected = (0 + (math.exp(0.5) - 1.5) + (math.exp(-0.2) - 0.8)) / 3
    assert metrics["rollout/kl_to_old"] == pytest.approx(expected, abs=1e-6)


def test_rollout_kl_keeps_its_resolution_when_the_gap_is_float32_rounding():
    old = torch.tensor([[-1.0]])
    batch = Batch({"response_mask": torch.ones(1, 1, dtype=torch.long), "old_log_probs": old,
                   "rollout_log_probs": old + 2.0**-20})  # one fp32 ulp-scale gap, d = -2^-20 ~ -9.5e-7
    # k3 = e^d - d - 1 ~ d^2 / 2 = 2^-41 ~ 4.5e-13: zero in float32, kept in float64
    assert rollout_drift_metrics(batch)["rollout/kl_to_old"] == pytest.approx(2.0**-41, rel=1e-5)
