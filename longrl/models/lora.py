"""LoRA adapters built from `worker.actor.model.lora` (EasyR1's keys), shared by every trained model kind.

Only the translation of the config into a peft `LoraConfig` lives here; how a worker injects the adapters,
disables them for the reference and merges them for the rollout engine is the worker's business.
"""

from __future__ import annotations

import importlib.util
import re
from typing import TYPE_CHECKING

from longrl.config import ConfigError, LoraConfig

if TYPE_CHECKING:  # peft is an optional extra (longrl[lora]): imported only where LoRA is on
    from peft import LoraConfig as PeftLoraConfig

ALL_LINEAR = "all-linear"


def target_modules(lora: LoraConfig, key: str = "worker.actor.model.lora") -> str | list[str]:
    """peft's target_modules for `lora.target_modules`: "all-linear", or the comma-separated module names."""
    text = lora.target_modules.strip()
    if text.lower() == ALL_LINEAR:
        return ALL_LINEAR
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"{key}.target_modules={lora.target_modules!r} names no module; give \"all-linear\" or "
                          f"comma-separated module names such as \"q_proj,v_proj\"")
    return names


def lora_problems(lora: LoraConfig, key: str = "worker.actor.model.lora") -> list[str]:
    """What is wrong with the LoRA section `key` (empty when it is usable or LoRA is off)."""
    problems = []
    if lora.rank < 0:
        problems.append(f"{key}.rank={lora.rank} must be >= 0 (0 turns LoRA off)")
    if lora.rank == 0:
        return problems
    if importlib.util.find_spec("peft") is None:
        problems.append(f"{key}.rank={lora.rank} turns LoRA on, which needs peft: the peft package is not installed; "
                        f"`pip install 'longrl[lora]'` (or set {key}.rank=0)")
    if lora.alpha <= 0:
        problems.append(f"{key}.alpha={lora.alpha} must be > 0 (adapters are scaled by alpha / rank)")
    try:
        target_modules(lora, key)
    except ConfigError as e:
        problems.append(str(e))
    if lora.exclude_modules is not None:
        try:  # peft matches a string against every module name with re.fullmatch
            re.compile(lora.exclude_modules)
        except re.error as e:
            problems.append(f"{key}.exclude_modules={lora.exclude_modules!r} is not a regular expression ({e}); "
                            f"give one that matches full module names, e.g. \".*visual.*\"")
    return problems


def lora_config(lora: LoraConfig, key: str = "worker.actor.model.lora") -> PeftLoraConfig | None:
    """The peft LoraConfig of the section `key`; None when LoRA is off (rank 0).

    No dropout and no trained biases: the adapted model must stay a deterministic function of base + adapter
    weights, so that merged weights (the rollout engine's, the merged export) give the same log-probs."""
    problems = lora_problems(lora, key)
    if problems:
        raise ConfigError("; ".join(problems))
    if lora.rank == 0:
        return None
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=target_modules(lora, key),
                          exclude_modules=lora.exclude_modules, lora_dropout=0.0, bias="none")
