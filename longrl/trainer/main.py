"""CLI entry: `python3 -m longrl.trainer.main config=configs/config.yaml key=value ...`."""

from __future__ import annotations

import json
import logging
import sys

from longrl.checkpoint import CheckpointSaveError
from longrl.config import ConfigError, load_config, to_dict
from longrl.controller.worker_group import ClusterResourceError, WorkerError
from longrl.rewards import RewardError
from longrl.trainer.faults import SkippedStepsError
from longrl.validation import validate


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    from longrl.trainer.ray_trainer import RayTrainer

    try:
        cfg = load_config(args)
        hf, _ = _text_config(cfg.worker.actor.model.model_path)
        validate(cfg, model_max_positions=_model_max_positions(cfg.worker.actor.model.model_path),
                 model_heads=_heads(hf))
        print("effective config:\n" + json.dumps(to_dict(cfg), indent=2), flush=True)
        trainer = RayTrainer(cfg)  # reads the data and the reward function: their errors come before any worker
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        trainer.fit()
    # the message says what failed, and where the run can resume; no driver traceback needed
    except (ClusterResourceError, WorkerError, CheckpointSaveError, RewardError, SkippedStepsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        trainer.shutdown()
    return 0


def _text_config(model_path: str) -> tuple[dict, bool]:
    """The (text) model's config.json entries of a local model directory, and whether it has a vision tower;
    empty if it cannot be read (validate names a missing directory itself)."""
    try:
        with open(f"{model_path}/config.json") as f:
            hf = json.load(f)
    except OSError:
        return {}, False
    return hf.get("text_config", hf), "vision_config" in hf


def _heads(hf: dict) -> tuple[int, int] | None:
    """(num_attention_heads, num_key_value_heads) of a text config; KV heads default to the heads (no GQA)."""
    if "num_attention_heads" not in hf:
        return None
    return hf["num_attention_heads"], hf.get("num_key_value_heads") or hf["num_attention_heads"]


def _model_max_positions(model_path: str) -> int | None:
    """The position limit that prompt + response tokens must respect; None where it cannot be read, or for
    vision-language models, where M-RoPE gives a video far fewer positions than it has tokens."""
    hf, is_multimodal = _text_config(model_path)
    return None if is_multimodal else hf.get("max_position_embeddings")


if __name__ == "__main__":
    sys.exit(main())
