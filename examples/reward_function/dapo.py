"""DAPO reward: +1 for a correct final answer, -1 otherwise, plus soft overlong punishment.

DAPO (Yu et al. 2025, https://arxiv.org/abs/2503.14476), eq. 13, with L_max the longest
response and L_cache the buffer before it:

    R_length(y) = 0                                   if |y| <= L_max - L_cache
                = ((L_max - L_cache) - |y|) / L_cache  if L_max - L_cache < |y| <= L_max
                = -1                                  if L_max < |y|

overall = accuracy + overlong_penalty_factor * R_length(y). Use as
`worker.reward.reward_function=examples/reward_function/dapo.py:compute_score`; the trainer passes
max_response_length (data.max_response_length) unless reward_function_kwargs sets it.
"""

from __future__ import annotations

import re
from typing import Any

from mathruler.grader import extract_boxed_content, grade_answer

ANSWER_LINE = re.compile(r"Answer\s*:\s*([^\n]+)", re.IGNORECASE)
# Only the end of a response holds the final answer; the longest MATH-500 answer is 159
# characters, so 300 keeps every answer while bounding the regex and sympy work.
TAIL_CHARS = 300


def extract_final_answer(response: str) -> str | None:
    """The last \\boxed{} content, else the text after the last `Answer:`; None when neither."""
    tail = response[-TAIL_CHARS:]
    boxed = extract_boxed_content(tail)
    if boxed != "None":  # mathruler's value for "no \\boxed{} found"
        return boxed
    lines = ANSWER_LINE.findall(tail)
    return lines[-1].strip() if lines else None


def accuracy_reward(response: str, ground_truth: str) -> float:
    """+1.0 for a correct final answer, -1.0 for a wrong or missing one."""
    answer = extract_final_answer(response)
    return 1.0 if answer is not None and grade_answer(answer, str(ground_truth)) else -1.0


def overlong_reward(response_length: int, max_response_length: int, overlong_buffer_len: int) -> float:
    """R_length of DAPO eq. 13: 0 before the buffer, linear to -1 across it, -1 beyond L_max."""
    expected_len = max_response_length - overlong_buffer_len
    if response_length <= expected_len:
        return 0.0
    if response_length <= max_response_length:
        return (expected_len - response_length) / overlong_buffer_len
    return -1.0


def _buffer_len(max_response_length: int, overlong_buffer_len: int | None,
                overlong_buffer_length: int | None) -> int:
    if overlong_buffer_len is not None and overlong_buffer_length is not None \
            and overlong_buffer_len != overlong_buffer_length:
        raise ValueError(f"dapo reward got overlong_buffer_len={overlong_buffer_len} and its EasyR1 spelling "
                         f"overlong_buffer_length={overlong_buffer_length}; set only one")
    buffer = overlong_buffer_len if overlong_buffer_len is not None else overlong_buffer_length
    if buffer is None:
        buffer = max_response_length // 5  # the paper's L_cache=4096 for L_max=20480
    if not 0 < buffer <= max_response_length:
        raise ValueError(f"dapo reward: overlong_buffer_len={buffer} must be in (0, max_response_length="
                         f"{max_response_length}]; set worker.reward.reward_function_kwargs.overlong_buffer_len")
    return buffer


def compute_score(reward_inputs: list[dict[str, Any]] | dict[str, Any], max_response_length: int | None = None,
                  overlong_buffer_len: int | None = None, overlong_penalty_factor: float = 1.0,
                  overlong_buffer_length: int | None = None) -> list[dict[str, float]] | dict[str, float]:
    """Scores for a list of samples (reward_type=batch) or for one sample (sequential).

    `overlong_buffer_length` is EasyR1's name for `overlong_buffer_len`, accepted so its configs port.
    """
    if max_response_length is None:
        raise ValueError("dapo reward needs max_response_length: set worker.reward.reward_function_kwargs."
                         "max_response_length, or call it through longrl.rewards.score_responses")
    buffer = _buffer_len(max_response_length, overlong_buffer_len, overlong_buffer_length)

    def score_one(reward_input: dict[str, Any]) -> dict[str, float]:
        accuracy = accuracy_reward(reward_input["response"], reward_input["ground_truth"])
        overlong = overlong_penalty_factor * overlong_reward(reward_input["response_length"],
                                                             max_response_length, buffer)
        return {"overall": accuracy + overlong, "accuracy": accuracy, "overlong": overlong,
                "accuracy_normalized": 0.5 * (accuracy + 1.0)}

    if isinstance(reward_inputs, dict):
        return score_one(reward_inputs)
    return [score_one(reward_input) for reward_input in reward_inputs]
