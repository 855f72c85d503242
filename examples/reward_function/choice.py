"""Multiple-choice reward that reads answers the way eval/eval.py grades them (longrl.eval.answers).

The option letter is taken from `<answer>..</answer>`, `\\boxed{}`, "the answer is X", or a bare letter, in
any case; an option's text (`<answer>green circle</answer>`) counts as its letter, the options being read
from the question (`A. ...` lines, as in LongVideo-Reason). Non-letter references are graded as free-form
answers. Use as `worker.reward.reward_function=examples/reward_function/choice.py:compute_score`.
"""

from __future__ import annotations

import re
from typing import Any

from longrl.eval.answers import LETTERS, grade, is_well_formatted

OPTION_LINE = re.compile(rf"^\s*([{LETTERS}])[.)]\s*(.+?)\s*$", re.MULTILINE)


def options_of(problem: str) -> list[str] | None:
    """The question's options as `X. text` lines in letter order, or None when it lists no A-D options."""
    found = dict(OPTION_LINE.findall(problem or ""))
    if not found:
        return None
    return [f"{letter}. {found.get(letter, '')}" for letter in LETTERS]


def score_one(reward_input: dict[str, Any], format_weight: float = 0.5) -> dict[str, float]:
    response = reward_input["response"]
    _, correct = grade(response, str(reward_input["ground_truth"]), LETTERS, options_of(reward_input.get("problem", "")))
    fmt = 1.0 if is_well_formatted(response) else 0.0
    acc = 1.0 if correct else 0.0
    return {"overall": (1.0 - format_weight) * acc + format_weight * fmt, "format": fmt, "accuracy": acc}


def compute_score(reward_inputs: list[dict[str, Any]] | dict[str, Any],
                  format_weight: float = 0.5) -> list[dict[str, float]] | dict[str, float]:
    """Scores for a list of samples (reward_type=batch) or for one sample (sequential)."""
    if isinstance(reward_inputs, dict):
        return score_one(reward_inputs, format_weight)
    return [score_one(reward_input, format_weight) for reward_input in reward_inputs]
