"""The one place a `worker.*.model.lora` config becomes a peft LoraConfig (language and diffusion models alike)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from longrl.config import LoraConfig

if TYPE_CHECKING:
    import peft


def _modules(value: str | list[str] | None) -> str | list[str] | None:
    # peft reads a string as one regex over the full module name; a comma-separated list of names (EasyR1's form on
    # the command line) is meant as names, so it becomes a list. 'all-linear' stays peft's shorthand.
    if isinstance(value, str) and value != "all-linear":
        return [name.strip() for name in value.split(",") if name.strip()]
    return value


def lora_config(cfg: LoraConfig) -> peft.LoraConfig | None:
    """The peft LoraConfig of `cfg` (worker.actor.model.lora), or None when cfg.rank is 0 (no LoRA)."""
    if cfg.rank == 0:
        return None
    import peft

    return peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=_modules(cfg.target_modules),
                           exclude_modules=_modules(cfg.exclude_modules), init_lora_weights=True)
