import json
import logging
from pathlib import Path

import pytest

from longrl.logging.trackers import Tracker, format_console_line, reduce_metrics


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_reduce_metrics_means_each_key_over_the_workers_that_report_it():
    per_worker = [{"actor/pg_loss": 1.0, "actor/lr": 0.1}, {"actor/pg_loss": 2.0}, {"actor/pg_loss": 6.0}]
    # pg_loss: (1 + 2 + 6) / 3 = 3.0; lr only from worker 0: 0.1
    assert reduce_metrics(per_worker) == {"actor/pg_loss": 3.0, "actor/lr": 0.1}
    assert reduce_metrics([]) == {}


def test_console_line_groups_by_prefix_with_four_significant_digits():
    metrics = {"reward/overall": 0.75, "actor/pg_loss": -0.123456, "timing_s/gen": 12.3456,
               "actor/kl_loss": 0.001234567}
    # -0.123456 -> -0.1235; 0.001234567 -> 0.001235; 12.3456 -> 12.35; groups and names sorted
    assert format_console_line(metrics, 3) == (
        "step 3 | actor: kl_loss=0.001235 pg_loss=-0.1235 | reward: overall=0.75 | timing_s: gen=12.35")


def test_console_logger_writes_one_line_per_step(tmp_path, caplog):
    tracker = Tracker(["console"], tmp_path, "p", "e", config={})
    with caplog.at_level(logging.INFO, logger="longrl.logging.trackers"):
        tracker.log({"actor/pg_loss": 0.5}, step=1)
        tracker.log({"actor/pg_loss": 0.25}, step=2)
    assert [r.getMessage() for r in caplog.records] == ["step 1 | actor: pg_loss=0.5", "step 2 | actor: pg_loss=0.25"]


def test_file_logger_appends_one_json_line_per_step(tmp_path):
    tracker = Tracker(["file"], tmp_path, "p", "e", config={})
    tracker.log({"reward/overall": 0.5, "actor/kl_loss": 0.01}, step=1)
    tracker.log({"reward/overall": 0.75}, step=2)
    tracker.log_generations([("1+1?", "2", 1.0)], step=2)
    tracker.finish()
    assert _lines(tmp_path / "metrics.jsonl") == [
        {"step": 1, "reward/overall": 0.5, "actor/kl_loss": 0.01}, {"step": 2, "reward/overall": 0.75}]
    assert _lines(tmp_path / "generations.jsonl") == [{"step": 2, "prompt": "1+1?", "response": "2", "score": 1.0}]


def test_resume_drops_lines_after_the_resume_step_so_each_step_appears_once(tmp_path):
    first = Tracker(["file"], tmp_path, "p", "e", config={})
    for step in range(1, 6):  # crashed after logging step 5; last checkpoint was step 3
        first.log({"reward/overall": float(step)}, step=step)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "reward/ov')  # a line torn by the crash
    resumed = Tracker(["file"], tmp_path, "p", "e", config={}, resume_step=3)
    for step in (4, 5):
        resumed.log({"reward/overall": 10.0 * step}, step=step)
    assert [(r["step"], r["reward/overall"]) for r in _lines(tmp_path / "metrics.jsonl")] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0)]


def test_fresh_run_in_an_old_directory_starts_an_empty_metrics_file(tmp_path):
    Tracker(["file"], tmp_path, "p", "e", config={}).log({"reward/overall": 1.0}, step=1)
    Tracker(["file"], tmp_path, "p", "e", config={}, resume_step=0).log({"reward/overall": 2.0}, step=1)
    assert _lines(tmp_path / "metrics.jsonl") == [{"step": 1, "reward/overall": 2.0}]


def test_log_converts_tensor_scalars_and_rejects_non_numbers(tmp_path):
    import torch

    tracker = Tracker(["file"], tmp_path, "p", "e", config={})
    tracker.log({"actor/lr": torch.tensor(0.5)}, step=1)
    assert _lines(tmp_path / "metrics.jsonl") == [{"step": 1, "actor/lr": 0.5}]
    with pytest.raises(TypeError, match="'actor/note'.*not a number"):
        tracker.log({"actor/note": "high"}, step=2)


def test_unknown_logger_name_lists_the_choices(tmp_path):
    choices = r"\['console', 'file', 'mlflow', 'swanlab', 'tensorboard', 'wandb'\]"
    with pytest.raises(ValueError, match=r"\['neptune'\] unknown; choose from " + choices):
        Tracker(["console", "neptune"], tmp_path, "p", "e", config={})


def test_metric_outside_the_groups_is_warned_about_once(tmp_path, caplog):
    tracker = Tracker(["file"], tmp_path, "p", "e", config={})
    with caplog.at_level(logging.WARNING, logger="longrl.logging.trackers"):
        tracker.log({"loss": 1.0}, step=1)
        tracker.log({"loss": 2.0}, step=2)
    assert len([r for r in caplog.records if "'loss' is outside the groups" in r.getMessage()]) == 1


def test_wandb_offline_run_writes_its_files_under_save_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = Tracker(["wandb"], tmp_path, "proj", "exp", config={"algorithm": {"adv_estimator": "grpo"}})
    tracker.log({"reward/overall": 0.5}, step=1)
    tracker.log_generations([("q", "a", 1.0)], step=1)
    tracker.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))


def test_tensorboard_writes_an_event_file(tmp_path):
    tracker = Tracker(["tensorboard"], tmp_path, "p", "e", config={})
    tracker.log({"reward/overall": 0.5}, step=1)
    tracker.log_generations([("q", "a", 1.0)], step=1)
    tracker.finish()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
