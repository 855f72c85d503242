"""The rollout engine interface: load weights, sample n responses per prompt with their log-probs."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import torch

from longrl.config import ConfigError, RolloutConfig, coerce
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

    @staticmethod
    def for_validation(cfg: RolloutConfig, max_tokens: int) -> SamplingSpec:
        """The training spec with `cfg.val_override_config` applied; a ConfigError naming the key for an unknown
        entry or a bad value (validate calls this before any worker starts, not at the first validation)."""
        key = "worker.rollout.val_override_config"
        names = [f.name for f in dataclasses.fields(SamplingSpec) if f.name != "max_tokens"]
        unknown = sorted(set(cfg.val_override_config) - set(names))
        if unknown:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{key} has unknown entries {unknown}{hint}; it may set {names}")
        overrides = {name: coerce(value, typing.get_type_hints(RolloutConfig)[name], f"{key}.{name}")
                     for name, value in cfg.val_override_config.items()}
        spec = SamplingSpec.from_config(cfg, max_tokens, **overrides)
        if spec.n < 1 or spec.temperature < 0 or not 0 < spec.top_p <= 1:
            raise ConfigError(f"{key}={cfg.val_override_config}: validation needs n >= 1, temperature >= 0 and "
                              f"0 < top_p <= 1 (got n={spec.n}, temperature={spec.temperature}, top_p={spec.top_p})")
        return spec


@dataclasses.dataclass
class Sample:
    """One generated response: its token ids and the engine's log-prob of each.

    The trainer's log-probs are the full softmax at the sampling temperature. The hf engine returns the
    same; vLLM returns them after top-p/top-k renormalisation, so the two agree only when top_p=1 and
    top_k=-1 (validate refuses worker.actor.tis_cap otherwise; the trainer logs rollout/log_prob_diff_*).
    """

    token_ids: list[int]
    log_probs: list[float]


class RolloutEngine(Protocol):
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the engine's weights (full, unsharded tensors, Hugging Face names), reading them as a stream
        (each tensor may be freed once read); then drop every cache computed with the old weights."""

    def sleep(self) -> None:
        """Free the device memory the engine holds (weights offloaded, KV cache dropped); no-op on CPU."""

    def wake_up(self, tags: list[str]) -> None:
        """Bring back the memory of `tags` ("weights", then "kv_cache"); no-op on CPU."""

    def generate(self, prompts: list[list[int]], spec: SamplingSpec, seed: int) -> list[list[Sample]]:
        """`spec.n` samples per prompt, reproducible for a given seed.

        Engines that take videos (vLLM) accept `media=`: per prompt, its MediaInputs
        (longrl.models.vision_cache) in placeholder order, as embeddings or frames.
        """


ROLLOUT_ENGINES: Registry = Registry("worker.rollout.name")
"""Engine classes `(model_path, RolloutConfig, max_model_len)`; each module registers its own on import
(`longrl/workers/rollout/__init__.py` imports them all)."""


InlinePrompt = Callable[[Sequence[int], Sequence[object]], dict]
"""(prompt ids, its MediaInputs) -> an engine request whose media are prompt embeddings (an adapter's inline_prompt)."""


def rollout_engine(name: str, model_path: str, cfg: RolloutConfig, max_model_len: int,
                   inline: InlinePrompt | None = None) -> RolloutEngine:
    """Build the engine registered as `name`; `inline`: the adapter's request builder for a model whose media
    reach the engine as prompt embeddings (VILA), which the engine must then accept."""
    if inline is None:
        return ROLLOUT_ENGINES[name](model_path, cfg, max_model_len)
    return ROLLOUT_ENGINES[name](model_path, cfg, max_model_len, inline=inline)
