"""Metrics reduction, loggers (console, metrics.jsonl, wandb, tensorboard) and training-curve plots."""

from longrl.logging.trackers import GROUPS, Tracker, reduce_metrics

__all__ = ["GROUPS", "Tracker", "reduce_metrics"]
