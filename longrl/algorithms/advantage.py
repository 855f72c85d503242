"""Advantage estimators: one registered function per `algorithm.adv_estimator` name.

Every estimator maps `(AdvantageInputs, AlgorithmConfig)` to `(advantages, returns)`, both
`[B, T]` float32 and zero on padding. Outcome estimators (grpo, dapo, rloo, remax) score a
response by the sum of its token-level rewards and broadcast one advantage over its tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence

import torch
from torch import Tensor

from longrl.algorithms.requirements import NOTHING, Requires
from longrl.config import AlgorithmConfig
from longrl.registry import Registry


@dataclasses.dataclass
class AdvantageInputs:
    """What the estimators read; tensors are `[B, T]` over response tokens unless noted."""

    token_level_rewards: Tensor
    """Reward placed on tokens (the score on the last valid token, possibly minus a KL penalty)."""
    response_mask: Tensor
    """1 on response tokens, 0 on padding."""
    group_ids: Sequence[Hashable]
    """Length B; the responses to one prompt share an id."""
    values: Tensor | None = None
    """Critic values (gae)."""
    reward_baselines: Tensor | None = None
    """`[B]` score of the greedy response to the same prompt (remax)."""


AdvantageFn = Callable[[AdvantageInputs, AlgorithmConfig], tuple[Tensor, Tensor]]
ADVANTAGES: Registry[AdvantageFn] = Registry("algorithm.adv_estimator", default_requires=NOTHING)

GRPO_EPS = 1e-6
WHITEN_EPS = 1e-8


@torch.no_grad()
def compute_advantages(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """Advantages `[B, T]` and returns `[B, T]`, both zero on padding, from `ADVANTAGES[cfg.adv_estimator]`."""
    estimator = ADVANTAGES[cfg.adv_estimator]
    rewards, mask = inputs.token_level_rewards, inputs.response_mask
    if rewards.ndim != 2 or rewards.shape != mask.shape:
        raise ValueError(f"token_level_rewards {tuple(rewards.shape)} and response_mask {tuple(mask.shape)} "
                         f"must both be [batch, response_length]")
    if len(inputs.group_ids) != rewards.shape[0]:
        raise ValueError(f"group_ids has {len(inputs.group_ids)} entries for a batch of {rewards.shape[0]} "
                         f"responses; pass one id per response")
    return estimator(inputs, cfg)


def group_codes(group_ids: Sequence[Hashable]) -> tuple[Tensor, Tensor]:
    """Per-sample group index `[B]` (0..G-1 in order of first appearance) and group sizes `[G]`."""
    first_seen: dict[Hashable, int] = {}
    codes = torch.tensor([first_seen.setdefault(g, len(first_seen)) for g in group_ids], dtype=torch.long)
    return codes, torch.bincount(codes, minlength=len(first_seen))


def sequence_scores(inputs: AdvantageInputs) -> Tensor:
    """`[B]` float32: each response's score, the sum of its token-level rewards over valid tokens.

    A response without a valid token (e.g. its prompt's video was unusable) carries its score at position 0:
    it teaches nothing itself, but its group's mean and std must count it like the other responses.
    """
    mask = inputs.response_mask.bool()
    rewards = inputs.token_level_rewards.float()
    return torch.where(mask.any(-1), torch.where(mask, rewards, 0.0).sum(-1), rewards[:, 0])


def masked_whiten(x: Tensor, mask: Tensor) -> Tensor:
    """`(x - mean) / sqrt(var + 1e-8)` with mean and unbiased variance over the valid tokens only."""
    mask = mask.bool()
    n = mask.sum()
    mean = torch.where(mask, x, 0.0).sum() / n.clamp(min=1)
    sq = torch.where(mask, (x - mean) ** 2, 0.0).sum()
    # Bessel's correction as in verl's masked_var; a single valid token has no spread to estimate.
    var = sq / (n - 1) if n > 1 else torch.zeros_like(sq)
    return (x - mean) * torch.rsqrt(var + WHITEN_EPS)


def _broadcast(per_sequence: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """One value per response spread over its valid tokens; outcome estimators return it twice."""
    out = per_sequence[:, None] * mask.float()
    return out, out.clone()


def _group_stats(scores: Tensor, group_ids: Sequence[Hashable], estimator: str) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample group sum `[B]`, group size `[B]` and group index `[B]`; refuses groups of one response."""
    codes, counts = group_codes(group_ids)
    if (counts < 2).any():
        lonely = [g for g, c in zip(dict.fromkeys(group_ids), counts.tolist()) if c < 2][:5]
        raise ValueError(f"algorithm.adv_estimator={estimator!r} compares the responses of one prompt, but groups "
                         f"{lonely} have a single response; set worker.rollout.n>=2 and keep whole groups together")
    sums = torch.zeros(len(counts), dtype=scores.dtype).index_add_(0, codes, scores)
    return sums[codes], counts[codes].to(scores.dtype), codes


@ADVANTAGES.register("grpo", requires=Requires(groups=True))
def grpo(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """GRPO (https://arxiv.org/abs/2402.03300): (score - group mean) / (group std + 1e-6).

    With norm_adv_by_std=false it is Dr.GRPO (https://arxiv.org/abs/2503.20783): mean-centred only,
    so groups with nearly equal scores are not blown up.
    """
    scores = sequence_scores(inputs)
    sums, sizes, codes = _group_stats(scores, inputs.group_ids, cfg.adv_estimator)
    centred = scores - sums / sizes
    if cfg.norm_adv_by_std:
        # Unbiased std (torch.std's default), as in EasyR1/verl.
        sq = torch.zeros_like(scores).index_add_(0, codes, centred**2)  # B slots hold the G <= B groups
        std = (sq[codes] / (sizes - 1)).sqrt()
        centred = centred / (std + GRPO_EPS)
    return _broadcast(centred, inputs.response_mask)


@ADVANTAGES.register("dapo", requires=Requires(groups=True))
def dapo(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """DAPO (https://arxiv.org/abs/2503.14476): the GRPO advantage; DAPO's changes live in the loss and the filter."""
    return grpo(inputs, cfg)


@ADVANTAGES.register("rloo", requires=Requires(groups=True))
def rloo(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """RLOO (https://arxiv.org/abs/2402.14740): score minus the mean score of the other responses of the prompt."""
    scores = sequence_scores(inputs)
    sums, sizes, _ = _group_stats(scores, inputs.group_ids, cfg.adv_estimator)
    return _broadcast(scores - (sums - scores) / (sizes - 1), inputs.response_mask)


@ADVANTAGES.register("remax", requires=Requires(greedy_baseline=True))
def remax(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """ReMax (https://arxiv.org/abs/2310.10505): score minus the greedy response's score."""
    if inputs.reward_baselines is None:
        raise ValueError("algorithm.adv_estimator='remax' needs reward_baselines (the greedy response's score "
                         "per sample); the trainer must run the greedy rollout and score it")
    baselines = inputs.reward_baselines.float().reshape(-1)
    return _broadcast(sequence_scores(inputs) - baselines, inputs.response_mask)


@ADVANTAGES.register("reinforce_plus_plus")
def reinforce_plus_plus(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """REINFORCE++ (https://arxiv.org/abs/2501.03262): discounted token returns, whitened over the batch."""
    mask = inputs.response_mask.float()
    rewards = inputs.token_level_rewards.float() * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + cfg.gamma * running
        returns[:, t] = running
        # Nothing flows back across a masked position (padding, or a non-response span), as in EasyR1.
        running = running * mask[:, t]
    return masked_whiten(returns, mask) * mask, returns * mask


@ADVANTAGES.register("gae", requires=Requires(critic=True))
def gae(inputs: AdvantageInputs, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """GAE (https://arxiv.org/abs/1506.02438): A_t = d_t + gamma*lam*A_{t+1}, d_t = r_t + gamma*V_{t+1} - V_t.

    Masked positions are skipped (the recursion carries over them), so V after the last valid
    token is 0. Returns are `A + V` before whitening; advantages are whitened over valid tokens.
    """
    if inputs.values is None:
        raise ValueError("algorithm.adv_estimator='gae' needs the critic's values; enable the critic "
                         "(worker.critic.model.model_path) or pick an estimator without one, e.g. grpo")
    mask = inputs.response_mask.float()
    values = inputs.values.float() * mask
    rewards = inputs.token_level_rewards.float() * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    last_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + cfg.gamma * next_value - values[:, t]
        last_adv = m * (delta + cfg.gamma * cfg.lam * last_adv) + (1 - m) * last_adv
        next_value = m * values[:, t] + (1 - m) * next_value
        advantages[:, t] = last_adv
    returns = (advantages + values) * mask
    return masked_whiten(advantages, mask) * mask, returns
