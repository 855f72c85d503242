"""Advantage estimators on small hand-worked batches, plus properties over random groups."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longrl.algorithms import ADVANTAGES, AdvantageInputs, Requires, compute_advantages
from longrl.config import AlgorithmConfig, ConfigError

PROPERTY = settings(max_examples=30, deadline=None)


def outcome_rewards(scores: list[float], lengths: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rewards with each score on the response's last valid token, and the right-padded mask."""
    rewards = torch.zeros(len(scores), width)
    mask = torch.zeros(len(scores), width)
    for i, (score, length) in enumerate(zip(scores, lengths)):
        mask[i, :length] = 1
        rewards[i, length - 1] = score
    return rewards, mask


def run(estimator: str, rewards, mask, group_ids, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    extra = {k: kwargs.pop(k) for k in ("values", "reward_baselines") if k in kwargs}
    cfg = AlgorithmConfig(adv_estimator=estimator, **kwargs)
    return compute_advantages(AdvantageInputs(rewards, mask, group_ids, **extra), cfg)


def test_registry_holds_every_estimator_with_what_it_declares_it_needs():
    assert sorted(ADVANTAGES) == ["dapo", "gae", "grpo", "reinforce_plus_plus", "remax", "rloo"]
    assert {name: ADVANTAGES.requires(name) for name in ADVANTAGES} == {
        "grpo": Requires(groups=True), "dapo": Requires(groups=True), "rloo": Requires(groups=True),
        "remax": Requires(greedy_baseline=True), "gae": Requires(critic=True), "reinforce_plus_plus": Requires()}


# ---- grpo / dapo ---------------------------------------------------------------------------------
def test_grpo_normalises_by_group_mean_and_unbiased_std_and_zeroes_padding():
    rewards, mask = outcome_rewards([1.0, 0.0, 3.0, 0.0, 0.0], [2, 3, 1, 2, 3], width=3)
    adv, returns = run("grpo", rewards, mask, ["a", "a", "b", "b", "b"])
    # group a: scores 1, 0 -> mean 0.5, std sqrt((0.25 + 0.25) / 1) = 0.70710678
    #   advantages +-0.5 / (0.70710678 + 1e-6) = +-0.70710578
    # group b: scores 3, 0, 0 -> mean 1, deviations 2, -1, -1, std sqrt((4 + 1 + 1) / 2) = 1.73205081
    #   advantages 2 / 1.73205181 = 1.15469987, -1 / 1.73205181 = -0.57734994
    a, b1, b2 = 0.70710578, 1.15469987, 0.57734994
    expected = torch.tensor([[a, a, 0.0], [-a, -a, -a], [b1, 0.0, 0.0], [-b2, -b2, 0.0], [-b2, -b2, -b2]])
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(returns, expected, atol=1e-6, rtol=0)


def test_dr_grpo_only_centres_scores_when_norm_adv_by_std_is_false():
    rewards, mask = outcome_rewards([3.0, 0.0, 0.0], [1, 2, 2], width=2)
    adv, _ = run("grpo", rewards, mask, [7, 7, 7], norm_adv_by_std=False)
    # mean (3 + 0 + 0) / 3 = 1 -> 3 - 1 = 2, 0 - 1 = -1
    torch.testing.assert_close(adv, torch.tensor([[2.0, 0.0], [-1.0, -1.0], [-1.0, -1.0]]), atol=1e-6, rtol=0)


def test_dapo_advantage_equals_grpo_advantage():
    rewards, mask = outcome_rewards([1.0, 0.0, 0.0, 1.0], [1, 2, 2, 1], width=2)
    grpo_adv, _ = run("grpo", rewards, mask, [0, 0, 1, 1])
    dapo_adv, _ = run("dapo", rewards, mask, [0, 0, 1, 1])
    # each group of two with scores {1, 0}: +-0.5 / (0.70710678 + 1e-6) = +-0.70710578
    a = 0.70710578
    torch.testing.assert_close(dapo_adv, torch.tensor([[a, 0.0], [-a, -a], [-a, -a], [a, 0.0]]), atol=1e-6, rtol=0)
    assert torch.equal(dapo_adv, grpo_adv)


@pytest.mark.parametrize("estimator", ["grpo", "dapo", "rloo"])
@pytest.mark.parametrize("norm", [True, False])
def test_group_advantage_is_exactly_zero_when_group_rewards_are_equal(estimator, norm):
    rewards, mask = outcome_rewards([0.7, 0.7, 0.0, 0.0, 0.0], [3, 1, 2, 3, 1], width=3)
    adv, returns = run(estimator, rewards, mask, ["p", "p", "q", "q", "q"], norm_adv_by_std=norm)
    assert torch.equal(adv, torch.zeros(5, 3))
    assert torch.equal(returns, torch.zeros(5, 3))


def test_outcome_score_sums_rewards_over_valid_tokens_and_ignores_rewards_on_padding():
    rewards = torch.tensor([[0.5, 0.5, 100.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv, _ = run("grpo", rewards, mask, [0, 0], norm_adv_by_std=False)
    # scores 0.5 + 0.5 = 1 (100 sits on padding) and 0 -> mean 0.5 -> +0.5, -0.5
    torch.testing.assert_close(adv, torch.tensor([[0.5, 0.5, 0.0], [-0.5, -0.5, -0.5]]), atol=1e-6, rtol=0)


def test_grpo_on_bf16_rewards_returns_float32_advantages():
    rewards, mask = outcome_rewards([1.0, 0.0], [2, 1], width=2)
    adv, _ = run("grpo", rewards.bfloat16(), mask.bfloat16(), ["g", "g"])
    assert adv.dtype == torch.float32
    # +-0.5 / (0.70710678 + 1e-6) = +-0.70710578
    torch.testing.assert_close(adv, torch.tensor([[0.70710578, 0.70710578], [-0.70710578, 0.0]]), atol=1e-6, rtol=0)


def test_group_estimator_refuses_a_group_with_a_single_response():
    rewards, mask = outcome_rewards([1.0, 0.0, 1.0], [1, 1, 1], width=1)
    with pytest.raises(ValueError, match=r"groups \['solo'\] have a single response; set worker.rollout.n>=2"):
        run("grpo", rewards, mask, ["pair", "pair", "solo"])


@PROPERTY
@given(st.lists(st.lists(st.floats(-10, 10), min_size=2, max_size=5), min_size=1, max_size=4), st.booleans())
def test_grpo_advantages_sum_to_zero_within_each_group(groups, norm):
    scores = [s for g in groups for s in g]
    group_ids = [i for i, g in enumerate(groups) for _ in g]
    rewards, mask = outcome_rewards(scores, [1] * len(scores), width=2)
    adv, _ = run("grpo", rewards, mask, group_ids, norm_adv_by_std=norm)
    per_sample = adv[:, 0]
    for gid in range(len(groups)):
        members = per_sample[torch.tensor(group_ids) == gid]
        assert abs(members.sum().item()) < 1e-4 * len(members)
    assert torch.equal(adv[:, 1], torch.zeros(len(scores)))


# ---- rloo ----------------------------------------------------------------------------------------
def test_rloo_subtracts_the_mean_score_of_the_other_responses():
    rewards, mask = outcome_rewards([3.0, 0.0, 0.0, 1.0, 0.0], [1, 2, 1, 2, 2], width=2)
    adv, returns = run("rloo", rewards, mask, ["x", "x", "x", "y", "y"])
    # group x: 3 - (0 + 0) / 2 = 3; 0 - (3 + 0) / 2 = -1.5 (twice); group y (size 2): 1 - 0 = 1, 0 - 1 = -1
    expected = torch.tensor([[3.0, 0.0], [-1.5, -1.5], [-1.5, 0.0], [1.0, 1.0], [-1.0, -1.0]])
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(returns, expected, atol=1e-6, rtol=0)


@PROPERTY
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=6), st.data())
def test_rloo_baseline_excludes_the_sample_itself(scores, data):
    i = data.draw(st.integers(0, len(scores) - 1))
    shift = data.draw(st.floats(-5, 5))
    group_ids = ["g"] * len(scores)
    rewards, mask = outcome_rewards(scores, [1] * len(scores), width=1)
    adv, _ = run("rloo", rewards, mask, group_ids)
    others = [s for j, s in enumerate(scores) if j != i]
    assert abs((rewards[i, 0] - adv[i, 0]).item() - sum(others) / len(others)) < 1e-4
    # Changing the sample's own score moves its advantage one-for-one: its baseline does not see it.
    moved = rewards.clone()
    moved[i, 0] += shift
    adv_moved, _ = run("rloo", moved, mask, group_ids)
    assert abs((adv_moved[i, 0] - adv[i, 0]).item() - (moved[i, 0] - rewards[i, 0]).item()) < 1e-4


# ---- remax ---------------------------------------------------------------------------------------
def test_remax_subtracts_the_greedy_score_on_every_valid_token():
    rewards, mask = outcome_rewards([1.0, 0.0], [3, 2], width=3)
    adv, returns = run("remax", rewards, mask, [0, 0], reward_baselines=torch.tensor([0.25, 0.25]))
    # 1 - 0.25 = 0.75 ; 0 - 0.25 = -0.25
    expected = torch.tensor([[0.75, 0.75, 0.75], [-0.25, -0.25, 0.0]])
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(returns, expected, atol=1e-6, rtol=0)


def test_remax_without_greedy_baselines_names_what_is_missing():
    rewards, mask = outcome_rewards([1.0], [1], width=1)
    with pytest.raises(ValueError, match="remax' needs reward_baselines"):
        run("remax", rewards, mask, [0])


# ---- reinforce++ ---------------------------------------------------------------------------------
def test_reinforce_plus_plus_whitens_discounted_returns_over_valid_tokens():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])  # the 5 sits on padding
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, returns = run("reinforce_plus_plus", rewards, mask, [0, 1], gamma=0.5)
    # returns row 0: 1, 0 + 0.5 * 1 = 0.5, 0.5 * 0.5 = 0.25 ; row 1: pad 0, 2, 0.5 * 2 = 1
    torch.testing.assert_close(returns, torch.tensor([[0.25, 0.5, 1.0], [1.0, 2.0, 0.0]]), atol=1e-6, rtol=0)
    # valid returns 0.25 0.5 1 1 2: mean 4.75 / 5 = 0.95; squared deviations 0.49 0.2025 0.0025 0.0025 1.1025
    # sum 1.8, unbiased var 1.8 / 4 = 0.45, std 0.67082039
    # -0.7 / 0.67082039 = -1.04349838 ; -0.45 / .. = -0.67082039 ; 0.05 / .. = 0.07453560 ; 1.05 / .. = 1.56524757
    expected = torch.tensor([[-1.04349838, -0.67082039, 0.07453560], [0.07453560, 1.56524757, 0.0]])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)


