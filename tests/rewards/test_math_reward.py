"""examples/reward_function/math.py: <think> + \\boxed{} format and mathruler accuracy."""

import pytest

from longrl.rewards import load_reward_function

FILE = "examples/reward_function/math.py"
compute_score = load_reward_function(f"{FILE}:compute_score")
format_reward = load_reward_function(f"{FILE}:format_reward")


def score(response: str, ground_truth: str = "7", **kwargs) -> dict:
    return compute_score([{"response": response, "response_length": 1, "ground_truth": ground_truth}], **kwargs)[0]


def test_correct_answer_in_format_scores_one():
    assert score("<think>3 plus 4 makes 7</think> The answer is \\boxed{7}.") == \
        {"overall": 1.0, "format": 1.0, "accuracy": 1.0}


def test_wrong_answer_in_format_scores_only_the_format_weight():
    # 0.9 * 0 + 0.1 * 1 = 0.1
    assert score("<think>guess</think> \\boxed{8}") == pytest.approx({"overall": 0.1, "format": 1.0, "accuracy": 0.0})


def test_correct_answer_without_think_block_loses_the_format_weight():
    # 0.9 * 1 + 0.1 * 0 = 0.9
    assert score("\\boxed{7}") == pytest.approx({"overall": 0.9, "format": 0.0, "accuracy": 1.0})


def test_empty_response_scores_zero():
    assert score("") == {"overall": 0.0, "format": 0.0, "accuracy": 0.0}


def test_think_without_boxed_answer_is_bad_format_and_wrong():
    assert score("<think>3 plus 4</think> 7") == {"overall": 0.0, "format": 0.0, "accuracy": 0.0}


def test_format_tolerates_whitespace_around_and_inside_tags():
    assert format_reward("\n  < think >a\nb</ think >\n\\boxed{1}\n") == 1.0


def test_equivalent_answers_are_graded_equal_and_the_last_box_counts():
    assert score("<think>half</think> \\boxed{\\frac{1}{2}}", ground_truth="0.5")["accuracy"] == 1.0
    assert score("<think>x</think> \\boxed{3} then \\boxed{7}")["accuracy"] == 1.0


def test_format_weight_kwarg_changes_the_mix():
    # 0.5 * 0 + 0.5 * 1 = 0.5
    assert score("<think>x</think> \\boxed{8}", format_weight=0.5)["overall"] == pytest.approx(0.5, abs=1e-12)


def test_single_sample_call_returns_one_dict():
    sample = {"response": "<think>x</think>\\boxed{7}", "response_length": 1, "ground_truth": "7"}
    assert compute_score(sample) == {"overall": 1.0, "format": 1.0, "accuracy": 1.0}
