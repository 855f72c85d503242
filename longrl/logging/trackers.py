"""Driver-side metrics: reduce the workers' dicts once, then fan out to console/file/wandb/tensorboard.

Metric names are `<group>/<name>` from `GROUPS` (STYLE.md rule 7). Workers return plain dicts; the
driver calls `reduce_metrics` and then `Tracker.log` once per step.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from longrl.config import ConfigError

logger = logging.getLogger(__name__)

GROUPS = ("actor", "critic", "reward", "rollout", "response_length", "video", "image", "perf", "timing_s", "val",
          "trainer")
METRICS_FILE = "metrics.jsonl"
GENERATIONS_FILE = "generations.jsonl"


def reduce_metrics(per_worker: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each key over the dicts that have it (workers may report different keys)."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for metrics in per_worker:
        for key, value in metrics.items():
            sums[key] += float(value)
            counts[key] += 1
    return {key: sums[key] / counts[key] for key in sums}


def format_console_line(metrics: dict[str, float], step: int) -> str:
    """`step 3 | actor: kl_loss=0.01235 pg_loss=-0.5 | reward: overall=0.75` (4 significant digits)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key in sorted(metrics):
        group, _, name = key.rpartition("/")
        groups[group].append(f"{name}={metrics[key]:.4g}")
    parts = [f"step {step}"]
    for group in sorted(groups):
        parts.append(f"{group}: " + " ".join(groups[group]) if group else " ".join(groups[group]))
    return " | ".join(parts)


def _step_of(line: str) -> int | None:
    """The step of one jsonl line; None for a blank line or one torn by a crash mid-write."""
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _truncate_jsonl(path: Path, resume_step: int) -> None:
    """Drop lines with step > resume_step (left by a crashed run) so each step appears once.

    resume_step=0 is a fresh run: every old line belongs to a discarded run and goes.
    """
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    steps = [_step_of(line) for line in lines]
    kept = [line for line, step in zip(lines, steps) if resume_step > 0 and step is not None and step <= resume_step]
    if len(kept) == len(lines):
        return
    logger.warning("%s: dropped %d lines after step %d (left by an earlier run)", path, len(lines) - len(kept),
                   resume_step)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


class _Console:
    def __init__(self, **_: Any) -> None:
        pass

    def log(self, metrics: dict[str, float], step: int) -> None:
        logger.info(format_console_line(metrics, step))

    def log_generations(self, samples: list[tuple[str, str, float]], step: int) -> None:
        for prompt, response, score in samples:
            logger.info("step %d generation\n[prompt] %s\n[response] %s\n[score] %.4g", step, prompt, response, score)

    def finish(self) -> None:
        pass


