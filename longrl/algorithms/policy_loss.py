"""Policy losses (one registered function per `worker.actor.loss_type`), loss averaging, value loss.

A registered loss maps `(log_probs, old_log_probs, advantages, response_mask, ActorConfig)`
to per-token terms; `compute_policy_loss` adds truncated importance sampling, averages with
`loss_avg_mode` and reports the metrics, so a new loss is one function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import get_args

import torch
from torch import Tensor

from longrl.algorithms.requirements import NOTHING, Requires
from longrl.config import ActorConfig, ConfigError, LossAvgMode
from longrl.registry import Registry

# exp() of a log-ratio beyond this overflows or yields useless gradients (verl clamps the same way).
MAX_LOG_RATIO = 20.0


@dataclasses.dataclass
class PolicyLossTerms:
    """Per-token results of a policy loss, all `[B, T]`."""

    loss: Tensor
    """Loss per token before masking and averaging."""
    clipped: Tensor
    """bool: where clipping changed the token's loss or weight."""
    clipped_lower: Tensor
    """bool: where the lower bound was active (PPO: the dual clip on negative advantages)."""


LOSS_AVG_MODES = get_args(LossAvgMode)

PolicyLossFn = Callable[[Tensor, Tensor, Tensor, Tensor, ActorConfig], PolicyLossTerms]
POLICY_LOSSES: Registry[PolicyLossFn] = Registry("worker.actor.loss_type", default_requires=NOTHING)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of `x` over the positions where `mask` is set (0 when none is); NaN/inf under the mask are ignored."""
    mask = mask.bool()
    return torch.where(mask, x, 0.0).sum() / mask.sum().clamp(min=1)


def aggregate_loss(loss_mat: Tensor, mask: Tensor, mode: str, norm_length: int | None = None) -> Tensor:
    """Scalar from a `[B, T]` loss: 'token' = mean over all valid tokens; 'seq' = mean of per-sequence means;
    'seq-mean-token-sum-norm' = mean over sequences of each one's token sum / `norm_length`, a constant
    (data.max_response_length).

    The last is Dr.GRPO's (https://arxiv.org/abs/2503.20783, verl's name): dividing by each response's own
    length gives a token of a short response more weight than one of a long response, a bias towards
    long wrong answers; a constant divisor removes it. A response without a valid token counts as 0 in
    the sequence modes, so the mean is always over B sequences (what a caller scaling micro-batches by
    their number of sequences expects).
    """
    mask = mask.bool()
    masked = torch.where(mask, loss_mat, 0.0)
    if mode == "token":
        return masked.sum() / mask.sum().clamp(min=1)
    if mode == "seq":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if mode == "seq-mean-token-sum-norm":
        if norm_length is None:
            raise ValueError("loss_avg_mode='seq-mean-token-sum-norm' divides by a constant length; pass "
                             "norm_length=data.max_response_length")
        return (masked.sum(-1) / norm_length).mean()
    raise ConfigError(f"worker.actor.loss_avg_mode={mode!r} is unknown; choose from {list(LOSS_AVG_MODES)}")


def compute_policy_loss(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor,
                        cfg: ActorConfig, rollout_log_probs: Tensor | None = None,
                        norm_length: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """Scalar policy loss and metrics {pg_loss, pg_clipfrac, pg_clipfrac_lower, ppo_kl}; all inputs `[B, T]`.

    Only `log_probs` carries gradients. With `cfg.tis_cap` set, each token's loss is weighted by
    min(pi_old / pi_rollout, tis_cap) (truncated importance sampling against the rollout engine).
    `norm_length`: the constant divisor of loss_avg_mode='seq-mean-token-sum-norm' (data.max_response_length).
    """
    shapes = {"log_probs": log_probs.shape, "old_log_probs": old_log_probs.shape,
              "advantages": advantages.shape, "response_mask": response_mask.shape}
    if rollout_log_probs is not None:
        shapes["rollout_log_probs"] = rollout_log_probs.shape
    if len(set(shapes.values())) > 1 or log_probs.ndim != 2:
        raise ValueError(f"policy loss inputs must all be [batch, response_length]; got "
                         f"{ {k: tuple(v) for k, v in shapes.items()} }")
    loss_fn = POLICY_LOSSES[cfg.loss_type]
    mask = response_mask.bool()
    log_probs = log_probs.float()
    old_log_probs = old_log_probs.detach().float()
    terms = loss_fn(log_probs, old_log_probs, advantages.detach().float(), mask, cfg)
    loss_mat = terms.loss
    if cfg.tis_cap is not None:
        if rollout_log_probs is None:
            raise ValueError(f"worker.actor.tis_cap={cfg.tis_cap} weights the loss by pi_old / pi_rollout, but no "
                             f"rollout_log_probs were given; return log-probs from the rollout engine or set "
                             f"worker.actor.tis_cap=null")
        # The rollout engine (vLLM, bf16 kernels) samples from a slightly different policy than the trainer
        # scores; truncated IS corrects for it (https://fengyao.notion.site/off-policy-rl).
        log_w = (old_log_probs - rollout_log_probs.detach().float()).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
        loss_mat = loss_mat * log_w.exp().clamp(max=cfg.tis_cap)
    loss = aggregate_loss(loss_mat, mask, cfg.loss_avg_mode, norm_length)
    metrics = {
        "pg_loss": loss.item(),
        "pg_clipfrac": masked_mean(terms.clipped.float(), mask).item(),
        "pg_clipfrac_lower": masked_mean(terms.clipped_lower.float(), mask).item(),
        # k1 estimate of KL(pi_old || pi): how far this update has moved the policy.
        "ppo_kl": masked_mean(old_log_probs - log_probs.detach(), mask).item(),
    }
    return loss, metrics


def _ratio(log_probs: Tensor, old_log_probs: Tensor) -> Tensor:
    return (log_probs - old_log_probs).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()


@POLICY_LOSSES.register("ppo")
def ppo(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ActorConfig) -> PolicyLossTerms:
    """PPO clip (https://arxiv.org/abs/1707.06347) with asymmetric bounds and the dual clip for A < 0.

    loss = max(-A r, -A clip(r, 1-low, 1+high)); for A < 0 it is further capped at -A * clip_ratio_dual
    so one token with a huge ratio cannot dominate (dual-clip PPO, https://arxiv.org/abs/1912.09729).
    """
    if cfg.clip_ratio_dual <= 1.0:
        raise ConfigError(f"worker.actor.clip_ratio_dual={cfg.clip_ratio_dual} must be > 1 (it caps the ratio "
                          f"for negative advantages above the normal clip); the usual value is 3.0")
    return _dual_clipped(_ratio(log_probs, old_log_probs), advantages, cfg)


def _dual_clipped(ratio: Tensor, advantages: Tensor, cfg: ActorConfig) -> PolicyLossTerms:
    """PPO's clipped objective of `ratio`, with the dual clip on negative advantages (ppo, gspo_token)."""
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * ratio.clamp(1.0 - cfg.clip_ratio_low, 1.0 + cfg.clip_ratio_high)
    loss = torch.maximum(loss_unclipped, loss_clipped)
    loss_dual = -advantages * cfg.clip_ratio_dual
    negative = advantages < 0
    return PolicyLossTerms(
        loss=torch.where(negative, torch.minimum(loss, loss_dual), loss),
        clipped=loss_clipped > loss_unclipped,
        clipped_lower=negative & (loss > loss_dual),
    )


def _gspo_token_ratio(log_probs: Tensor, old_log_probs: Tensor, mask: Tensor) -> Tensor:
    """GSPO-token's ratio (sec. 4.3): the value of the sequence ratio s = exp(mean_t log(pi/pi_old)) on every
    token, with gradient s * grad log pi(y_t) (s detached, times pi / sg(pi))."""
    lengths = mask.sum(-1).clamp(min=1)
    seq_log_ratio = torch.where(mask, log_probs - old_log_probs, 0.0).sum(-1) / lengths
    log_s = log_probs - log_probs.detach() + seq_log_ratio.detach()[:, None]
    return log_s.clamp(max=10.0).exp()  # as verl: one runaway sequence must not overflow the loss


_GSPO_CLIP_WHY = ("GSPO's ratio is a geometric mean of token ratios that stays within about 1e-3 of 1: the paper "
                  "clips at 3e-4/4e-4, and PPO's 0.2/0.3 never clip it")


@POLICY_LOSSES.register("gspo", requires=Requires(
    loss_avg_mode="seq", max_clip_ratio=1e-2,
    why="GSPO's objective is a mean over sequences of one clipped sequence ratio; " + _GSPO_CLIP_WHY))
def gspo(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ActorConfig) -> PolicyLossTerms:
    """GSPO (https://arxiv.org/abs/2507.18071): clip the sequence ratio s = exp(mean_t log(pi/pi_old)).

    Written in the paper's GSPO-token form (sec. 4.3): every token carries the value s, with
    gradient s * grad log pi(y_t); with one advantage per sequence and loss_avg_mode=seq this is
    exactly the GSPO objective.
    """
    ratio = _gspo_token_ratio(log_probs, old_log_probs, mask)
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * ratio.clamp(1.0 - cfg.clip_ratio_low, 1.0 + cfg.clip_ratio_high)
    return PolicyLossTerms(
        loss=torch.maximum(loss_unclipped, loss_clipped),
        clipped=loss_clipped > loss_unclipped,
        clipped_lower=torch.zeros_like(mask),
    )


@POLICY_LOSSES.register("gspo_token", requires=Requires(max_clip_ratio=1e-2, why=_GSPO_CLIP_WHY))
def gspo_token(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor,
               cfg: ActorConfig) -> PolicyLossTerms:
    """GSPO-token (https://arxiv.org/abs/2507.18071 sec. 4.3; EasyR1's loss_type=gspo_token): PPO's clipped
    objective, dual clip included, of the GSPO-token ratio. Unlike `gspo` each token keeps its own advantage
    and any loss_avg_mode is allowed: with per-token advantages (multi-turn credit) it is not GSPO."""
    return _dual_clipped(_gspo_token_ratio(log_probs, old_log_probs, mask), advantages, cfg)


@POLICY_LOSSES.register("sapo")
def sapo(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor,
         cfg: ActorConfig) -> PolicyLossTerms:
    """SAPO (https://arxiv.org/abs/2511.20347; EasyR1's loss_type=sapo): a soft gate instead of a hard clip,
    loss = -A * (4 / tau) * sigmoid(tau * (r - 1)), tau = worker.actor.tau_positive for A >= 0 and
    tau_negative for A < 0. Its gradient is A * 4 p (1 - p) * r * grad log pi (p the sigmoid): exactly the
    policy gradient on-policy (r = 1), fading smoothly as r leaves 1. Nothing is clipped (clipfrac 0)."""
    if cfg.tau_positive <= 0 or cfg.tau_negative <= 0:
        raise ConfigError(f"worker.actor.tau_positive={cfg.tau_positive} and tau_negative={cfg.tau_negative} must be "
                          f"> 0 (SAPO's gate temperatures; EasyR1's defaults 1.0 and 1.05)")
    ratio = _ratio(log_probs, old_log_probs)
    tau = torch.where(advantages >= 0, cfg.tau_positive, cfg.tau_negative)
    return PolicyLossTerms(
        loss=-advantages * 4.0 / tau * torch.sigmoid(tau * (ratio - 1.0)),
        clipped=torch.zeros_like(mask),
        clipped_lower=torch.zeros_like(mask),
    )


@POLICY_LOSSES.register("cispo")
def cispo(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ActorConfig) -> PolicyLossTerms:
    """CISPO (MiniMax-M1, https://arxiv.org/abs/2506.13585): -sg(clip(r, 1-low, 1+high)) * A * log pi.

    Clipping the detached IS weight instead of the update keeps every token's gradient, unlike
    PPO which zeroes it outside the trust region.
    """
    ratio = _ratio(log_probs, old_log_probs).detach()
    low, high = 1.0 - cfg.clip_ratio_low, 1.0 + cfg.clip_ratio_high
    weight = ratio.clamp(low, high)
    return PolicyLossTerms(
        loss=-advantages * weight * log_probs,
        clipped=(ratio < low) | (ratio > high),
        clipped_lower=ratio < low,
    )


def compute_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, response_mask: Tensor,
                       cliprange_value: float, loss_avg_mode: str,
                       norm_length: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped value loss 0.5 * max((V - R)^2, (V_clip - R)^2), V_clip within old +- cliprange; `[B, T]` inputs.

    Returns the scalar loss and {vf_loss, vf_clipfrac}; only `values` carries gradients.
    """
    values = values.float()
    old_values = old_values.detach().float()
    returns = returns.detach().float()
    clipped_values = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * aggregate_loss(torch.maximum(loss_unclipped, loss_clipped), response_mask, loss_avg_mode, norm_length)
    clipfrac = masked_mean((loss_clipped > loss_unclipped).float(), response_mask)
    return loss, {"vf_loss": loss.item(), "vf_clipfrac": clipfrac.item()}
