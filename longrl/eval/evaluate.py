"""LongVideo-Reason-style evaluation: generate once per question, grade, summarise, resume after a stop.

`evaluate` works through the questions in batches and appends one line per question to
`<output_dir>/generations.jsonl` as each batch finishes, so a re-run skips every question already
answered and an interrupted run loses at most one batch. `summarise` turns those lines into the
numbers of `results.json`: accuracy overall, per problem_type and per category, format accuracy,
and the score of always answering the most common reference answer. A question whose video cannot
be decoded is recorded with its error, counted and named, and left out of the accuracies.
The generator is a callable, so the vLLM engine (`VLLMGenerator`) is only built by the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from longrl.config import ConfigError, DataConfig
from longrl.data.image import image_name
from longrl.eval.answers import LETTERS, grade, is_choice, is_well_formatted, reference_answer

logger = logging.getLogger(__name__)

GENERATIONS_FILE = "generations.jsonl"
RESULTS_FILE = "results.json"
SETTINGS_FILE = "eval_settings.json"


@dataclasses.dataclass
class Question:
    """One evaluation item: rendered prompt tokens, reference, media paths and the row's descriptive fields."""

    id: str
    prompt_ids: list[int]
    ground_truth: str
    videos: list[str] = dataclasses.field(default_factory=list)
    problem_type: str = "all"
    category: str | None = None
    options: list[str] | None = None
    images: list = dataclasses.field(default_factory=list)
    """Image paths or {"bytes", "path"} dicts, in placeholder order."""


@dataclasses.dataclass
class Generation:
    """A response, or the reason there is none (e.g. an undecodable video)."""

    text: str | None
    error: str | None = None


Generate = Callable[[list[Question]], list[Generation]]


def load_questions(data_path: str, tokenizer: Any, *, video_dir: str | None = None, format_prompt: str | None = None,
                   prompt_key: str = "problem", answer_key: str = "answer", video_key: str = "videos",
                   image_key: str = "images", image_dir: str | None = None,
                   max_prompt_length: int = 1 << 20, limit: int | None = None) -> tuple[list[Question], list[str]]:
    """The questions of `data_path` (jsonl/json/parquet file, directory, or `name@split`), prompts rendered
    with the format prompt and the chat template exactly as training renders them (RLDataset); and the rows
    that could not be used, each named by file and line (they are evaluated without, and listed in results.json)."""
    from longrl.data.dataset import RLDataset

    data_path = split_file(data_path)
    cfg = DataConfig(train_files=data_path, prompt_key=prompt_key, answer_key=answer_key, video_key=video_key,
                     video_dir=video_dir, image_key=image_key, image_dir=image_dir, format_prompt=format_prompt,
                     max_prompt_length=max_prompt_length)
    data = RLDataset(data_path, cfg, tokenizer, config_key="--data-path")
    questions, seen = [], set()
    for item in data.items[:limit]:
        row = data.rows[item["row"]]
        qid = str(row.get("problem_id") or f"row-{item['row']}")
        if qid in seen:
            raise ConfigError(f"--data-path={data_path!r}: problem_id {qid!r} appears twice; ids must be unique "
                              f"(results are kept per id so that a re-run can resume)")
        seen.add(qid)
        options = row.get("options")
        questions.append(Question(qid, item["prompt_ids"], item["ground_truth"], item.get("videos", []),
                                  str(row.get("problem_type") or "all"), row.get("category"),
                                  list(options) if options else None, item.get("images", [])))
    return questions, list(data.problems)


def split_file(data_path: str) -> str:
    """`dir@split` -> `dir/split.jsonl` (or .json/.parquet) when that file exists; otherwise `data_path` as given.

    datasets' folder loader would read a LongVideo-Reason directory as a video folder (its videos/
    subdirectory), not as the split files next to it.
    """
    if "@" not in data_path or Path(data_path).exists():
        return data_path
    name, split = data_path.rsplit("@", 1)
    for ext in (".jsonl", ".json", ".parquet"):
        if (candidate := Path(name) / f"{split}{ext}").is_file():
            return str(candidate)
    return data_path


# ---------------------------------------------------------------------------------------------
# the resumable loop
# ---------------------------------------------------------------------------------------------
def check_settings(output_dir: Path, settings: dict[str, Any]) -> None:
    """Record the settings of this evaluation; refuse to mix answers of different settings in one directory."""
    output_dir.mkdir(parents=True, exist_ok=True)
    file = output_dir / SETTINGS_FILE
    if file.is_file():
        old = json.loads(file.read_text())
        changed = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(f"{output_dir} holds an evaluation with other settings ({detail}); a re-run continues "
                              f"only with the same settings: give another --output-dir, or delete {output_dir}")
    file.write_text(json.dumps(settings, indent=1))


def read_records(output_dir: Path) -> dict[str, dict[str, Any]]:
    """Per-question records already written (a line torn by a crash is dropped and redone)."""
    file = output_dir / GENERATIONS_FILE
    records: dict[str, dict[str, Any]] = {}
    if not file.is_file():
        return records
    for line in file.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        records[record["id"]] = record
    return records


