"""Model adapters: what differs between model families, behind one registry keyed by model_type.

An adapter loads the Hugging Face model and builds its forward inputs from per-sample token
lists. Text models need nothing more; vision-language adapters add media inputs and
position ids (M-RoPE) in their own modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from longrl.algorithms.registry import Registry
from longrl.parallel.device import device_type


class TextAdapter:
    """Causal language models (Qwen2, Qwen2.5, Llama, ...): token ids in, logits out."""

    auto_class = "AutoModelForCausalLM"

    def load(self, path: str | Path, dtype: torch.dtype, trust_remote_code: bool = False) -> torch.nn.Module:
        import transformers

        attn = "flash_attention_2" if device_type() == "cuda" and _has_flash_attn() else "sdpa"
        cls = getattr(transformers, self.auto_class)
        return cls.from_pretrained(str(path), dtype=dtype, attn_implementation=attn,
                                   trust_remote_code=trust_remote_code)

    def decoder_layers(self, model: torch.nn.Module) -> Sequence[torch.nn.Module]:
        """The blocks FSDP wraps one by one."""
        return list(model.model.layers)

    def forward_inputs(self, sequences: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Right-padded `input_ids`, `attention_mask`, `position_ids` ([b, L]) for full sequences."""
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, seq in enumerate(sequences):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        positions = torch.arange(width).expand(len(sequences), width)
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": positions.to(device)}


def _has_flash_attn() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


ADAPTERS: Registry = Registry("model_type (config.json of worker.actor.model.model_path)")
ADAPTERS.register("qwen2")(TextAdapter)
ADAPTERS.register("llama")(TextAdapter)


def adapter_for(model_type: str) -> TextAdapter:
    """The adapter instance for a Hugging Face `model_type`."""
    return ADAPTERS[model_type]()
