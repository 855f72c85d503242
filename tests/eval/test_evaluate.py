"""longrl/eval/evaluate.py: resumable evaluation bookkeeping and the summary numbers.

The generator here answers from a fixed script, so each test knows every response; the real vLLM
path is covered by tests/eval/test_eval_cli.py.
"""

from __future__ import annotations

import json

import pytest

from longrl.config import ConfigError
from longrl.eval.evaluate import (GENERATIONS_FILE, Generation, Question, evaluate, read_records, record_for,
                                  summarise)


def questions(n: int = 5) -> list[Question]:
    # references cycle A, B, C, A, B; problem types alternate
    return [Question(f"q{i}", [1, 2, i], f"<answer>{'ABC'[i % 3]}</answer>",
                     problem_type="mc" if i % 2 == 0 else "other", category="count") for i in range(n)]


class Scripted:
    """Answers `<answer>A</answer>` to everything; records what it was asked; can fail on a given call."""

    def __init__(self, fail_on_call: int | None = None):
        self.asked: list[str] = []
        self.calls, self.fail_on_call = 0, fail_on_call

    def __call__(self, batch: list[Question]) -> list[Generation]:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("stopped")
        self.asked += [q.id for q in batch]
        return [Generation("<think>x</think><answer>A</answer>") for _ in batch]


def test_a_rerun_after_an_interruption_asks_only_the_unanswered_questions(tmp_path):
    qs = questions(5)
    with pytest.raises(KeyboardInterrupt):
        evaluate(qs, Scripted(fail_on_call=2), tmp_path / "run", batch_size=2)  # stops after q0, q1
    assert sorted(read_records(tmp_path / "run")) == ["q0", "q1"]
    second = Scripted()
    resumed = evaluate(qs, second, tmp_path / "run", batch_size=2)
    assert second.asked == ["q2", "q3", "q4"] and resumed["newly_generated"] == 3
    straight = evaluate(qs, Scripted(), tmp_path / "straight", batch_size=2)
    assert {k: v for k, v in resumed.items() if k != "newly_generated"} == \
        {k: v for k, v in straight.items() if k != "newly_generated"}
    lines = (tmp_path / "run" / GENERATIONS_FILE).read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["q0", "q1", "q2", "q3", "q4"]


def test_a_line_torn_by_a_crash_is_answered_again(tmp_path):
    qs = questions(3)
    evaluate(qs, Scripted(), tmp_path, batch_size=8)
    file = tmp_path / GENERATIONS_FILE
    lines = file.read_text().splitlines()
    file.write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])  # q2's line cut mid-write
    again = Scripted()
    evaluate(qs, again, tmp_path, batch_size=8)
    assert again.asked == ["q2"]
    assert [json.loads(line)["id"] for line in file.read_text().splitlines()] == ["q0", "q1", "q2"]


def test_a_finished_evaluation_run_again_generates_nothing(tmp_path):
    evaluate(questions(3), Scripted(), tmp_path)
    again = Scripted()
    assert evaluate(questions(3), again, tmp_path)["newly_generated"] == 0 and again.asked == []


def test_other_settings_in_the_same_directory_are_refused_naming_what_changed(tmp_path):
    evaluate(questions(2), Scripted(), tmp_path, settings={"model_path": "/m1", "num_video_frames": 16})
    with pytest.raises(ConfigError, match=r"model_path: '/m1' -> '/m2'.*another --output-dir"):
        evaluate(questions(2), Scripted(), tmp_path, settings={"model_path": "/m2", "num_video_frames": 16})


