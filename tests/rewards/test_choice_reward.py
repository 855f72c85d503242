"""examples/reward_function/choice.py: multiple-choice answers graded as eval/eval.py grades them."""

from longrl.rewards import load_reward_function

compute_score = load_reward_function("examples/reward_function/choice.py:compute_score")
PROBLEM = "Which shape appears first?\nOptions:\nA. red square\nB. blue square\nC. green square\nD. cyan square"


def score(response: str, ground_truth: str = "<answer>B</answer>") -> dict:
    return compute_score([{"response": response, "response_length": 1, "ground_truth": ground_truth,
                           "problem": PROBLEM}])[0]


def test_the_option_text_counts_as_its_letter():
    assert score("<think>blue, then red</think><answer>blue square</answer>") == \
        {"overall": 1.0, "format": 1.0, "accuracy": 1.0}


def test_a_letter_in_any_case_counts_and_another_option_scores_only_the_format_weight():
    assert score("<think>x</think><answer>b</answer>")["accuracy"] == 1.0
    # 0.5 * 0 (accuracy) + 0.5 * 1 (format) = 0.5
    assert score("<think>x</think><answer>red square</answer>")["overall"] == 0.5


def test_an_answer_outside_the_format_or_naming_no_option_scores_zero_accuracy():
    assert score("blue square") == {"overall": 0.0, "format": 0.0, "accuracy": 0.0}
    assert score("<think>x</think><answer>purple circle</answer>")["accuracy"] == 0.0


def test_one_sample_alone_is_scored_too():
    sample = {"response": "<think>x</think><answer>B</answer>", "response_length": 1, "ground_truth": "B",
              "problem": PROBLEM}
    assert compute_score(sample)["overall"] == 1.0
