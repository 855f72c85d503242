"""longrl/eval/answers.py: option letters and free-form answers out of messy responses."""

import pytest

from longrl.eval.answers import extract_answer, extract_choice, grade, is_well_formatted, reference_answer

OPTIONS = ["A. red square", "B. green circle", "C. blue triangle", "D. white square"]


@pytest.mark.parametrize("response, letter", [
    ("<think>two shapes</think><answer>B</answer>", "B"),
    ("<think>x</think><answer> b </answer>", "B"),                       # lower case, spaces
    ("<think>x</think><answer>(C)</answer>", "C"),
    ("<think>x</think><answer>D. white square</answer>", "D"),           # letter and option text
    ("<answer>option a</answer>", "A"),
    ("<answer>A</answer> wait, no: <answer>C</answer>", "C"),            # the last answer block wins
    ("<think>x</think> \\boxed{B}", "B"),
    ("\\boxed{\\text{C}}", None),                                      # boxed but no letter alone: no pick
    ("B)", "B"),
    ("b.", "B"),
    ("B", "B"),
    ("I think (c) is right, the shapes move left.", "C"),
    ("The answer is B.", "B"),
    ("the answer is d", "D"),
    ("Answer: C because the blue triangle comes last", "C"),
    ("The final answer is: a.", "A"),
])
def test_extract_choice_reads_the_usual_ways_of_answering(response, letter):
    assert extract_choice(response) == letter


@pytest.mark.parametrize("response", [
    "",
    "asdf qwer zxcv",
    "A lot of shapes appear in the video",      # "A" is an article here, not a choice
    "the answer is a red thing",                 # lower-case "a" followed by a word is the article
    "<answer></answer>",
    "<answer>E</answer>",                        # not one of the four letters
    "<think>B) looks right</think><answer>maybe</answer>",  # an explicit answer block that names nothing wins
    "Blue",
])
def test_extract_choice_gives_none_for_junk_and_ambiguous_text(response):
    assert extract_choice(response) is None


def test_option_text_instead_of_letter_maps_to_its_letter():
    assert extract_choice("<answer>Blue Triangle</answer>", options=OPTIONS) == "C"
    # "A red square" names option C's text, with an article; it is not the letter A
    assert extract_choice("<answer>A red square.</answer>", options=["A. 2", "B. 3", "C. red square", "D. 4"]) == "C"
    assert extract_choice("The answer is green circle", options=OPTIONS) == "B"
    assert extract_choice("<answer>purple blob</answer>", options=OPTIONS) is None


def test_extract_answer_prefers_tags_then_boxes_then_phrases():
    assert extract_answer("The answer is 3. <answer>4</answer> \\boxed{5}") == "4"
    assert extract_answer("The answer is 3. \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract_answer("so the answer is 12") == "12"
    assert extract_answer("no idea") is None


def test_reference_answer_strips_tags_and_boxes():
    assert reference_answer("<answer>B</answer>") == "B"
    assert reference_answer("\\boxed{7}") == "7"
    assert reference_answer(" 7 ") == "7"


def test_grade_multiple_choice_and_free_form():
    assert grade("<think>x</think><answer>b</answer>", "<answer>B</answer>") == ("B", True)
    assert grade("<think>x</think><answer>C</answer>", "<answer>B</answer>") == ("C", False)
    assert grade("junk", "<answer>B</answer>") == (None, False)
    assert grade("<think>3 + 4 = 7</think> \\boxed{7}", "7") == ("7", True)
    assert grade("<think>3 + 4 = 8</think> \\boxed{8}", "7") == ("8", False)
    assert grade("<think>..</think>", "7") == (None, False)


@pytest.mark.parametrize("response, ok", [
    ("<think>two shapes</think><answer>B</answer>", True),
    ("  <think>x</think>\n<answer>B</answer>\n", True),
    ("<think>3 + 4 = 7</think> \\boxed{7}", True),
    ("<answer>B</answer>", False),                                     # no reasoning
    ("<think>x</think><answer></answer>", False),                       # empty answer
    ("<think>x</think><answer>B</answer> and more", False),             # text after the answer
    ("<think>x</think>B", False),
])
def test_is_well_formatted(response, ok):
    assert is_well_formatted(response) is ok
