"""examples/reward_function/dapo.py: +-1 accuracy and DAPO eq. 13 overlong shaping."""

import pytest

from longrl.rewards import load_reward_function

FILE = "examples/reward_function/dapo.py"
compute_score = load_reward_function(f"{FILE}:compute_score")
overlong_reward = load_reward_function(f"{FILE}:overlong_reward")


def score(response: str, length: int = 10, ground_truth: str = "7", **kwargs) -> dict:
    kwargs = {"max_response_length": 100, "overlong_buffer_len": 20, **kwargs}
    sample = {"response": response, "response_length": length, "ground_truth": ground_truth}
    return compute_score([sample], **kwargs)[0]


def test_correct_boxed_answer_scores_plus_one():
    assert score("so \\boxed{7}") == {"overall": 1.0, "accuracy": 1.0, "overlong": 0.0, "accuracy_normalized": 1.0}


def test_answer_line_is_used_when_there_is_no_box():
    assert score("3 + 4 ...\nAnswer: 7")["accuracy"] == 1.0
    assert score("Answer: 5\nno wait\nAnswer: 7")["accuracy"] == 1.0


def test_wrong_missing_or_empty_answer_scores_minus_one():
    assert score("\\boxed{8}")["accuracy"] == -1.0
    assert score("I do not know")["accuracy"] == -1.0
    assert score("") == {"overall": -1.0, "accuracy": -1.0, "overlong": 0.0, "accuracy_normalized": 0.0}


@pytest.mark.parametrize("length, expected", [
    (80, 0.0),    # |y| = L_max - L_cache = 100 - 20: no penalty
    (90, -0.5),   # ((100 - 20) - 90) / 20 = -10 / 20
    (95, -0.75),  # (80 - 95) / 20 = -15 / 20
    (100, -1.0),  # (80 - 100) / 20 = -1 at L_max
    (101, -1.0),  # beyond L_max
])
def test_overlong_reward_follows_dapo_eq_13(length, expected):
    assert overlong_reward(length, 100, 20) == pytest.approx(expected, abs=1e-12)


def test_penalty_factor_scales_the_overlong_term_added_to_accuracy():
    # accuracy 1 + 0.5 * ((80 - 90) / 20) = 1 - 0.25 = 0.75
    result = score("\\boxed{7}", length=90, overlong_penalty_factor=0.5)
    assert result["overall"] == pytest.approx(0.75, abs=1e-12)
    assert result["overlong"] == pytest.approx(-0.25, abs=1e-12)


def test_easyr1_spelling_of_the_buffer_length_is_accepted():
    # overlong_buffer_length=40: (60 - 90) / 40 = -0.75
    result = score("\\boxed{7}", length=90, overlong_buffer_len=None, overlong_buffer_length=40)
    assert result["overlong"] == pytest.approx(-0.75, abs=1e-12)


def test_default_buffer_is_a_fifth_of_max_length_as_in_the_paper():
    # buffer = 100 // 5 = 20: (80 - 90) / 20 = -0.5
    assert score("\\boxed{7}", length=90, overlong_buffer_len=None)["overlong"] == pytest.approx(-0.5, abs=1e-12)


def test_missing_max_response_length_is_an_error_saying_where_to_set_it():
    sample = {"response": "\\boxed{7}", "response_length": 1, "ground_truth": "7"}
    with pytest.raises(ValueError, match="reward_function_kwargs.max_response_length"):
        compute_score([sample])


def test_buffer_longer_than_max_length_is_an_error():
    with pytest.raises(ValueError, match="overlong_buffer_len=200 must be in"):
        score("\\boxed{7}", overlong_buffer_len=200)