class _JsonlFile:
    """<save_dir>/metrics.jsonl (one line per step) and generations.jsonl (one line per sample)."""

    def __init__(self, save_dir: Path, resume_step: int, **_: Any) -> None:
        self.metrics_path = save_dir / METRICS_FILE
        self.generations_path = save_dir / GENERATIONS_FILE
        _truncate_jsonl(self.metrics_path, resume_step)
        _truncate_jsonl(self.generations_path, resume_step)

    def rewind(self, step: int) -> None:
        """Forget the lines after `step` (the driver went back to the checkpoint of that step)."""
        _truncate_jsonl(self.metrics_path, step)
        _truncate_jsonl(self.generations_path, step)

    @staticmethod
    def _append(path: Path, rows: list[dict[str, Any]]) -> None:
        with path.open("a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._append(self.metrics_path, [{"step": step, **metrics}])

    def log_generations(self, samples: list[tuple[str, str, float]], step: int) -> None:
        rows = [{"step": step, "prompt": p, "response": r, "score": s} for p, r, s in samples]
        self._append(self.generations_path, rows)

    def finish(self) -> None:
        pass


class _Wandb:
    def __init__(self, save_dir: Path, project: str, experiment: str, config: dict, **_: Any) -> None:
        import wandb

        # No network by default: a run only goes online when the user gave a key or chose a mode.
        mode = None if "WANDB_MODE" in os.environ else ("online" if "WANDB_API_KEY" in os.environ else "offline")
        self.wandb = wandb
        self.run = wandb.init(project=project, name=experiment, config=config, dir=str(save_dir), mode=mode)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_generations(self, samples: list[tuple[str, str, float]], step: int) -> None:
        table = self.wandb.Table(columns=["step", "prompt", "response", "score"],
                                 data=[[step, p, r, s] for p, r, s in samples])
        self.run.log({"val/generations": table}, step=step)

    def finish(self) -> None:
        self.run.finish()


class _TensorBoard:
    def __init__(self, save_dir: Path, **_: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(save_dir / "tensorboard"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def log_generations(self, samples: list[tuple[str, str, float]], step: int) -> None:
        text = "\n\n".join(f"**prompt** {p}\n\n**response** {r}\n\n**score** {s:.4g}" for p, r, s in samples)
        self.writer.add_text("val/generations", text, global_step=step)
        self.writer.flush()

    def finish(self) -> None:
        self.writer.close()


class _SwanLab:
    def __init__(self, save_dir: Path, project: str, experiment: str, config: dict, **_: Any) -> None:
        import swanlab

        # Like wandb: local files unless the user gave a key or chose a mode.
        mode = None if "SWANLAB_MODE" in os.environ else ("online" if "SWANLAB_API_KEY" in os.environ else "offline")
        self.swanlab = swanlab
        swanlab.init(project=project, name=experiment, config=config, log_dir=str(save_dir / "swanlog"), mode=mode)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.swanlab.log(metrics, step=step)

    def log_generations(self, samples: list[tuple[str, str, float]], step: int) -> None:
        text = "\n\n".join(f"prompt: {p}\nresponse: {r}\nscore: {s:.4g}" for p, r, s in samples)
        self.swanlab.log({"val/generations": self.swanlab.Text(text)}, step=step)

    def finish(self) -> None:
        self.swanlab.finish()


class _MLflow:
    def __init__(self, save_dir: Path, project: str, experiment: str, config: dict, **_: Any) -> None:
        import mlflow

        self.mlflow = mlflow  # the store is mlflow's own choice: MLFLOW_TRACKING_URI, else its default
        mlflow.set_experiment(project)
        mlflow.start_run(run_name=experiment)
        mlflow.log_dict(config, "config.json")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def log_generations(self, samples: list[tuple[str, str, float]], step: int) -> None:
        rows = [{"step": step, "prompt": p, "response": r, "score": s} for p, r, s in samples]
        self.mlflow.log_dict(rows, f"generations/step_{step}.json")

    def finish(self) -> None:
        self.mlflow.end_run()


BACKENDS = {"console": _Console, "file": _JsonlFile, "wandb": _Wandb, "tensorboard": _TensorBoard,
            "swanlab": _SwanLab, "mlflow": _MLflow}


class Tracker:
    """Sends each step's metrics to every backend named in `trainer.logger`."""

    def __init__(self, loggers: list[str], save_dir: str | Path, project: str, experiment: str,
                 config: dict, resume_step: int = 0) -> None:
        unknown = [name for name in loggers if name not in BACKENDS]
        if unknown:
            raise ConfigError(f"trainer.logger={loggers!r}: {unknown} unknown; choose from {sorted(BACKENDS)}")
        self.save_dir = Path(save_dir)
        self.save_dir.mkdir(parents=True, exist_ok=True)
        self.backends = [BACKENDS[name](save_dir=self.save_dir, project=project, experiment=experiment,
                                        config=config, resume_step=resume_step) for name in loggers]
        self._warned: set[str] = set()

    def _check_names(self, metrics: dict[str, float]) -> None:
        for key in metrics:
            if key.split("/", 1)[0] not in GROUPS and key not in self._warned:
                self._warned.add(key)
                logger.warning("metric %r is outside the groups %s; name it <group>/<name> (STYLE.md rule 7)",
                               key, list(GROUPS))

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record one step's scalars (numbers, 0-d tensors or numpy scalars) in every backend."""
        clean = {}
        for key, value in metrics.items():
            try:
                clean[key] = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"metric {key!r}={value!r} at step {step} is not a number; log scalars only") from None
            if not math.isfinite(clean[key]):
                logger.warning("metric %r is %s at step %d", key, clean[key], step)
        self._check_names(clean)
        for backend in self.backends:
            backend.log(clean, step)

    def rewind(self, step: int) -> None:
        """After a restart from the checkpoint of `step`: drop the file lines of later steps, which are run again.
        (wandb and tensorboard keep them; their plots show the re-run steps twice.)"""
        for backend in self.backends:
            if isinstance(backend, _JsonlFile):
                backend.rewind(step)

    def log_generations(self, samples: list[tuple[str, str, float]], step: int) -> None:
        """Record (prompt, response, score) samples, e.g. a few validation generations."""
        samples = [(str(p), str(r), float(s)) for p, r, s in samples]
        for backend in self.backends:
            backend.log_generations(samples, step)

    def finish(self) -> None:
        """Flush and close every backend (ends the wandb run)."""
        for backend in self.backends:
            backend.finish()
