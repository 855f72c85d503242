"""Rollout engines behind one interface, chosen by `worker.rollout.name`."""

from longrl.workers.rollout import hf, vllm  # noqa: F401  (each registers its engine)
from longrl.workers.rollout.base import ROLLOUT_ENGINES, RolloutEngine, Sample, SamplingSpec, rollout_engine

__all__ = ["ROLLOUT_ENGINES", "RolloutEngine", "Sample", "SamplingSpec", "rollout_engine"]
