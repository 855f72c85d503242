"""CLI entry: `python3 -m longrl.trainer.main config=configs/config.yaml key=value ...`."""

from __future__ import annotations

import json
import logging
import sys

from longrl.config import ConfigError, load_config, to_dict, validate


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    from longrl.trainer.ray_trainer import RayTrainer

    try:
        cfg = load_config(args)
        validate(cfg, model_max_positions=_model_max_positions(cfg.worker.actor.model.model_path))
        print("effective config:\n" + json.dumps(to_dict(cfg), indent=2), flush=True)
        trainer = RayTrainer(cfg)  # reads the data and the reward function: their errors come before any worker
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        trainer.fit()
    finally:
        trainer.shutdown()
    return 0


def _model_max_positions(model_path: str) -> int | None:
    """max_position_embeddings of a local model directory, if it can be read."""
    try:
        with open(f"{model_path}/config.json") as f:
            hf = json.load(f)
    except OSError:
        return None
    hf = hf.get("text_config", hf)
    return hf.get("max_position_embeddings")


if __name__ == "__main__":
    sys.exit(main())
