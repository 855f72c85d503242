"""What the driver does when steps go wrong: count updates skipped for non-finite values, stop after too many."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


class SkippedStepsError(RuntimeError):
    """Too many RL steps in a row skipped their update because the loss or the gradient was not finite."""


class SkippedSteps:
    """Counts RL steps in a row whose update skipped an optimizer step (actor/ or critic/skipped_steps > 0)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_a_row = 0

    def observe(self, step: int, metrics: dict[str, float], last_checkpoint: Path | None) -> None:
        """Count `step`; raise SkippedStepsError naming the step and the last checkpoint at the limit."""
        skipped = metrics.get("actor/skipped_steps", 0.0) + metrics.get("critic/skipped_steps", 0.0)
        self.in_a_row = self.in_a_row + 1 if skipped > 0 else 0
        if skipped > 0:
            logger.warning("step %d skipped %d optimizer step(s): the loss or gradient was not finite "
                           "(actor/grad_norm=%s); %d such RL step(s) in a row", step, skipped,
                           metrics.get("actor/grad_norm"), self.in_a_row)
        if self.limit > 0 and self.in_a_row >= self.limit:
            where = f"the last checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was saved"
            raise SkippedStepsError(
                f"step {step}: {self.in_a_row} RL steps in a row skipped their update because the loss or gradient "
                f"was not finite (trainer.max_skipped_steps={self.limit}); {where} (skipped steps leave the "
                f"weights unchanged, so it is good). Look at the rewards and data of these steps, lower "
                f"worker.actor.optim.lr or worker.actor.max_grad_norm, then resume from it")
