"""eval/eval.py end to end with vLLM on a tiny model: outputs, resume after a stop, errors before the engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "eval/eval.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.e2e
def test_text_eval_writes_results_and_a_rerun_redoes_only_missing_questions(tiny_qwen2, math_data, tmp_path):
    out = tmp_path / "eval"
    args = ["--model-path", str(tiny_qwen2), "--data-path", str(math_data["val"]), "--output-dir", str(out),
            "--format-prompt", "examples/format_prompt/math.jinja", "--max-new-tokens", "8", "--limit", "6",
            "--batch-size", "4", "--dtype", "fp32"]
    first = run_eval(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "accuracy" in first.stdout
    generations = out / "generations.jsonl"
    full = generations.read_text().splitlines()
    results = json.loads((out / "results.json").read_text())
    assert len(full) == 6 and results["num_scored"] == 6 and results["newly_generated"] == 6
    generations.write_text("\n".join(full[:2]) + "\n")  # as if stopped after two questions
    second = run_eval(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["newly_generated"] == 4
    # greedy decoding: the redone questions get the same responses
    assert generations.read_text().splitlines() == full


def test_a_model_path_without_config_is_an_error_before_any_engine_starts(math_data, tmp_path):
    proc = run_eval("--model-path", str(tmp_path), "--data-path", str(math_data["val"]), "--output-dir",
                    str(tmp_path / "out"))
    assert proc.returncode == 2 and "has no config.json" in proc.stderr
