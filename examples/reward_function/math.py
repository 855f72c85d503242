"""Math reward: a `<think>...</think>` block followed by a `\\boxed{answer}` graded with mathruler.

Use as `worker.reward.reward_function=examples/reward_function/math.py:compute_score` with
either reward_type (batch: a list of samples; sequential: one sample). Each sample is a dict
{"response": str, "response_length": int, "ground_truth": str}.
"""

from __future__ import annotations

import re
from typing import Any

from mathruler.grader import extract_boxed_content, grade_answer

# `< think >` and `</ think>` count too: some models put spaces inside tags.
FORMAT = re.compile(r"\s*<\s*think\s*>.*<\s*/\s*think\s*>.*\\boxed\{.*\}.*", re.DOTALL)


def format_reward(response: str) -> float:
    """1.0 when the response reasons inside <think></think> and then boxes an answer."""
    return 1.0 if FORMAT.fullmatch(response) else 0.0


def accuracy_reward(response: str, ground_truth: str) -> float:
    """1.0 when the last \\boxed{} answer equals the ground truth (mathruler's normalisation)."""
    answer = extract_boxed_content(response)
    if answer == "None":  # mathruler's value for "no \\boxed{} found"
        return 0.0
    return 1.0 if grade_answer(answer, str(ground_truth)) else 0.0


def score_one(reward_input: dict[str, Any], format_weight: float = 0.1) -> dict[str, float]:
    response = reward_input["response"]
    fmt = format_reward(response)
    acc = accuracy_reward(response, reward_input["ground_truth"])
    return {"overall": (1.0 - format_weight) * acc + format_weight * fmt, "format": fmt, "accuracy": acc}


def compute_score(reward_inputs: list[dict[str, Any]] | dict[str, Any],
                  format_weight: float = 0.1) -> list[dict[str, float]] | dict[str, float]:
    """Scores for a list of samples (reward_type=batch) or for one sample (sequential)."""
    if isinstance(reward_inputs, dict):
        return score_one(reward_inputs, format_weight)
    return [score_one(reward_input, format_weight) for reward_input in reward_inputs]