def record_for(question: Question, generation: Generation) -> dict[str, Any]:
    """One line of generations.jsonl: the response, what was extracted from it, and its grade."""
    expected = reference_answer(question.ground_truth)
    record = {"id": question.id, "problem_type": question.problem_type, "category": question.category,
              "videos": question.videos, "images": [image_name(i) for i in question.images], "ground_truth": expected, "response": generation.text,
              "error": generation.error}
    if generation.text is None:
        return {**record, "prediction": None, "correct": False, "formatted": False}
    prediction, correct = grade(generation.text, question.ground_truth, LETTERS, question.options)
    return {**record, "prediction": prediction, "correct": correct, "formatted": is_well_formatted(generation.text)}


def evaluate(questions: Sequence[Question], generate: Generate, output_dir: str | Path, batch_size: int = 64,
             settings: dict[str, Any] | None = None, skipped_rows: Sequence[str] = ()) -> dict[str, Any]:
    """Answer every question not yet in output_dir/generations.jsonl, then write and return the summary;
    `skipped_rows` (data rows that could not be loaded) are listed in it."""
    output_dir = Path(output_dir)
    check_settings(output_dir, settings or {})
    done = read_records(output_dir)
    todo = [q for q in questions if q.id not in done]
    if done:
        logger.info("%s: %d of %d questions already answered; continuing with %d", output_dir,
                    len(questions) - len(todo), len(questions), len(todo))
    _rewrite_clean(output_dir, done)
    with open(output_dir / GENERATIONS_FILE, "a") as out, \
            tqdm(total=len(questions), initial=len(questions) - len(todo), desc="eval", dynamic_ncols=True) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            generations = generate(batch)
            for question, generation in zip(batch, generations, strict=True):
                record = record_for(question, generation)
                done[question.id] = record
                out.write(json.dumps(record) + "\n")
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(batch))
    summary = summarise([done[q.id] for q in questions])
    summary["newly_generated"] = len(todo)
    summary["skipped_rows"] = list(skipped_rows)
    (output_dir / RESULTS_FILE).write_text(json.dumps(summary, indent=1))
    return summary


def _rewrite_clean(output_dir: Path, records: dict[str, dict[str, Any]]) -> None:
    """generations.jsonl without torn lines, so that appending continues a well-formed file."""
    file = output_dir / GENERATIONS_FILE
    if file.is_file():
        tmp = file.with_name(file.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records.values()))
        os.replace(tmp, file)


# ---------------------------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------------------------
def summarise(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (overall, per problem_type, per category), format accuracy, answer rate, the most-common-answer
    baseline, and the questions that could not be evaluated (left out of every rate)."""
    scored = [r for r in records if r["error"] is None]
    failed = [r for r in records if r["error"] is not None]

    def rate(rows: Sequence[dict[str, Any]], key: str) -> float:
        return sum(bool(r[key]) for r in rows) / len(rows) if rows else 0.0

    by_type, by_category = defaultdict(list), defaultdict(list)
    for r in scored:
        by_type[r["problem_type"]].append(r)
        if r["category"] is not None:
            by_category[r["category"]].append(r)
    answers = Counter(r["ground_truth"] for r in scored)
    common, count = min(answers.items(), key=lambda kv: (-kv[1], kv[0])) if answers else (None, 0)
    return {
        "num_questions": len(records), "num_scored": len(scored),
        "accuracy": rate(scored, "correct"),
        "format_accuracy": rate(scored, "formatted"),
        "answer_rate": sum(r["prediction"] is not None for r in scored) / len(scored) if scored else 0.0,
        "accuracy_by_problem_type": {k: rate(v, "correct") for k, v in sorted(by_type.items())},
        "accuracy_by_category": {k: rate(v, "correct") for k, v in sorted(by_category.items())},
        "baseline_most_common_answer": common,
        "baseline_accuracy": count / len(scored) if scored else 0.0,
        "baseline_is_choice": common is not None and is_choice(common),
        "num_failed": len(failed),
        # records written before images were listed have no "images"
        "failed": [{"id": r["id"], "videos": r["videos"], "images": r.get("images", []), "error": r["error"]}
                   for r in failed],
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the console."""
    lines = [f"accuracy {summary['accuracy']:.1%} on {summary['num_scored']} questions "
             f"(format {summary['format_accuracy']:.1%}, answered {summary['answer_rate']:.1%}; always "
             f"{summary['baseline_most_common_answer']!r}: {summary['baseline_accuracy']:.1%})"]
    for title, key in (("problem_type", "accuracy_by_problem_type"), ("category", "accuracy_by_category")):
        if summary[key]:
            lines.append(f"  by {title}: " + ", ".join(f"{k} {v:.1%}" for k, v in summary[key].items()))
    if summary["num_failed"]:
        lines.append(f"  {summary['num_failed']} question(s) not evaluated: " + "; ".join(
            f"{f['id']} ({f['error']})" for f in summary["failed"][:5]))
    return "\n".join(lines)
