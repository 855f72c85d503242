"""KL estimators, KL controllers and KL-shaped rewards on hand-worked tokens."""

from __future__ import annotations

import math

import pytest
import torch

from longrl.algorithms import (
    KL_PENALTIES,
    AdaptiveKLController,
    FixedKLController,
    apply_kl_to_rewards,
    kl_penalty,
    make_kl_controller,
)
from longrl.config import AlgorithmConfig, ConfigError

LOG_PROBS = torch.tensor([[-1.0, -2.0, -0.5]])
REF_LOG_PROBS = torch.tensor([[-1.5, -1.0, -0.5]])  # log p - log ref = 0.5, -1, 0


@pytest.mark.parametrize(("name", "expected"), [
    ("kl", [0.5, -1.0, 0.0]),  # k1 = log p - log ref
    ("abs", [0.5, 1.0, 0.0]),  # |k1|
    ("mse", [0.125, 0.5, 0.0]),  # 0.5 * k1^2: 0.5 * 0.25, 0.5 * 1
    # k3 with d = log ref - log p = -0.5, 1, 0: e^-0.5 + 0.5 - 1 = 0.10653066 ; e - 1 - 1 = 0.71828183 ; 0
    ("low_var_kl", [0.10653066, 0.71828183, 0.0]),
])
def test_per_token_estimator_values(name, expected):
    torch.testing.assert_close(kl_penalty(LOG_PROBS, REF_LOG_PROBS, name), torch.tensor([expected]),
                               atol=1e-6, rtol=0)


def test_low_var_kl_is_clamped_to_ten_in_both_directions():
    # d = 15: e^15 - 16 = 3.3e6 -> 10 ; d = -30 clamped to -20: e^-20 + 20 - 1 = 19 -> 10
    out = kl_penalty(torch.tensor([[0.0, 0.0]]), torch.tensor([[15.0, -30.0]]), "low_var_kl")
    torch.testing.assert_close(out, torch.tensor([[10.0, 10.0]]))


def test_estimators_on_bf16_inputs_return_float32():
    out = kl_penalty(LOG_PROBS.bfloat16(), REF_LOG_PROBS.bfloat16(), "mse")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[0.125, 0.5, 0.0]]))  # exact in bf16: -1, -2, -0.5, -1.5


def test_full_kl_sums_over_the_vocabulary_and_treats_zero_probability_as_zero():
    log_p = torch.tensor([[[math.log(0.25), math.log(0.75)], [float("-inf"), 0.0]]])
    log_ref = torch.tensor([[[math.log(0.5), math.log(0.5)], [math.log(0.5), math.log(0.5)]]])
    out = kl_penalty(log_p, log_ref, "full")
    # 0.25 ln(0.25 / 0.5) + 0.75 ln(0.75 / 0.5) = -0.17328680 + 0.30409883 = 0.13081204
    # 0 * (...) + 1 * ln(1 / 0.5) = ln 2 = 0.69314718
    torch.testing.assert_close(out, torch.tensor([[0.13081204, 0.69314718]]), atol=1e-6, rtol=0)


def test_full_kl_on_per_token_log_probs_explains_the_shape_it_needs():
    with pytest.raises(ValueError, match=r"'full' needs full-vocabulary log-probs of shape \[B, T, V\], got \(1, 3\)"):
        kl_penalty(LOG_PROBS, REF_LOG_PROBS, "full")


def test_unknown_estimator_error_lists_the_valid_names():
    assert sorted(KL_PENALTIES) == ["abs", "flow_grpo", "full", "kl", "low_var_kl", "mse"]
    with pytest.raises(ConfigError, match=r"algorithm.kl_penalty='k3' is unknown; choose from "
                                          r"\['abs', 'flow_grpo', 'full', 'kl', 'low_var_kl', 'mse'\]"):
        kl_penalty(LOG_PROBS, REF_LOG_PROBS, "k3")


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match=r"log_probs \(1, 3\) and ref_log_probs \(1, 2\)"):
        kl_penalty(LOG_PROBS, REF_LOG_PROBS[:, :2], "kl")


# ---- controllers ---------------------------------------------------------------------------------
def test_fixed_controller_keeps_its_coefficient():
    ctrl = make_kl_controller(AlgorithmConfig(kl_type="fixed", kl_coef=0.05))
    assert isinstance(ctrl, FixedKLController)
    ctrl.update(current_kl=3.0, n_steps=100)
    assert ctrl.value == 0.05


