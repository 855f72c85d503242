"""CLI entry: `python3 -m longrl.trainer.main config=configs/config.yaml key=value ...`."""

from __future__ import annotations

import json
import logging
import sys

from longrl.checkpoint import CheckpointSaveError
from longrl.config import ConfigError, to_dict
from longrl.controller.worker_group import ClusterResourceError, WorkerError
from longrl.rewards import RewardError
from longrl.trainer.faults import SkippedStepsError
from longrl.trainer.preflight import checked_config


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    from longrl.trainer.ray_trainer import RayTrainer

    try:
        cfg = checked_config(args)
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


if __name__ == "__main__":
    sys.exit(main())
