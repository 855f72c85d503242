"""KL to the reference policy: per-token estimators (registered by `algorithm.kl_penalty` name),
the in-reward KL controllers, and the reward shaping that uses them.

Estimators follow http://joschu.net/blog/kl-approx.html (k1, k2, k3) and compute in float32
whatever the input dtype, because bf16 log-prob differences lose most of their digits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from longrl.algorithms.requirements import NOTHING, Requires
from longrl.config import AlgorithmConfig, ConfigError
from longrl.registry import Registry

KLFn = Callable[[Tensor, Tensor], Tensor]
KL_PENALTIES: Registry[KLFn] = Registry("algorithm.kl_penalty", default_requires=NOTHING)


def kl_penalty(log_probs: Tensor, ref_log_probs: Tensor, name: str) -> Tensor:
    """Per-token KL estimate `[B, T]` float32 from `KL_PENALTIES[name]`.

    Inputs are the sampled tokens' log-probs `[B, T]`, or for 'full' the whole vocabulary's `[B, T, V]`.
    """
    estimator = KL_PENALTIES[name]
    if log_probs.shape != ref_log_probs.shape:
        raise ValueError(f"algorithm.kl_penalty={name!r}: log_probs {tuple(log_probs.shape)} and ref_log_probs "
                         f"{tuple(ref_log_probs.shape)} must have the same shape")
    return estimator(log_probs.float(), ref_log_probs.float())


@KL_PENALTIES.register("kl")
def k1(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """k1 = log pi - log pi_ref: unbiased, high variance, can be negative."""
    return log_probs - ref_log_probs


@KL_PENALTIES.register("abs")
def absolute(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """|log pi - log pi_ref|."""
    return (log_probs - ref_log_probs).abs()


@KL_PENALTIES.register("mse")
def k2(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """k2 = 0.5 * (log pi - log pi_ref)^2."""
    return 0.5 * (log_probs - ref_log_probs) ** 2


@KL_PENALTIES.register("low_var_kl")
def k3(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """k3 = exp(d) - d - 1 with d = log pi_ref - log pi: unbiased, non-negative, low variance.

    d is clamped to [-20, 20] before exp and the result to [-10, 10], as in verl, so one token far
    off the reference cannot blow up the loss.
    """
    d = (ref_log_probs - log_probs).clamp(-20.0, 20.0)
    return (d.exp() - d - 1).clamp(-10.0, 10.0)


@KL_PENALTIES.register("full", requires=Requires(whole_distribution=True))
def full(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """Exact KL(pi || pi_ref) = sum_v p_v (log p_v - log ref_v) from full-vocabulary log-probs `[B, T, V]`."""
    if log_probs.ndim != 3:
        raise ValueError(f"algorithm.kl_penalty='full' needs full-vocabulary log-probs of shape [B, T, V], got "
                         f"{tuple(log_probs.shape)}; pass log_softmax over the vocabulary for every position, "
                         f"or choose a per-token estimator: kl, abs, mse or low_var_kl")
    p = log_probs.exp()
    # Where p == 0 the term is 0 even if a log-prob is -inf (0 * inf would be NaN).
    return torch.where(p > 0, p * (log_probs - ref_log_probs), 0.0).sum(-1)


@KL_PENALTIES.register("flow_grpo", requires=Requires(step_means=True))
def flow_grpo(scaled_means: Tensor, ref_scaled_means: Tensor) -> Tensor:
    """Flow-GRPO's KL of each denoising step to the reference (https://arxiv.org/abs/2505.05470), `[B, T]`.

    Inputs are each step's Gaussian mean divided by the step's noise scale s, flattened: `[B, T, D]`. Both
    policies' steps share the variance, so the KL is closed-form: mean_D (mu - mu_ref)^2 / (2 s^2) (flow_grpo's
    variance s^2, not s^2 * -dt; Long-RL's port drops the 1/s^2 and so weighs late steps far too little).
    """
    if scaled_means.ndim != 3:
        raise ValueError(f"algorithm.kl_penalty='flow_grpo' needs step means of shape [B, T, D] (a diffusion "
                         f"model's), got {tuple(scaled_means.shape)}")
    return 0.5 * ((scaled_means - ref_scaled_means) ** 2).mean(-1)


class KLController(Protocol):
    value: float

    def update(self, current_kl: float, n_steps: int) -> None: ...


class FixedKLController:
    """A constant in-reward KL coefficient."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""