def test_reinforce_plus_plus_return_does_not_flow_back_across_a_masked_span():
    rewards = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 0, 1], [1, 1, 1]])  # row 0: a non-response token in the middle
    _, returns = run("reinforce_plus_plus", rewards, mask, [0, 1], gamma=1.0)
    # row 0: t2 1 ; t1 masked: the running return resets to 0 ; t0 1 + 0 = 1 (not 2)
    torch.testing.assert_close(returns, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]), atol=1e-6, rtol=0)


# ---- gae -----------------------------------------------------------------------------------------
def test_gae_runs_the_backward_recursion_and_whitens_advantages():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.2, 0.4, 0.6], [1.0, 0.5, 9.0]])  # the 9 sits on padding and must not be read
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, returns = run("gae", rewards, mask, [0, 1], values=values, gamma=0.9, lam=0.5)
    # gamma * lam = 0.45
    # row 0: t2 d = 1 - 0.6 = 0.4, A = 0.4 ; t1 d = 0.9 * 0.6 - 0.4 = 0.14, A = 0.14 + 0.45 * 0.4 = 0.32
    #        t0 d = 0.9 * 0.4 - 0.2 = 0.16, A = 0.16 + 0.45 * 0.32 = 0.304 ; returns A + V = 0.504 0.72 1.0
    # row 1: t1 d = 2 - 0.5 = 1.5, A = 1.5 ; t0 d = 0.9 * 0.5 - 1 = -0.55, A = -0.55 + 0.45 * 1.5 = 0.125
    #        returns 1.125 2.0
    torch.testing.assert_close(returns, torch.tensor([[0.504, 0.72, 1.0], [1.125, 2.0, 0.0]]), atol=1e-6, rtol=0)
    # whiten 0.304 0.32 0.4 0.125 1.5: mean 2.649 / 5 = 0.5298; squared deviations sum 1.2170008;
    # var 1.2170008 / 4 = 0.3042502, std 0.55158880; (A - 0.5298) / 0.55158880
    expected = torch.tensor([[-0.40936291, -0.38035580, -0.23532022], [-0.73388001, 1.75891895, 0.0]])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)


