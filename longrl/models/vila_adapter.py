"""VILA / NVILA / LongVILA adapter: the native model of longrl.models.vila behind the trainer's adapter interface.

A prompt holds ONE `<image>` or `<vila/video>` per item (what the chat template renders). The trainer's rows and
the rollout engine both see it expanded: per image or frame, `tokens` copies of the placeholder (filled with the
tower + projector embeddings, cached per step by the VisionCache) and then the "\\n" token (VILA's end token
after each frame), which stays a token: both the trainer and vLLM embed it, and all text, with the live
embedding table. vLLM runs the language model alone (`<root>/llm`) and takes such a prompt as prompt embeddings
mixed with token ids (`prompt_is_token_ids`), so a trained embedding table reaches the rollout; Long-RL instead
embeds the text once with the frozen initial table.

Positions are plain 1-D (Qwen2 RoPE). Under Ulysses SP each rank of a group holds an equal share of the media
tokens, to one token (models/ulysses_attention.py `media_order`, shared with the Qwen VL families).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from longrl.models.adapter import ADAPTERS, PLACEHOLDER_IDS, TextAdapter, response_media_as_text, sequences_of
from longrl.models.qwen2_5_vl import MEDIA_INPUTS, encode_in_shares, in_prompt_order
from longrl.models.vila import (VILAError, VILAForCausalLM, copy_non_weights, media_token_ids, read_config,
                                tokens_per_frame)
from longrl.models.vision_cache import MediaInput, SquareFrames
from longrl.parallel.ulysses import SPGroup
from longrl.protocol import Batch

logger = logging.getLogger(__name__)

LLM_PREFIX = "llm."


@dataclasses.dataclass(frozen=True)
class VILAVisionConfig:
    """The vision side as the VisionCache reads it: every image and frame at one square size."""

    square_frames: SquareFrames


@dataclasses.dataclass(frozen=True)
class VILAConfig:
    """What the trainer reads of a VILA checkpoint (other families' transformers config).

    text_config: the language model's (llm/config.json); newline_id: the token after each frame."""

    root: str
    model_type: str
    vila_config: dict
    text_config: object
    vision_config: VILAVisionConfig
    image_token_id: int
    video_token_id: int
    newline_id: int

    def save_pretrained(self, out: str) -> None:
        """The checkpoint's layout without weights: config.json as loaded, and llm/, vision_tower/,
        mm_projector/ with their configs, tokenizer and processor (the merger builds the model from them)."""
        copy_non_weights(Path(self.root), Path(out))
        Path(out, "config.json").write_text(json.dumps(self.vila_config, indent=2))


def load_vila_config(root: str | Path) -> VILAConfig:
    """The VILAConfig of a checkpoint of either form (VILAError naming the path when malformed)."""
    from transformers import AutoConfig, AutoTokenizer

    root = Path(root)
    config = read_config(root)
    tokenizer = AutoTokenizer.from_pretrained(str(root / "llm"))
    newline = tokenizer("\n", add_special_tokens=False).input_ids
    if len(newline) != 1:
        raise VILAError(f"{root}/llm: the tokenizer makes {len(newline)} tokens of '\\n'; VILA's per-frame "
                        f"separator must be one token")
    tower = json.loads((root / "vision_tower" / "config.json").read_text())
    processor_file = root / "vision_tower" / "preprocessor_config.json"
    processor = json.loads(processor_file.read_text()) if processor_file.is_file() else {}
    aspect = config.get("image_aspect_ratio", "resize")
    if aspect not in ("resize", "dynamic"):
        raise VILAError(f"{root}/config.json: image_aspect_ratio {aspect!r} is not supported")
    if aspect == "dynamic":  # NVILA-Lite: up to 12 tiles + a thumbnail, each with its own <image>
        logger.warning("%s: image_aspect_ratio=dynamic, but longrl resizes each image to one tile (dynamic tiling "
                       "is not built yet); videos are not affected", root)
    square = SquareFrames(size=tower["image_size"], patch_size=tower["patch_size"],
                          tokens=tokens_per_frame(root) - 1, separators=1,
                          image_mean=tuple(processor.get("image_mean", (0.5, 0.5, 0.5))),
                          image_std=tuple(processor.get("image_std", (0.5, 0.5, 0.5))))
    image_id, video_id = media_token_ids(root)
    return VILAConfig(str(root), config["model_type"], config, AutoConfig.from_pretrained(str(root / "llm")),
                      VILAVisionConfig(square), image_id, video_id, newline[0])


def expand(tokens: Sequence[int], config: VILAConfig, media: Sequence[MediaInput]) -> list[int]:
    """Each placeholder replaced by its item's block (`media` in prompt order): per image or frame, `tokens`
    copies of the placeholder, then the newline."""
    per_frame = config.vision_config.square_frames.tokens
    out: list[int] = []
    items = iter(media)
    placeholders = (config.image_token_id, config.video_token_id)
    for token in tokens:
        if token not in placeholders:
            out.append(token)
            continue
        item = next(items)
        out.extend(([token] * per_frame + [config.newline_id]) * item.grid_thw[0])
    return out


def fewer_frames(video: MediaInput, max_frames: int) -> MediaInput:
    """`video` (with embeddings) cut to `max_frames` frames at linspace(0, T-1, max_frames), rounded (Long-RL's
    _sample_video_embeds); unchanged when it has no more."""
    frames, grid_h, grid_w = video.grid_thw
    if frames <= max_frames:
        return video
    keep = torch.linspace(0, frames - 1, max_frames).round().long()
    per_frame = video.num_tokens // frames
    embeds = video.embeds.reshape(frames, per_frame, -1)[keep].reshape(max_frames * per_frame, -1)
    return dataclasses.replace(video, grid_thw=(max_frames, grid_h, grid_w), num_tokens=max_frames * per_frame,
                               separator_tokens=video.separator_tokens // frames * max_frames, embeds=embeds)


def _token_ids(config: VILAConfig) -> dict[str, int]:
    return {"image": config.image_token_id, "video": config.video_token_id}


class VILAAdapter(TextAdapter):
    """VILA: the language model's layers are FSDP units; tower and projector stay in the root unit."""

    media = ("image", "video")
    fsdp_forward_methods = ("encode_images",)
    inline_media = True

    def load_config(self, path: str | Path, trust_remote_code: bool = False) -> VILAConfig:
        return load_vila_config(path)

    def tokenizer_path(self, path: str | Path) -> str:
        return str(Path(path) / "llm")

    def rollout_model_path(self, path: str | Path) -> str:
        """vLLM runs the language model alone and takes the media as prompt embeddings."""
        return str(Path(path) / "llm")

    def rollout_weights(self, named: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
        """The language model's weights under llm/'s names (vLLM has no tower)."""
        return ((name[len(LLM_PREFIX):], t) for name, t in named if name.startswith(LLM_PREFIX))

    def merged_model(self, hf_dir: Path, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
        """The model of a merged checkpoint: the layout saved beside it with the trained weights, which
        save_pretrained writes back in VILA's layout."""
        model = VILAForCausalLM.from_config(hf_dir)
        result = model.load_state_dict(weights, strict=False, assign=True)
        model.llm.tie_weights()
        still_meta = [name for name, p in model.named_parameters() if p.is_meta]
        if result.unexpected_keys or still_meta:
            raise VILAError(f"the checkpoint does not match the VILA layout in {hf_dir}: unexpected keys "
                            f"{result.unexpected_keys[:10]}, missing {still_meta[:10]}")
        return model

    def load(self, path: str | Path, dtype: torch.dtype, trust_remote_code: bool = False,
             empty: bool = False) -> torch.nn.Module:
        if empty:
            raise VILAError(f"{path}: worker.actor.fsdp.enable_rank0_init is not supported for VILA models yet; "
                            f"set it to false")
        return VILAForCausalLM.from_pretrained(path, dtype)

    def decoder_layers(self, model: torch.nn.Module) -> Sequence[torch.nn.Module]:
        return list(model.llm.model.layers)

    def vision_tower(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """Tower and projector together: the cached embeddings are the projector's output, so
        worker.actor.model.freeze_vision_tower freezes both (a trainable projector would get no gradient
        from cached embeddings, and no optimizer state to checkpoint)."""
        return torch.nn.ModuleList([model.vision_tower, model.mm_projector])

    def media_token_ids(self, model_config: object) -> frozenset[int]:
        return frozenset({model_config.image_token_id, model_config.video_token_id})

    def strip_media(self, model_config: object, prompt_ids: Sequence[int]) -> list[int]:
        """The prompt without its placeholders."""
        return [t for t in prompt_ids if t not in self.media_token_ids(model_config)]

    def encode(self, model: torch.nn.Module, item: MediaInput, sp: SPGroup | None = None) -> torch.Tensor:
        """Tower + projector embeddings of an image or a video's frames, without gradients: [frames * tokens, D].
        With a sequence-parallel group each rank encodes an even share of the frames (each frame is encoded
        alone, so the shares are exact) and the group gathers them; every rank of the group must call it."""
        device = next(model.parameters()).device
        pixels = item.pixel_values

        def frames(start: int, end: int) -> torch.Tensor:
            with torch.no_grad():
                return model.encode_images(pixels[start:end].to(device)).flatten(0, 1)

        return encode_in_shares(frames, pixels.shape[0], item.num_tokens // pixels.shape[0], sp)

    def inline_prompt(self, model_config: VILAConfig, prompt: Sequence[int], media: Sequence[MediaInput],
                      max_frames: int | None = None) -> dict[str, object]:
        """The vLLM request of a prompt with its media as cached embeddings: the expanded token ids, the media
        embeddings at the placeholder positions (zeros elsewhere, unused) and `prompt_is_token_ids` True at
        every text position, which vLLM embeds with its own (synced) table. A video of more than `max_frames`
        frames (worker.rollout.max_frames_vllm) gets that many, uniformly sub-sampled."""
        media = in_prompt_order(prompt, _token_ids(model_config), media)
        if max_frames is not None:
            media = [fewer_frames(m, max_frames) if m.modality == "video" else m for m in media]
        ids = expand(prompt, model_config, media)
        ids_t = torch.tensor(ids)
        slots = (ids_t == model_config.image_token_id) | (ids_t == model_config.video_token_id)
        if not media:
            return {"prompt_token_ids": ids}
        rows = torch.cat([m.embeds for m in media])
        embeds = torch.zeros(len(ids), rows.shape[-1], dtype=rows.dtype)
        embeds[slots] = rows
        return {"prompt_embeds": embeds, "prompt_token_ids": ids, "prompt_is_token_ids": ~slots}

    def model_inputs(self, model: torch.nn.Module, batch: Batch, pad_id: int,
                     device: torch.device) -> tuple[dict[str, object], torch.Tensor]:
        """input_ids (placeholders expanded), attention_mask, position_ids [b, L], and the media as
        `media_embeds` [M, D] (cached) or `media_pixels` (per item [T, 3, S, S]); each row's expanded prompt length."""
        config = _config_of(model)
        rows = list(batch[MEDIA_INPUTS]) if MEDIA_INPUTS in batch else [[] for _ in range(len(batch))]
        sequences, prompt_lens, ordered = [], [], []
        for i, (seq, prompt, media) in enumerate(zip(sequences_of(batch), batch["prompt_ids"], rows)):
            try:
                media = in_prompt_order(prompt, _token_ids(config), media)
            except ValueError as exc:
                raise ValueError(f"row {i}: {exc}") from None
            # only the prompt's placeholders are media: a sampled response may hold those ids too (vLLM embeds
            # them as text), see response_media_as_text
            sequences.append(expand(prompt, config, media) + list(seq[len(prompt):]))
            prompt_lens.append(len(prompt) + sum(m.expanded_tokens - 1 for m in media))
            ordered.extend(media)
        inputs: dict[str, object] = self.forward_inputs(sequences, pad_id, device)
        placeholders = response_media_as_text(inputs["input_ids"], inputs["attention_mask"], prompt_lens,
                                              [config.image_token_id, config.video_token_id], pad_id)
        if placeholders is not None:
            inputs[PLACEHOLDER_IDS] = placeholders
        if ordered and all(m.embeds is not None for m in ordered):
            inputs["media_embeds"] = torch.cat([m.embeds for m in ordered]).to(device)
        elif ordered:
            inputs["media_pixels"] = [m.pixel_values.to(device) for m in ordered]
        return inputs, torch.tensor(prompt_lens)


def _config_of(model: torch.nn.Module) -> VILAConfig:
    """The VILAConfig of the checkpoint the model was loaded from (read once per process)."""
    return _cached_config(str(model.source))


@functools.lru_cache(maxsize=8)
def _cached_config(root: str) -> VILAConfig:
    return load_vila_config(root)


ADAPTERS.register("vila")(VILAAdapter)
ADAPTERS.register("llava_llama")(VILAAdapter)
