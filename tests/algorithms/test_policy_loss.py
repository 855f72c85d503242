"""Policy losses, loss averaging and the value loss on hand-worked tokens."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longrl.algorithms import POLICY_LOSSES, aggregate_loss, compute_policy_loss, compute_value_loss
from longrl.config import ActorConfig, ConfigError

LN = math.log


def actor_cfg(**overrides) -> ActorConfig:
    return ActorConfig(**{"clip_ratio_low": 0.2, "clip_ratio_high": 0.3, "clip_ratio_dual": 3.0, **overrides})


def ppo_batch() -> dict[str, torch.Tensor]:
    """Row 0: three tokens with ratios 1.5, 0.5, 4; row 1: one token with ratio 1, then padding with junk."""
    old = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.0, -1.0]])
    ratios = torch.tensor([[1.5, 0.5, 4.0], [1.0, 10.0, 10.0]])
    return {
        "log_probs": (old + ratios.log()).requires_grad_(),
        "old_log_probs": old,
        "advantages": torch.tensor([[1.0, -1.0, -1.0], [2.0, 5.0, 5.0]]),
        "response_mask": torch.tensor([[1, 1, 1], [1, 0, 0]]),
    }


def test_registry_holds_ppo_gspo_gspo_token_sapo_and_cispo():
    assert sorted(POLICY_LOSSES) == ["cispo", "gspo", "gspo_token", "ppo", "sapo"]


# ---- aggregation ---------------------------------------------------------------------------------
def test_token_mode_averages_valid_tokens_and_seq_mode_averages_sequence_means():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 50.0, 60.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # token: (1 + 2 + 3 + 4) / 4 = 2.5 ; seq: ((1 + 2 + 3) / 3 + 4 / 1) / 2 = (2 + 4) / 2 = 3
    assert aggregate_loss(loss, mask, "token").item() == pytest.approx(2.5, abs=1e-7)
    assert aggregate_loss(loss, mask, "seq").item() == pytest.approx(3.0, abs=1e-7)


def test_seq_mode_counts_an_empty_response_as_zero_and_all_padding_gives_zero_not_nan():
    loss = torch.tensor([[1.0, 2.0], [9.0, float("nan")]])
    # row 0 mean 1.5, row 1 has no token -> 0: (1.5 + 0) / 2 = 0.75 ; token mode: (1 + 2) / 2 = 1.5
    assert aggregate_loss(loss, torch.tensor([[1, 1], [0, 0]]), "seq").item() == pytest.approx(0.75, abs=1e-7)
    assert aggregate_loss(loss, torch.tensor([[1, 1], [0, 0]]), "token").item() == pytest.approx(1.5, abs=1e-7)
    for mode in ("token", "seq"):
        assert aggregate_loss(loss, torch.zeros(2, 2), mode).item() == 0.0


def test_unknown_loss_avg_mode_names_the_key_and_choices():
    with pytest.raises(ConfigError, match=r"worker.actor.loss_avg_mode='mean' is unknown; choose from "
                                          r"\['token', 'seq', 'seq-mean-token-sum-norm'\]"):
        aggregate_loss(torch.ones(1, 1), torch.ones(1, 1), "mean")


def test_dr_grpo_mode_sums_each_response_and_divides_by_the_constant_length():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 50.0, 60.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # sums 6 and 4, each / 8 (max_response_length, not the padded width 3): (0.75 + 0.5) / 2 = 0.625
    assert aggregate_loss(loss, mask, "seq-mean-token-sum-norm", norm_length=8).item() == pytest.approx(0.625, abs=1e-7)
    with pytest.raises(ValueError, match="norm_length=data.max_response_length"):
        aggregate_loss(loss, mask, "seq-mean-token-sum-norm")


def test_dr_grpo_mode_gives_every_token_the_same_gradient_whatever_its_response_length():
    # One token of a 1-token response and one of a 4-token response, both with advantage 1 and ratio 1.
    log_probs = torch.zeros(2, 4, requires_grad=True)
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]])
    advantages = torch.ones(2, 4)
    for mode, expected in (("seq", [[-0.5, 0, 0, 0], [-0.125] * 4]),                   # 1/(2*1) vs 1/(2*4)
                           ("seq-mean-token-sum-norm", [[-0.0625, 0, 0, 0], [-0.0625] * 4])):  # 1/(2*8) each
        log_probs.grad = None
        loss, _ = compute_policy_loss(log_probs, torch.zeros(2, 4), advantages, mask, actor_cfg(loss_avg_mode=mode),
                                      norm_length=8)
        loss.backward()
        assert torch.allclose(log_probs.grad, torch.tensor(expected), atol=1e-7), mode


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_token_and_seq_modes_agree_when_all_responses_have_equal_length(data):
    batch, width = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 6))
    length = data.draw(st.integers(1, width))
    loss = torch.tensor([data.draw(st.lists(st.floats(-100, 100), min_size=width, max_size=width))
                         for _ in range(batch)])
    mask = (torch.arange(width) < length).expand(batch, width)
    token, seq = aggregate_loss(loss, mask, "token"), aggregate_loss(loss, mask, "seq")
    assert abs(token.item() - seq.item()) <= 1e-4 * (1 + abs(token.item()))


# ---- ppo -----------------------------------------------------------------------------------------
def test_ppo_clips_the_ratio_applies_the_dual_clip_and_ignores_padding():
    b = ppo_batch()
    loss, metrics = compute_policy_loss(b["log_probs"], b["old_log_probs"], b["advantages"], b["response_mask"],
                                        actor_cfg(loss_avg_mode="token"))
    # clip range [0.8, 1.3], dual 3
    # A=+1, r=1.5: max(-1.5, -1.3) = -1.3 (clipped)     A=-1, r=0.5: max(0.5, 0.8) = 0.8 (clipped)
    # A=-1, r=4:   max(4, 1.3) = 4 -> min(4, 3) = 3 (dual)  A=+2, r=1: -2
    # token mean (-1.3 + 0.8 + 3 - 2) / 4 = 0.125
    assert loss.item() == pytest.approx(0.125, abs=1e-6)
    assert metrics["pg_loss"] == pytest.approx(0.125, abs=1e-6)
    assert metrics["pg_clipfrac"] == pytest.approx(0.5, abs=1e-7)  # 2 of 4 tokens
    assert metrics["pg_clipfrac_lower"] == pytest.approx(0.25, abs=1e-7)  # 1 of 4 tokens
    # ppo_kl = mean(old - new) = -(ln 1.5 + ln 0.5 + ln 4 + ln 1) / 4 = -ln 3 / 4 = -0.27465307
    assert metrics["ppo_kl"] == pytest.approx(-0.27465307, abs=1e-6)
    loss.backward()
    # only the unclipped token carries gradient: d(-A r)/d log p = -A r = -2, / 4 tokens = -0.5
    torch.testing.assert_close(b["log_probs"].grad, torch.tensor([[0.0, 0.0, 0.0], [-0.5, 0.0, 0.0]]))


def test_ppo_seq_mode_averages_per_sequence_means():
    b = ppo_batch()
    loss, _ = compute_policy_loss(b["log_probs"], b["old_log_probs"], b["advantages"], b["response_mask"],
                                  actor_cfg(loss_avg_mode="seq"))
    # row 0: (-1.3 + 0.8 + 3) / 3 = 0.83333333 ; row 1: -2 ; mean (0.83333333 - 2) / 2 = -0.58333333
    assert loss.item() == pytest.approx(-0.58333333, abs=1e-6)


def test_truncated_importance_sampling_weights_tokens_by_capped_old_over_rollout_ratio():
    b = ppo_batch()
    # old / rollout = 0.5, 1, 4 (capped at 2) ; 1 on row 1
    rollout = b["old_log_probs"] - torch.tensor([[0.5, 1.0, 4.0], [1.0, 1.0, 1.0]]).log()
    loss, _ = compute_policy_loss(b["log_probs"], b["old_log_probs"], b["advantages"], b["response_mask"],
                                  actor_cfg(tis_cap=2.0), rollout_log_probs=rollout)
    # (-1.3 * 0.5 + 0.8 * 1 + 3 * 2 - 2 * 1) / 4 = (-0.65 + 0.8 + 6 - 2) / 4 = 1.0375
    assert loss.item() == pytest.approx(1.0375, abs=1e-6)


def test_tis_cap_without_rollout_log_probs_names_the_fix():
    b = ppo_batch()
    with pytest.raises(ValueError, match=r"tis_cap=2.0 .* no rollout_log_probs were given"):
        compute_policy_loss(b["log_probs"], b["old_log_probs"], b["advantages"], b["response_mask"],
                            actor_cfg(tis_cap=2.0))


def test_ppo_on_bf16_log_probs_computes_in_float32():
    log_probs = torch.tensor([[-1.0, -2.0]], dtype=torch.bfloat16, requires_grad=True)
    old = torch.tensor([[-1.5, -2.0]], dtype=torch.bfloat16)
    loss, _ = compute_policy_loss(log_probs, old, torch.ones(1, 2, dtype=torch.bfloat16), torch.ones(1, 2),
                                  actor_cfg())
    # r = e^0.5 = 1.6487 -> clipped 1.3 -> -1.3 ; r = 1 -> -1 ; mean -1.15
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(-1.15, abs=1e-6)
    loss.backward()
    assert log_probs.grad.dtype == torch.bfloat16
    # d(-r)/d log p = -1 on the unclipped token, / 2 tokens = -0.5
    torch.testing.assert_close(log_probs.grad.float(), torch.tensor([[0.0, -0.5]]))


def test_dual_clip_bound_of_one_or_less_is_refused():
    b = ppo_batch()
    with pytest.raises(ConfigError, match=r"worker.actor.clip_ratio_dual=1.0 must be > 1"):
        compute_policy_loss(b["log_probs"], b["old_log_probs"], b["advantages"], b["response_mask"],
                            actor_cfg(clip_ratio_dual=1.0))


# ---- gspo ----------------------------------------------------------------------------------------
def gspo_batch() -> dict[str, torch.Tensor]:
    """Row 0 log-ratios 0.2, 0.4 (A=+1); row 1 log-ratio -0.1 then padding with log-ratio 5 (A=-1)."""
    old = torch.tensor([[-1.0, -2.0], [-0.5, -0.5]])
    return {
        "log_probs": (old + torch.tensor([[0.2, 0.4], [-0.1, 5.0]])).requires_grad_(),
        "old_log_probs": old,
        "advantages": torch.tensor([[1.0, 1.0], [-1.0, -1.0]]),
        "response_mask": torch.tensor([[1, 1], [1, 0]]),
    }


def test_gspo_clips_the_sequence_level_ratio():
    b = gspo_batch()
    loss, metrics = compute_policy_loss(b["log_probs"], b["old_log_probs"], b["advantages"], b["response_mask"],
                                        actor_cfg(loss_type="gspo", loss_avg_mode="seq"))
    # row 0: s = exp((0.2 + 0.4) / 2) = e^0.3 = 1.34985881 > 1.3 -> max(-1.3499, -1.3) = -1.3 on both tokens
    # row 1: s = e^-0.1 = 0.90483742 inside [0.8, 1.3] -> 0.90483742 ; the padded log-ratio 5 is not averaged in
    # seq mean (-1.3 + 0.90483742) / 2 = -0.19758129
    assert loss.item() == pytest.approx(-0.19758129, abs=1e-6)
    assert metrics["pg_clipfrac"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["pg_clipfrac_lower"] == 0.0
    loss.backward()
    # row 0 clipped: no gradient ; row 1: d(s)/d log p_t = s / |y| = 0.90483742, / 2 sequences = 0.45241871
    torch.testing.assert_close(b["log_probs"].grad, torch.tensor([[0.0, 0.0], [0.45241871, 0.0]]))


def test_gspo_token_mode_weights_sequences_by_length():
    b = gspo_batch()
    loss, _ = compute_policy_loss(b["log_probs"], b["old_log_probs"], b["advantages"], b["response_mask"],
                                  actor_cfg(loss_type="gspo", loss_avg_mode="token"))
    # (-1.3 * 2 + 0.90483742) / 3 = -0.56505419
    assert loss.item() == pytest.approx(-0.56505419, abs=1e-6)


def test_gspo_gradient_is_the_sequence_ratio_gradient_spread_over_tokens():
    old = torch.tensor([[-1.0, -2.0]])
    log_probs = (old + torch.tensor([[0.1, -0.1]])).requires_grad_()
    loss, _ = compute_policy_loss(log_probs, old, torch.ones(1, 2), torch.ones(1, 2),
                                  actor_cfg(loss_type="gspo", loss_avg_mode="seq"))
    # s = exp((0.1 - 0.1) / 2) = 1, loss -A s = -1 ; d(-s)/d log p_t = -s / |y| = -0.5 for each token
    assert loss.item() == pytest.approx(-1.0, abs=1e-6)
    loss.backward()
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-0.5, -0.5]]))


def test_gspo_token_keeps_each_tokens_advantage_and_ppos_clipping():
    old = torch.tensor([[-1.0, -2.0]])
    log_probs = (old + torch.tensor([[LN(2.0), 0.0]])).requires_grad_()
    advantages = torch.tensor([[1.0, -2.0]])  # per-token credit, which gspo (one advantage per sequence) lacks
    loss, metrics = compute_policy_loss(log_probs, old, advantages, torch.ones(1, 2), actor_cfg(loss_type="gspo_token"))
    # s = exp((ln 2 + 0) / 2) = sqrt 2 = 1.41421356 on both tokens. Token 0 (A=+1): max(-1.4142, -1.3) = -1.3,
    # clipped. Token 1 (A=-2): max(2.8284, 2.6) = 2.8284, under the dual clip 6. Token mean (-1.3 + 2.8284) / 2
    assert loss.item() == pytest.approx(0.76421356, abs=1e-6)
    assert (metrics["pg_clipfrac"], metrics["pg_clipfrac_lower"]) == (0.5, 0.0)
    loss.backward()
    # token 0 clipped: 0; token 1: d(-A s_t)/d log p_1 = -A s = 2.8284, / 2 tokens = 1.41421356
    torch.testing.assert_close(log_probs.grad, torch.tensor([[0.0, 1.41421356]]))


def test_gspo_token_dual_clips_a_negative_advantage():
    old = torch.tensor([[-1.0]])
    log_probs = old + LN(5.0)  # s = 5 (a one-token sequence)
    loss, metrics = compute_policy_loss(log_probs, old, torch.tensor([[-1.0]]), torch.ones(1, 1),
                                        actor_cfg(loss_type="gspo_token"))
    assert loss.item() == pytest.approx(3.0, abs=1e-6)  # min(max(5, 1.3), clip_ratio_dual 3) = 3
    assert metrics["pg_clipfrac_lower"] == 1.0


# ---- sapo ----------------------------------------------------------------------------------------
def test_sapo_gates_each_ratio_softly_with_the_temperature_of_its_advantages_sign():
    log_probs = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    old = log_probs.detach() - torch.tensor([[LN(1.5), LN(0.5), 0.0]])  # ratios 1.5, 0.5, 1
    advantages = torch.tensor([[1.0, -1.0, 2.0]])
    loss, metrics = compute_policy_loss(log_probs, old, advantages, torch.ones(1, 3), actor_cfg(loss_type="sapo"))
    # -A (4 / tau) sigmoid(tau (r - 1)); tau 1 for A >= 0, 1.05 for A < 0 (EasyR1's defaults):
    # -1 * 4 * sigmoid(0.5) = -2.48983732 ; +1 * 4 / 1.05 * sigmoid(-0.525) = 1.41593833 ; -2 * 4 * 0.5 = -4
    assert loss.item() == pytest.approx((-2.48983732 + 1.41593833 - 4.0) / 3, abs=1e-6)
    assert (metrics["pg_clipfrac"], metrics["pg_clipfrac_lower"]) == (0.0, 0.0)
    loss.backward()
    # d/d log p = -A * 4 p (1 - p) * r / 3 tokens, p = sigmoid(tau (r - 1)); on-policy (r = 1) it is -A / 3
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-0.47000742, 0.15568997, -0.66666667]]))


def test_sapo_temperatures_must_be_positive():
    b = ppo_batch()
    with pytest.raises(ConfigError, match="worker.actor.tau_positive=0.0 and tau_negative=1.05 must be > 0"):
        compute_policy_loss(b["log_probs"], b["old_log_probs"], b["advantages"], b["response_mask"],
                            actor_cfg(loss_type="sapo", tau_positive=0.0))


# ---- cispo ---------------------------------------------------------------------------------------
def test_cispo_weights_log_prob_by_detached_clipped_ratio_and_keeps_every_gradient():
    log_probs = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    old = log_probs.detach() - torch.tensor([[LN(1.5), LN(0.5), 0.0]])  # ratios 1.5, 0.5, 1
    advantages = torch.tensor([[1.0, -1.0, 2.0]])
    loss, metrics = compute_policy_loss(log_probs, old, advantages, torch.ones(1, 3), actor_cfg(loss_type="cispo"))
    # weights clip(1.5) = 1.3, clip(0.5) = 0.8, 1 ; loss -A w log p: -1 * 1.3 * -1 = 1.3 ; 1 * 0.8 * -2 = -1.6 ;
    # -2 * 1 * -0.5 = 1 ; mean (1.3 - 1.6 + 1) / 3 = 0.23333333
    assert loss.item() == pytest.approx(0.23333333, abs=1e-6)
    assert metrics["pg_clipfrac"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["pg_clipfrac_lower"] == pytest.approx(1 / 3, abs=1e-6)
    loss.backward()
    # d/d log p = -A w / 3: -1.3 / 3, 0.8 / 3, -2 / 3 (clipped tokens keep their gradient, unlike PPO)
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-0.43333333, 0.26666667, -0.66666667]]))


# ---- dispatch ------------------------------------------------------------------------------------
def test_unknown_loss_type_error_lists_the_valid_names():
    b = ppo_batch()
    with pytest.raises(ConfigError, match=r"worker.actor.loss_type='grpo' is unknown; choose from "
                                          r"\['cispo', 'gspo', 'gspo_token', 'ppo', 'sapo'\]"):
        compute_policy_loss(b["log_probs"], b["old_log_probs"], b["advantages"], b["response_mask"],
                            actor_cfg(loss_type="grpo"))


def test_policy_loss_inputs_of_different_shapes_are_refused():
    b = ppo_batch()
    with pytest.raises(ValueError, match=r"must all be \[batch, response_length\]"):
        compute_policy_loss(b["log_probs"], b["old_log_probs"][:, :2], b["advantages"], b["response_mask"],
                            actor_cfg())


# ---- value loss ----------------------------------------------------------------------------------
def test_value_loss_takes_the_worse_of_clipped_and_unclipped_errors():
    values = torch.tensor([[1.0, 2.0], [0.0, 7.0]], requires_grad=True)
    old_values = torch.tensor([[0.5, 2.0], [0.0, 0.0]])
    returns = torch.tensor([[2.0, 1.0], [1.0, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, metrics = compute_value_loss(values, old_values, returns, mask, cliprange_value=0.2, loss_avg_mode="token")
    # token 0: V 1 clipped to 0.5 + 0.2 = 0.7: max((1 - 2)^2, (0.7 - 2)^2) = max(1, 1.69) = 1.69 (clipped)
    # token 1: V 2 = old: (2 - 1)^2 = 1 ; token 2: (0 - 1)^2 = 1 ; padding ignored
    # 0.5 * (1.69 + 1 + 1) / 3 = 0.615
    assert loss.item() == pytest.approx(0.615, abs=1e-6)
    assert metrics == {"vf_loss": pytest.approx(0.615, abs=1e-6), "vf_clipfrac": pytest.approx(1 / 3, abs=1e-6)}
    loss.backward()
    # token 0 clipped -> 0 ; token 1: 0.5 * 2 * (2 - 1) / 3 = 0.33333333 ; token 2: 0.5 * 2 * (0 - 1) / 3
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, 0.33333333], [-0.33333333, 0.0]]))
