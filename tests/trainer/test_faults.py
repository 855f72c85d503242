from pathlib import Path

import pytest

from longrl.trainer.faults import SkippedSteps, SkippedStepsError


def test_the_run_stops_after_max_skipped_steps_in_a_row_naming_the_step_and_the_checkpoint():
    guard = SkippedSteps(limit=2)
    guard.observe(7, {"actor/skipped_steps": 1.0}, Path("runs/x/global_step_6"))
    with pytest.raises(SkippedStepsError, match=r"step 8: 2 RL steps in a row skipped their update .*"
                                                r"trainer.max_skipped_steps=2\); the last checkpoint is "
                                                r"runs/x/global_step_6"):
        guard.observe(8, {"actor/skipped_steps": 2.0}, Path("runs/x/global_step_6"))


def test_a_step_that_updates_resets_the_count():
    guard = SkippedSteps(limit=2)
    for step, skipped in enumerate([1.0, 0.0, 1.0, 0.0, 1.0], start=1):
        guard.observe(step, {"actor/skipped_steps": skipped}, None)
    assert guard.in_a_row == 1


def test_critic_skips_count_too_and_limit_zero_never_stops():
    guard = SkippedSteps(limit=0)
    for step in range(1, 20):
        guard.observe(step, {"critic/skipped_steps": 1.0}, None)
    assert guard.in_a_row == 19
