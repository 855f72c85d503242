"""Final answers out of free-form model responses: option letters for multiple choice, strings otherwise.

Small and tired models write the answer in many ways: `<answer>B</answer>`, `\\boxed{B}`, `B)`,
`(b)`, `The answer is B.`, `Answer: option B`, the option's text instead of its letter, or junk.
Extraction looks in the most explicit place first and takes the last occurrence there (a model that
corrects itself ends with the answer it means):

  1. the last `<answer>...</answer>` block;
  2. the last `\\boxed{...}`;
  3. the last "answer is X" / "answer: X" phrase;
  4. for multiple choice only, a letter standing alone as the whole response or as `X)` / `(X)`.

A lower-case letter counts only where it cannot be an English word: alone, or followed by `.`, `)`,
`:` or the end (`the answer is a red square` names no option; `the answer is a.` names A).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mathruler.grader import grade_answer

LETTERS = "ABCD"

_ANSWER_TAG = re.compile(r"<\s*answer\s*>(.*?)<\s*/\s*answer\s*>", re.IGNORECASE | re.DOTALL)
_ANSWER_PHRASE = re.compile(r"answer\s*(?:is|:|=)\s*[:\-]?\s*(.+?)\s*(?:$|\n)", re.IGNORECASE)
_FORMAT = re.compile(r"\s*<think>.*?</think>\s*(?:<answer>(?P<tag>.*?)</answer>|\\boxed\{(?P<box>.*)\})\s*",
                     re.DOTALL)


def _boxed_contents(text: str) -> list[str]:
    """The contents of every `\\boxed{...}`, braces balanced, in order."""
    out, start = [], 0
    while (i := text.find("\\boxed{", start)) != -1:
        depth, j = 1, i + len("\\boxed{")
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth == 0:
            out.append(text[i + len("\\boxed{"): j - 1])
        start = j
    return out


def _letter_pattern(letters: str) -> re.Pattern[str]:
    """Optional "option"/"choice", optional "(" or "[", then the letter: an upper-case one before any
    non-word character, a lower-case one only before ".", ")", "]", ":" or the end."""
    upper, lower = letters.upper(), letters.lower()
    return re.compile(rf"^\s*(?:(?i:option|choice)\s+)?[(\[]?\s*"
                      rf"(?:([{upper}])(?![A-Za-z0-9])|([{lower}])(?=\s*(?:[.)\]:]|$)))")


def choice_in(snippet: str, letters: str = LETTERS, options: Sequence[str] | None = None) -> str | None:
    """The option letter a short answer names (an option's text, `B`, `(b)`, `B. red`, `option C`); else None."""
    if options:  # first, so that "A red square" means the option "red square", not A
        wanted = _option_text(snippet)
        for letter, option in zip(letters, options):
            text = re.sub(rf"^\s*[{letters}][.)]\s*", "", option)  # "B. red square" -> "red square"
            if wanted and wanted == _option_text(text):
                return letter
    match = _letter_pattern(letters).match(snippet)
    return (match.group(1) or match.group(2)).upper() if match else None


def extract_answer(response: str) -> str | None:
    """The final answer as written (tag, box or answer phrase), stripped; None when the response gives none."""
    for found in (_ANSWER_TAG.findall(response), _boxed_contents(response), _ANSWER_PHRASE.findall(response)):
        if found and found[-1].strip():
            return found[-1].strip()
    return None


def extract_choice(response: str, letters: str = LETTERS, options: Sequence[str] | None = None) -> str | None:
    """The option letter the response picks, or None (see the module docstring for where it looks)."""
    for found in (_ANSWER_TAG.findall(response), _boxed_contents(response), _ANSWER_PHRASE.findall(response)):
        if found:
            return choice_in(found[-1], letters, options)
    stripped = response.strip()
    if len(stripped) <= 3 and (choice := choice_in(stripped, letters)):  # "B", "b.", "(C)"
        return choice
    # "... so B) is right"; "(b)" too: a bracketed letter is no English word
    standalone = re.findall(rf"(?:^|\s)\(?([{letters}{letters.lower()}])\)(?=[\s.,;:]|$)", response)
    return standalone[-1].upper() if standalone else None


def reference_answer(ground_truth: str) -> str:
    """The answer inside a ground truth such as `<answer>B</answer>` or `\\boxed{7}` (else the text itself)."""
    return extract_answer(ground_truth) or ground_truth.strip()


def is_choice(answer: str, letters: str = LETTERS) -> bool:
    """Whether a reference answer is a single option letter."""
    return len(answer) == 1 and answer.upper() in letters


def grade(response: str, ground_truth: str, letters: str = LETTERS,
          options: Sequence[str] | None = None) -> tuple[str | None, bool]:
    """(the extracted answer, whether it is right). Letters for multiple choice; otherwise mathruler's grader."""
    expected = reference_answer(ground_truth)
    if is_choice(expected, letters):
        given = extract_choice(response, letters, options)
        return given, given == expected.upper()
    given = extract_answer(response)
    if given is None:
        return None, False
    return given, _normalise(given) == _normalise(expected) or bool(grade_answer(given, expected))


def is_well_formatted(response: str) -> bool:
    """`<think>...</think>` followed by exactly one final answer (`<answer>..</answer>` or `\\boxed{..}`), nothing after."""
    match = _FORMAT.fullmatch(response)
    return bool(match) and bool((match.group("tag") or match.group("box") or "").strip())


def _normalise(text: str) -> str:
    return " ".join(text.split()).lower()


def _option_text(text: str) -> str:
    """Lower case, single spaces, no final full stop, no leading article: "A Red square." -> "red square"."""
    return re.sub(r"^(?:a|an|the) ", "", _normalise(text).rstrip("."))
