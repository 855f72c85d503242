"""examples/reward_function/r1v.py: <think> + <answer> format and answer matching."""

import pytest

from longrl.rewards import load_reward_function

compute_score = load_reward_function("examples/reward_function/r1v.py:compute_score")


def score(response: str, ground_truth: str = "B", **kwargs) -> dict:
    return compute_score([{"response": response, "response_length": 1, "ground_truth": ground_truth}], **kwargs)[0]


def test_correct_choice_in_format_scores_one():
    assert score("<think>the cup moves left</think> <answer>B</answer>") == \
        {"overall": 1.0, "format": 1.0, "accuracy": 1.0}


def test_ground_truth_wrapped_in_answer_tags_and_case_and_spaces_are_ignored():
    assert score("<think>x</think><answer> b </answer>", ground_truth="<answer>B</answer>")["accuracy"] == 1.0
    assert score("<think>x</think><answer>Red  Cup</answer>", ground_truth="red cup")["accuracy"] == 1.0


def test_wrong_choice_scores_only_the_format_weight():
    # 0.5 * 0 + 0.5 * 1 = 0.5
    assert score("<think>x</think><answer>C</answer>") == pytest.approx({"overall": 0.5, "format": 1.0, "accuracy": 0.0})


def test_bare_answer_without_tags_is_graded_but_loses_format():
    # 0.5 * 1 + 0.5 * 0 = 0.5
    assert score("B") == pytest.approx({"overall": 0.5, "format": 0.0, "accuracy": 1.0})


def test_text_after_the_answer_block_is_bad_format():
    assert score("<think>x</think><answer>B</answer> because")["format"] == 0.0


def test_numeric_answers_are_graded_through_mathruler():
    assert score("<think>x</think><answer>3.0</answer>", ground_truth="3")["accuracy"] == 1.0


def test_empty_response_scores_zero():
    assert score("") == {"overall": 0.0, "format": 0.0, "accuracy": 0.0}


def test_format_weight_kwarg_changes_the_mix():
    # 0.9 * 1 + 0.1 * 0 = 0.9
    assert score("B", format_weight=0.1)["overall"] == pytest.approx(0.9, abs=1e-12)
