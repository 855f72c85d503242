"""LoRA adapters built from `worker.actor.model.lora` (EasyR1's keys), shared by every trained model kind.

The adapters go into the model in place (peft's `inject_adapter_in_model`, no PeftModel wrapper), so the
model keeps its class, its decoder layers for FSDP and its methods; an adapted linear layer `x` holds its
frozen weight as `x.base_layer.weight` and the trained pair as `x.lora_A.default.weight` (rank x in) and
`x.lora_B.default.weight` (out x rank). The reference policy is the same model with its adapters disabled;
the rollout engine and merged exports get `x.weight + alpha / rank * B @ A` under the base model's names.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

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


ADAPTER = "default"  # peft's name of the one adapter
BASE, LORA_A, LORA_B = ".base_layer.", f".lora_A.{ADAPTER}.weight", f".lora_B.{ADAPTER}.weight"


def inject_lora(model: torch.nn.Module, lora: LoraConfig, key: str = "worker.actor.model.lora") -> torch.nn.Module:
    """`model` with adapters on the modules `lora` selects, in place; only adapter weights require grad.

    Seeded: every rank (each loads the model itself) draws the same lora_A init, as one process would."""
    from peft import inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    peft_cfg = lora_config(lora, key)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            inject_adapter_in_model(peft_cfg, model)
        except ValueError as e:  # peft: "Target modules ... not found in the base model"
            raise ConfigError(f"{key}.target_modules={lora.target_modules!r} (exclude_modules="
                              f"{lora.exclude_modules!r}): {e}") from None
    adapted = {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    # merging is B @ A on a Linear weight; embeddings and convolutions store theirs differently
    other = [f"{name} ({type(m.base_layer).__name__})" for name, m in adapted.items()
             if type(m.base_layer) is not torch.nn.Linear]
    if other:
        raise ConfigError(f"{key}.target_modules={lora.target_modules!r} reaches layers that are not linear: "
                          f"{other[:5]}; LoRA here adapts linear layers only; name linear modules or exclude these")
    return model


def adapted_modules(model: torch.nn.Module) -> list[str]:
    """Names of the modules that carry an adapter (empty without LoRA)."""
    from peft.tuners.lora import LoraLayer

    return [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]


@contextmanager
def adapters_disabled(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`model` computing as its base model inside the block (the reference policy); adapters back after it.
    peft's own toggle: it also stops the adapters' gradients while they are off. Nested blocks leave the
    adapters off until the outermost one ends."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer) and not m.disable_adapters]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def merged_weights(named: Iterable[tuple[str, torch.Tensor]], scale: float) -> Iterator[tuple[str, torch.Tensor]]:
    """The base model's tensors with each adapter merged in, under the base model's names (a stream: a layer's
    base weight waits only for its own lora_A and lora_B). `scale` is alpha / rank. Merged in fp32."""
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in named:
        if BASE in name:
            module, _, leaf = name.partition(BASE)
            if leaf != "weight":  # the base layer's bias: unchanged
                yield f"{module}.{leaf}", tensor
                continue
            part = "weight"
        elif name.endswith(LORA_A):
            module, part = name[: -len(LORA_A)], "A"
        elif name.endswith(LORA_B):
            module, part = name[: -len(LORA_B)], "B"
        else:
            yield name, tensor
            continue
        parts = pending.setdefault(module, {})
        parts[part] = tensor
        if len(parts) == 3:
            del pending[module]
            weight = parts["weight"]
            delta = parts["B"].float() @ parts["A"].float()
            yield f"{module}.weight", (weight.float() + scale * delta).to(weight.dtype)
    assert not pending, f"adapters without their base weight or lora_A/lora_B: {sorted(pending)[:5]}"