def test_summary_accuracies_baseline_and_failed_questions():
    qs = questions(5)
    texts = ["<think>x</think><answer>A</answer>",   # q0 ref A: right, formatted
             "B",                                    # q1 ref B: right, not formatted
             "<think>x</think><answer>B</answer>",   # q2 ref C: wrong, formatted
             None,                                   # q3: undecodable video, not scored
             "junk"]                                 # q4 ref B: no answer
    records = [record_for(q, Generation(t, None if t else "cannot decode video v3.mp4")) for q, t in zip(qs, texts)]
    s = summarise(records)
    # scored: q0, q1, q2, q4 -> 2 right of 4; formatted 2 of 4; answered 3 of 4
    assert (s["num_scored"], s["accuracy"], s["format_accuracy"], s["answer_rate"]) == (4, 0.5, 0.5, 0.75)
    # mc: q0 (right), q2 (wrong), q4 (wrong) -> 1/3; other: q1 (right) -> 1/1 (q3 is not scored)
    assert s["accuracy_by_problem_type"] == {"mc": pytest.approx(1 / 3), "other": 1.0}
    assert s["accuracy_by_category"] == {"count": 0.5}
    # references of the scored: A, B, C, B -> always "B" gets 2 of 4
    assert (s["baseline_most_common_answer"], s["baseline_accuracy"], s["baseline_is_choice"]) == ("B", 0.5, True)
    assert s["num_failed"] == 1 and s["failed"][0] == {"id": "q3", "videos": [], "images": [],
                                                   "error": "cannot decode video v3.mp4"}


def test_record_keeps_response_prediction_and_grade():
    q = Question("q", [1], "<answer>C</answer>", options=["A. 1", "B. 2", "C. red square", "D. 4"])
    r = record_for(q, Generation("<think>so</think><answer>Red square</answer>"))
    assert (r["ground_truth"], r["prediction"], r["correct"], r["formatted"]) == ("C", "C", True, True)


def test_image_questions_carry_their_images_to_the_engine_as_pixels_and_a_bad_one_is_named(tmp_path):
    from PIL import Image

    from longrl.eval.evaluate import load_questions
    from longrl.eval.generator import question_media
    from longrl.models.tiny import build_tokenizer
    from longrl.models.vision_cache import VideoSettings, VisionCache

    Image.new("RGB", (56, 56), (255, 0, 0)).save(tmp_path / "red.png")
    rows = [{"problem_id": "a", "problem": "<image>How many?", "answer": "1", "images": ["red.png"]},
            {"problem_id": "b", "problem": "<image>How many?", "answer": "1", "images": ["gone.png"]}]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokenizer = build_tokenizer(tmp_path / "tok")
    questions, _ = load_questions(str(tmp_path / "q.jsonl"), tokenizer, format_prompt=None)
    assert questions[0].images == [str(tmp_path / "red.png")]
    cache = VisionCache(VideoSettings(8, 3136, 50176), cache_embeds=False, keep_frames=True)
    [image], error = question_media(cache, questions[0])
    assert error is None and image.image.shape == (56, 56, 3) and image.grid_thw == (1, 4, 4)
    assert question_media(cache, questions[1]) == ([], f"cannot decode image {tmp_path / 'gone.png'}")
    # results.json lists the question that could not be evaluated with its image and the reason
    failed = summarise([record_for(questions[1], Generation(None, "cannot decode image gone.png"))])["failed"]
    assert failed == [{"id": "b", "videos": [], "images": [str(tmp_path / "gone.png")],
                       "error": "cannot decode image gone.png"}]
    assert "no vision tower" in question_media(None, questions[0])[1]


def test_unusable_rows_are_left_out_and_listed_in_results_json(tmp_path):
    from longrl.eval.evaluate import load_questions
    from longrl.models.tiny import build_tokenizer

    data = tmp_path / "val.jsonl"
    data.write_bytes(b'{"problem": "Pick one", "answer": "<answer>A</answer>", "problem_id": "ok1"}\n'
                     b'{"problem": "Pick one", "answer": \n'
                     b'{"problem": "", "answer": "<answer>B</answer>", "problem_id": "empty"}\n'
                     b'{"problem": "Pick two", "answer": "<answer>B</answer>", "problem_id": "ok2"}\n')
    qs, skipped = load_questions(str(data), build_tokenizer(tmp_path / "tok"))
    assert [q.id for q in qs] == ["ok1", "ok2"]
    summary = evaluate(qs, Scripted(), tmp_path / "run", skipped_rows=skipped)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["num_scored"] == 2 and written == summary
    assert [row.split(": ", 1)[0] for row in written["skipped_rows"]] == [f"line 2 of {data}",
                                                                           f"line 3 of {data} (row 1)"]