def test_gae_skips_a_masked_span_so_the_next_valid_value_bootstraps():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 9.0, 0.25]])
    mask = torch.tensor([[1, 0, 1]])  # a non-response token in the middle
    adv, returns = run("gae", rewards, mask, [0], values=values, gamma=1.0, lam=1.0)
    # t2: d = 1 - 0.25 = 0.75, A = 0.75 ; t1 skipped (A and V carried) ; t0: d = 0.25 - 0.5 = -0.25, A = 0.5
    torch.testing.assert_close(returns, torch.tensor([[1.0, 0.0, 1.0]]), atol=1e-6, rtol=0)
    # whiten 0.5, 0.75: mean 0.625, var (0.015625 + 0.015625) / 1 = 0.03125, std 0.17677670 -> -+0.70710667
    torch.testing.assert_close(adv, torch.tensor([[-0.70710667, 0.0, 0.70710667]]), atol=1e-6, rtol=0)


def test_gae_without_critic_values_names_the_fix():
    rewards, mask = outcome_rewards([1.0], [1], width=1)
    with pytest.raises(ValueError, match="gae' needs the critic's values"):
        run("gae", rewards, mask, [0])


@PROPERTY
@given(st.data(), st.floats(0.5, 1.0), st.floats(0.0, 1.0))
def test_gae_returns_equal_the_backward_recursion(data, gamma, lam):
    batch, width = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 5))
    lengths = [data.draw(st.integers(1, width)) for _ in range(batch)]
    floats = st.lists(st.floats(-3, 3), min_size=width, max_size=width)
    rewards = torch.tensor([data.draw(floats) for _ in range(batch)])
    values = torch.tensor([data.draw(floats) for _ in range(batch)])
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).float()
    adv, returns = run("gae", rewards, mask, list(range(batch)), values=values, gamma=gamma, lam=lam)
    for i, length in enumerate(lengths):
        r, v = rewards[i].tolist(), values[i].tolist()
        expected, a = [0.0] * width, 0.0
        for t in reversed(range(length)):
            next_v = v[t + 1] if t + 1 < length else 0.0
            a = r[t] + gamma * next_v - v[t] + gamma * lam * a
            expected[t] = a + v[t]
        torch.testing.assert_close(returns[i], torch.tensor(expected), atol=1e-4, rtol=1e-4)
        assert torch.equal(adv[i, length:], torch.zeros(width - length))