def test_adaptive_controller_moves_the_coefficient_towards_the_target_with_error_clipped_at_20_percent():
    ctrl = make_kl_controller(AlgorithmConfig(kl_type="adaptive", kl_coef=0.1, kl_target=0.1, kl_horizon=100))
    assert isinstance(ctrl, AdaptiveKLController)
    ctrl.update(current_kl=0.15, n_steps=10)
    # error clip(0.15 / 0.1 - 1 = 0.5) = 0.2 ; 0.1 * (1 + 0.2 * 10 / 100) = 0.102
    assert ctrl.value == pytest.approx(0.102, abs=1e-12)
    ctrl.update(current_kl=0.09, n_steps=10)
    # error 0.09 / 0.1 - 1 = -0.1 ; 0.102 * (1 - 0.1 * 10 / 100) = 0.102 * 0.99 = 0.10098
    assert ctrl.value == pytest.approx(0.10098, abs=1e-12)


def test_adaptive_controller_with_non_positive_target_is_refused():
    with pytest.raises(ConfigError, match=r"algorithm.kl_target=0.0 .* must both be > 0"):
        make_kl_controller(AlgorithmConfig(kl_type="adaptive", kl_target=0.0))


# ---- KL in the reward ----------------------------------------------------------------------------
def kl_reward_batch() -> dict[str, torch.Tensor]:
    ref = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    return {
        "token_level_scores": torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]]),
        "log_probs": ref + torch.tensor([[0.5, -1.0, 0.0], [0.2, 0.4, 7.0]]),  # k1; the 7 sits on padding
        "ref_log_probs": ref,
        "response_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
    }


def test_kl_in_reward_subtracts_beta_times_kl_on_valid_tokens_only():
    b = kl_reward_batch()
    rewards, metrics = apply_kl_to_rewards(b["token_level_scores"], b["log_probs"], b["ref_log_probs"],
                                           b["response_mask"], FixedKLController(0.1), "kl")
    # row 0: 0 - 0.1 * 0.5, 0 - 0.1 * -1, 1 - 0 = -0.05, 0.1, 1 ; row 1: -0.02, 2 - 0.04 = 1.96, 0 (padding)
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, 1.0], [-0.02, 1.96, 0.0]]), atol=1e-6, rtol=0)
    # batch KL: mean of per-response means ((0.5 - 1 + 0) / 3, (0.2 + 0.4) / 2) = (-0.16666667 + 0.3) / 2
    assert metrics["actor/reward_kl_penalty"] == pytest.approx(0.06666667, abs=1e-6)
    assert metrics["actor/reward_kl_coef"] == 0.1


def test_kl_in_reward_updates_an_adaptive_controller_after_using_its_current_value():
    b = kl_reward_batch()
    ctrl = AdaptiveKLController(init_kl_coef=0.1, target_kl=0.1, horizon=10)
    _, metrics = apply_kl_to_rewards(b["token_level_scores"], b["log_probs"], b["ref_log_probs"],
                                     b["response_mask"], ctrl, "kl")
    assert metrics["actor/reward_kl_coef"] == 0.1
    # error clip(0.06666667 / 0.1 - 1 = -0.333) = -0.2, n_steps = 2 responses: 0.1 * (1 - 0.2 * 2 / 10) = 0.096
    assert ctrl.value == pytest.approx(0.096, abs=1e-9)


def test_flow_grpo_kl_is_the_closed_form_gaussian_kl_over_the_step_means():
    from longrl.algorithms import kl_penalty

    # means scaled by s: (1, 3) vs (0, 1) -> 0.5 * mean(1, 4) = 1.25; identical means -> 0
    scaled = torch.tensor([[[1.0, 3.0], [2.0, 2.0]]])
    ref = torch.tensor([[[0.0, 1.0], [2.0, 2.0]]])
    assert kl_penalty(scaled, ref, "flow_grpo").tolist() == [[1.25, 0.0]]
    with pytest.raises(ValueError, match=r"flow_grpo' needs step means of shape \[B, T, D\]"):
        kl_penalty(scaled[..., 0], ref[..., 0], "flow_grpo")