class AdaptiveKLController:
    """Proportional controller steering the measured KL to `target` (Ziegler et al., https://arxiv.org/abs/1909.08593).

    value *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon
    """

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: float) -> None:
        self.value = init_kl_coef
        self.target = target_kl
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


def make_kl_controller(cfg: AlgorithmConfig) -> FixedKLController | AdaptiveKLController:
    """The in-reward KL controller chosen by `algorithm.kl_type`."""
    if cfg.kl_type == "fixed":
        return FixedKLController(cfg.kl_coef)
    if cfg.kl_type == "adaptive":
        if cfg.kl_target <= 0 or cfg.kl_horizon <= 0:
            raise ConfigError(f"algorithm.kl_target={cfg.kl_target} and algorithm.kl_horizon={cfg.kl_horizon} must "
                              f"both be > 0 for the adaptive KL controller; e.g. kl_target=0.1 kl_horizon=10000")
        return AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
    raise ConfigError(f"algorithm.kl_type={cfg.kl_type!r} is unknown; choose from ['adaptive', 'fixed']")


@torch.no_grad()
def apply_kl_to_rewards(token_level_scores: Tensor, log_probs: Tensor, ref_log_probs: Tensor, response_mask: Tensor,
                        controller: KLController, name: str) -> tuple[Tensor, dict[str, float]]:
    """Token rewards `[B, T]` = scores - beta * KL on valid tokens, beta = controller.value before this call.

    Then updates the controller with the batch KL (mean over responses of the per-response mean
    KL) and n_steps = B, as EasyR1/verl do. Metrics: actor/reward_kl_penalty, actor/reward_kl_coef.
    """
    mask = response_mask.bool()
    kl = torch.where(mask, kl_penalty(log_probs, ref_log_probs, name), 0.0)
    beta = controller.value
    rewards = token_level_scores.float() - beta * kl
    current_kl = (kl.sum(-1) / mask.sum(-1).clamp(min=1)).mean().item()
    controller.update(current_kl, n_steps=token_level_scores.shape[0])
    return rewards, {"actor/reward_kl_penalty": current_kl, "actor/reward_kl_coef": beta}


class RolloutDrift:
    """How far the engine's log-probs of the sampled tokens are from the trainer's, as sums over valid tokens that
    add up over micro-batches and ranks: rollout/log_prob_diff_{mean,max} (|log pi_rollout - log pi_old|) and
    rollout/kl_to_old (the k3 estimate of KL(pi_rollout || pi_old) from the engine's own samples).

    float64: with both sides in fp32 the gap is ~1e-7 and k3 (~ gap^2 / 2) would round to 0 in fp32.
    """

    def __init__(self) -> None:
        self.sums = {"abs": 0.0, "k3": 0.0, "tokens": 0.0}
        self.max = 0.0

    @torch.no_grad()
    def add(self, rollout_log_probs: Tensor, old_log_probs: Tensor, response_mask: Tensor) -> None:
        """Count one batch's valid tokens: all `[B, T]`."""
        mask = response_mask.bool()
        rollout, old = rollout_log_probs[mask].double(), old_log_probs.detach()[mask].double()
        diff = (rollout - old).abs()
        self.sums["abs"] += float(diff.sum())
        self.sums["k3"] += float(k3(rollout, old).sum())
        self.sums["tokens"] += float(mask.sum())
        self.max = max(self.max, float(diff.max())) if diff.numel() else self.max

    def metrics(self) -> dict[str, float]:
        """The rollout/* metrics; empty when no valid token was counted."""
        tokens = self.sums["tokens"]
        if not tokens:
            return {}
        return {"rollout/log_prob_diff_mean": self.sums["abs"] / tokens, "rollout/log_prob_diff_max": self.max,
                "rollout/kl_to_old": self.sums["k3"] / tokens}
