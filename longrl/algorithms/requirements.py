"""What an algorithm needs from the rest of the configuration, declared where it is registered.

`@ADVANTAGES.register("grpo", requires=Requires(groups=True))` states the rule once, beside the
code that depends on it; `longrl.validation.validate` reads the declarations of the names a
config selects and refuses impossible combinations before any worker starts. The trainer reads
the same declarations (a critic to train, a greedy rollout to run) instead of lists of names.
"""

from __future__ import annotations

import dataclasses

from longrl.config import LossAvgMode


@dataclasses.dataclass(frozen=True)
class Requires:
    groups: bool = False
    """Compares the responses of one prompt: worker.rollout.n >= 2."""
    critic: bool = False
    """Reads a critic's values: the trainer trains worker.critic."""
    greedy_baseline: bool = False
    """Reads the score of a greedy response per prompt: the trainer runs and scores one."""
    loss_avg_mode: LossAvgMode | None = None
    """Exact only with this worker.actor.loss_avg_mode."""
    max_clip_ratio: float | None = None
    """worker.actor.clip_ratio_low/high above this never clip what the loss clips (it is meant for smaller ones)."""
    whole_distribution: bool = False
    """Needs both models' whole vocabulary distributions at the update (a KL loss on whole sequences)."""
    step_means: bool = False
    """Reads the Gaussian means of a diffusion model's denoising steps (the KL loss of Flow-GRPO), not log-probs."""
    why: str = ""
    """The reason behind loss_avg_mode / max_clip_ratio, quoted by validate's messages."""


NOTHING = Requires()
"""What an entry that declares nothing needs."""
