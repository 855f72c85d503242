"""Model adapters: what differs between model families, behind one registry keyed by model_type.

Vision-language adapters live in their own modules and register themselves when imported;
`longrl/models/__init__.py` imports each, so any import from longrl.models sees all of them.

An adapter loads the Hugging Face model and builds its forward inputs from per-sample token
lists. Text models need nothing more; vision-language adapters add media inputs and
position ids (M-RoPE) in their own modules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from longrl.parallel.device import device_type
from longrl.protocol import Batch
from longrl.registry import Registry


def sequences_of(batch: Batch) -> list[list[int]]:
    """prompt ids + the valid response ids of each sample."""
    lengths = batch["response_mask"].sum(-1).tolist()
    return [list(p) + r[:n] for p, r, n in zip(batch["prompt_ids"], batch["responses"].tolist(), lengths)]


class TextAdapter:
    """Causal language models (Qwen2, Qwen2.5, Qwen3, Llama, ...): token ids in, logits out."""

    auto_class = "AutoModelForCausalLM"
    media: tuple[str, ...] = ()
    """The media kinds ("image", "video") the adapter feeds the model; data with others is refused at validation."""
    fsdp_forward_methods: tuple[str, ...] = ()
    """Methods besides `forward` that run the root module's parameters (FSDP must gather them)."""
    hears_audio = False
    """Whether each video brings its own audio track (omni models)."""
    checkpoint_prefix = ""
    """Where the trained module's weights sit in the checkpoint's layout (which the rollout engine and a merged
    checkpoint use): prepended to its weight names."""
    inline_media = False
    """Whether the rollout engine runs the language model alone and gets media as prompt embeddings
    (`inline_prompt` builds each request) instead of encoding them with a multimodal model of its own."""

    def load_config(self, path: str | Path, trust_remote_code: bool = False) -> object:
        """The checkpoint's config as the trainer reads it (model_type, vision_config, token ids, ...)."""
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)

    def tokenizer_path(self, path: str | Path) -> str:
        """Where the tokenizer of the checkpoint at `path` lives."""
        return str(path)

    def rollout_model_path(self, path: str | Path) -> str:
        """The directory the rollout engine loads for the checkpoint at `path`."""
        return str(path)

    def rollout_weights(self, named: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
        """The trained model's (name, tensor) pairs as the rollout engine names them."""
        return ((self.checkpoint_prefix + name, t) for name, t in named)

    def merged_model(self, hf_dir: Path, weights: dict[str, torch.Tensor]) -> torch.nn.Module | None:
        """A family's own model for the checkpoint merger (`hf_dir`: the metadata saved beside the shards,
        `weights`: the trained tensors by name); None: the transformers class config.json names."""
        return None

    def media_config(self, hf_config: object) -> object:
        """The config that holds `vision_config` (the checkpoint's own for vision-language models)."""
        return hf_config

    def load(self, path: str | Path, dtype: torch.dtype, trust_remote_code: bool = False,
             empty: bool = False) -> torch.nn.Module:
        """The checkpoint at `path`; with `empty`, the same architecture on the meta device without weights
        (fsdp.enable_rank0_init: the ranks that do not read the checkpoint)."""
        import transformers

        model = load_pretrained(getattr(transformers, self.auto_class), path, empty, dtype=dtype,
                                attn_implementation=_attention(), trust_remote_code=trust_remote_code)
        if self.media:
            media_from_prompt_placeholders(model)
        return model

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

    def model_inputs(self, model: torch.nn.Module, batch: Batch, pad_id: int,
                     device: torch.device) -> tuple[dict[str, object], torch.Tensor]:
        """Forward inputs for the prompt+response rows of `batch`, and each row's prompt length in them ([b])."""
        lengths = torch.tensor([len(p) for p in batch["prompt_ids"]])
        return self.forward_inputs(sequences_of(batch), pad_id, device), lengths

    def vision_tower(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """The vision encoder (None for text models)."""
        return None



def load_pretrained(cls: type, path: str | Path, empty: bool = False, **kwargs: object) -> torch.nn.Module:
    """`cls.from_pretrained(path, **kwargs)`, or with `empty` the model of the same config built on the meta
    device (no weights read, no memory used: FSDP2 shards it and the weights arrive from rank 0)."""
    if not empty:
        return cls.from_pretrained(str(path), **kwargs)
    from transformers import AutoConfig

    trust = bool(kwargs.pop("trust_remote_code", False))
    config_kwargs = {k: kwargs.pop(k) for k in ("num_labels",) if k in kwargs}  # config fields, as from_pretrained
    config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust, **config_kwargs)
    with torch.device("meta"):
        if hasattr(cls, "from_config"):  # an auto class
            return cls.from_config(config, trust_remote_code=trust, **kwargs)
        return cls._from_config(config, **kwargs)


PLACEHOLDER_IDS = "placeholder_ids"
"""The forward input (beside input_ids, same shape) a vision-language adapter adds when a response holds a media
token id: the rows' ids with every response token padded, where the model looks for its media placeholders."""


def response_media_as_text(ids: torch.Tensor, mask: torch.Tensor, prompt_lens: Sequence[int],
                           media_ids: Sequence[int], pad_id: int) -> torch.Tensor | None:
    """`ids` [b, L] with each row's response tokens (prompt_lens[i] up to the row's end) set to pad_id, the
    `PLACEHOLDER_IDS` input; None when no response holds one of `media_ids`, as nearly always.

    Why: a placeholder means "media here" only in a prompt, where vLLM expands it; one a policy samples into a
    response (a barely trained model can sample any token) is an ordinary token to vLLM, embedded as text, while
    transformers' vision-language forwards scatter media embeddings onto every position holding the id. Padding
    positions (mask 0) keep their ids: an adapter's masked padding video lies there."""
    starts = torch.as_tensor(list(prompt_lens), device=ids.device)
    response = (torch.arange(ids.shape[1], device=ids.device) >= starts[:, None]) & (mask == 1)
    if not bool((response & torch.isin(ids, torch.as_tensor(list(media_ids), device=ids.device))).any()):
        return None
    return ids.masked_fill(response, pad_id)


def media_from_prompt_placeholders(model: torch.nn.Module) -> None:
    """Let `model`'s forward take `placeholder_ids` (`response_media_as_text`) and find its media placeholders
    there instead of in input_ids, so that media ids sampled into a response stay text, as in vLLM.

    The module whose forward scatters the media embeddings (the first with transformers' `get_placeholder_mask`:
    Qwen2.5-VL's and Qwen3-VL's inner model, the Omni thinker itself) gets its mask from those ids; the model's
    forward sets them around each call. Packed rows (padding_free) pack `placeholder_ids` like input_ids."""
    owner = next((m for m in model.modules() if hasattr(m, "get_placeholder_mask")), None)
    if owner is None:
        raise TypeError(f"{type(model).__name__} has no get_placeholder_mask: the adapter cannot tell it where "
                        "its media placeholders are")
    forward, placeholder_mask = model.forward, owner.get_placeholder_mask
    current: list[torch.Tensor | None] = [None]

    def forward_with(*args: object, placeholder_ids: torch.Tensor | None = None, **kwargs: object) -> object:
        if placeholder_ids is not None and placeholder_ids.shape != kwargs["input_ids"].shape:
            raise ValueError(f"placeholder_ids {tuple(placeholder_ids.shape)} must have input_ids' shape "
                             f"{tuple(kwargs['input_ids'].shape)}")
        current[0] = placeholder_ids
        try:
            return forward(*args, **kwargs)
        finally:
            current[0] = None

    def masks(input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor, *args: object, **kwargs: object) -> object:
        return placeholder_mask(current[0] if current[0] is not None else input_ids, inputs_embeds, *args, **kwargs)

    model.forward = forward_with
    owner.get_placeholder_mask = masks


def _attention() -> str:
    return "flash_attention_2" if device_type() == "cuda" and _has_flash_attn() else "sdpa"


def _has_flash_attn() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


ADAPTERS: Registry = Registry("model_type (config.json of worker.actor.model.model_path)")
ADAPTERS.register("qwen2")(TextAdapter)
ADAPTERS.register("qwen3")(TextAdapter)
ADAPTERS.register("llama")(TextAdapter)


def adapter_for(model_type: str) -> TextAdapter:
    """The adapter instance for a Hugging Face `model_type`."""
    return ADAPTERS[model_type]()


def model_type_of(model_path: str | Path) -> str | None:
    """The model_type in `model_path`/config.json (None when the file is missing or has none)."""
    import json

    try:
        return json.loads(Path(model_path, "config.json").read_text()).get("model_type")
    except OSError:
        return None


def adapter_of(model_path: str | Path) -> TextAdapter:
    """The adapter of the checkpoint at `model_path` (the registry's error, listing the known types, when its
    model_type has none)."""
    return adapter_for(model_type_of(model_path))


def tokenizer_dir(model_path: str | Path, tokenizer_path: str | None = None) -> str:
    """`tokenizer_path` when set, else where the adapter of the checkpoint at `model_path` keeps its tokenizer
    (the checkpoint itself; VILA: its llm/)."""
    if tokenizer_path:
        return tokenizer_path
    model_type = model_type_of(model_path)
    return ADAPTERS[model_type]().tokenizer_path(model_path) if model_type in ADAPTERS else str(model_path)


def media_of(model_path: str | Path) -> tuple[str, ...] | None:
    """The media kinds the adapter of the model at `model_path` takes; None when its config.json is missing or
    its model_type has no adapter (validation reports those itself)."""
    import json

    try:
        model_type = json.loads(Path(model_path, "config.json").read_text()).get("model_type")
    except OSError:
        return None
    return ADAPTERS[model_type].media if model_type in ADAPTERS else None
