"""R1-V style reward: `<think>...</think>` then `<answer>...</answer>`, graded against the ground truth.

Suits multiple-choice video/image questions (ground truth `B` or `<answer>B</answer>`) and short
numeric answers. Use as `worker.reward.reward_function=examples/reward_function/r1v.py:compute_score`
with either reward_type (batch: a list of samples; sequential: one sample).
"""

from __future__ import annotations

import re
from typing import Any

from mathruler.grader import grade_answer

FORMAT = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _normalise(text: str) -> str:
    return " ".join(text.split()).lower()


def extract_answer(text: str) -> str:
    """The text inside the last <answer></answer>, or the whole text when there is none."""
    found = ANSWER.findall(text)
    return (found[-1] if found else text).strip()


def format_reward(response: str) -> float:
    """1.0 for exactly a <think> block followed by an <answer> block."""
    return 1.0 if FORMAT.fullmatch(response) else 0.0


def accuracy_reward(response: str, ground_truth: str) -> float:
    """1.0 when the answer matches the ground truth ignoring case and spaces, or grades equal."""
    given, expected = extract_answer(response), extract_answer(str(ground_truth))
    if not given:
        return 0.0
    if _normalise(given) == _normalise(expected):
        return 1.0
    return 1.0 if grade_answer(given, expected) else 0.0


def score_one(reward_input: dict[str, Any], format_weight: float = 0.5) -> dict[str, float]:
    response = reward_input["response"]
    fmt = format_reward(response)
    acc = accuracy_reward(response, reward_input["ground_truth"])
    return {"overall": (1.0 - format_weight) * acc + format_weight * fmt, "format": fmt, "accuracy": acc}


def compute_score(reward_inputs: list[dict[str, Any]] | dict[str, Any],
                  format_weight: float = 0.5) -> list[dict[str, float]] | dict[str, float]:
    """Scores for a list of samples (reward_type=batch) or for one sample (sequential)."""
    if isinstance(reward_inputs, dict):
        return score_one(reward_inputs, format_weight)
    return [score_one(reward_input, format_weight) for reward_input in reward_inputs]
