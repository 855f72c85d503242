"""The rollout engine interface: load weights, sample n responses per prompt with their log-probs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Protocol

import torch

from longrl.config import RolloutConfig
from longrl.registry import Registry


@dataclasses.dataclass(frozen=True)
class SamplingSpec:
    """What one generate call samples (training and validation differ)."""

    n: int
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    ignore_eos: bool = False

    @staticmethod
    def from_config(cfg: RolloutConfig, max_tokens: int, **overrides: object) -> SamplingSpec:
        values = dict(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                      max_tokens=max_tokens, ignore_eos=cfg.ignore_eos)
        values.update(overrides)
        return SamplingSpec(**values)


@dataclasses.dataclass
class Sample:
    """One generated response: its token ids and the engine's log-prob of each."""

    token_ids: list[int]
    log_probs: list[float]


class RolloutEngine(Protocol):
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the engine's weights (full, unsharded tensors, Hugging Face names)."""

    def generate(self, prompts: list[list[int]], spec: SamplingSpec, seed: int) -> list[list[Sample]]:
        """`spec.n` samples per prompt, reproducible for a given seed.

        Engines that take videos (vLLM) accept `media=`: per prompt, its VideoInputs
        (longrl.models.vision_cache) in placeholder order, as embeddings or frames.
        """


ROLLOUT_ENGINES: Registry = Registry("worker.rollout.name")
"""Engine classes `(model_path, RolloutConfig, max_model_len)`; each module registers its own on import
(`longrl/workers/rollout/__init__.py` imports them all)."""


def rollout_engine(name: str, model_path: str, cfg: RolloutConfig, max_model_len: int) -> RolloutEngine:
    """Build the engine registered as `name`."""
    return ROLLOUT_ENGINES[name](model_path, cfg, max_model_len)