# ---- dispatch ------------------------------------------------------------------------------------
def test_unknown_estimator_error_lists_the_valid_names():
    rewards, mask = outcome_rewards([1.0, 0.0], [1, 1], width=1)
    with pytest.raises(ConfigError, match=r"algorithm.adv_estimator='ppo' is unknown; choose from \['dapo', 'gae', "
                                          r"'grpo', 'reinforce_plus_plus', 'remax', 'rloo'\]"):
        run("ppo", rewards, mask, [0, 0])


def test_group_ids_of_the_wrong_length_are_refused():
    rewards, mask = outcome_rewards([1.0, 0.0], [1, 1], width=1)
    with pytest.raises(ValueError, match="group_ids has 3 entries for a batch of 2"):
        run("grpo", rewards, mask, [0, 0, 0])



def test_a_response_without_tokens_keeps_its_score_in_its_groups_baseline():
    # row 0 has no valid token; its score 1 sits at position 0 (masked), as the trainer places it
    rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[0, 0], [1, 1]])
    adv, _ = run("grpo", rewards, mask, ["a", "a"])
    # scores 1, 0 -> mean 0.5, std sqrt(0.5) = 0.70710678 -> row 1: -0.5 / 0.70710678 = -0.70710678 per token
    assert torch.allclose(adv, torch.tensor([[0.0, 0.0], [-0.70710578, -0.70710578]]), atol=1e-6)
