"""Qwen2.5-Omni adapter (the thinker trains; talker and token2wav are never loaded): text, images, videos and each
video's own audio, interleaved as vLLM 0.32 interleaves them, with vLLM's M-RoPE positions.

Rows carry the prompt with ONE `<|VIDEO|>` per video (inside `<|vision_bos|>...<|vision_eos|>`) and ONE
`<|IMAGE|>` per image. With the video's audio (`use_audio_in_video`), vLLM replaces `<|VIDEO|>` by
`<|audio_bos|>`, then per chunk of `seconds_per_chunk` the chunk's video tokens followed by up to
tokens_per_second * seconds_per_chunk audio tokens, the audio left over, and `<|audio_eos|>`
(`omni_get_updates_use_audio_in_video`). The trainer builds the same sequence (`expand_omni_tokens`), feeds
the tower the same pixels and mel features, and uses the positions vLLM uses (`omni_mrope_positions`):
transformers' `get_rope_index` disagrees with vLLM on 643 of 664 positions of such a prompt (vLLM starts the
interleaved block at `<|audio_bos|>` and continues the text from the largest position), which would make the
PPO ratio wrong from the first update (shared/reference/missing-models-facts.md B.3b).

Long-RL's trainer fed no audio features to the log-prob forward (the audio placeholders kept their token
embeddings while the rollout heard the audio); here every pass gets `input_features`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from longrl.models.adapter import ADAPTERS, PLACEHOLDER_IDS, response_media_as_text, sequences_of
from longrl.models.qwen2_5_vl import MEDIA_INPUTS, Qwen2_5_VLAdapter, in_prompt_order, padded_mrope_rows
from longrl.models.vision_cache import MediaInput
from longrl.protocol import Batch

LAYOUT_SECOND_PER_GRID = 1.0
"""vLLM 0.32 lays out the interleaved chunks with `second_per_grid_ts` from the request's processor kwargs, which
the Omni processor does not accept; without it vLLM uses 1.0 (while its positions use the processor's real
value). The layout must match vLLM token for token, so it uses the same constant."""


def _chunks_by_time(t_index: Sequence[int], per_chunk: int) -> list[list[int]]:
    """vLLM's `split_list_into_ranges`: time indexes grouped by chunk (empty chunks kept)."""
    chunks: list[list[int]] = [[] for _ in range(max(t_index) // per_chunk + 1)]
    for t in t_index:
        chunks[t // per_chunk].append(t)
    return chunks


def interleaved_video_tokens(item: MediaInput, ids: dict[str, int], merge: int, tokens_per_second: float,
                             seconds_per_chunk: float) -> list[int]:
    """What vLLM puts in place of a video placeholder whose audio is used: audio_bos, chunks, audio_eos."""
    t, h, w = item.grid_thw
    per_chunk = int(tokens_per_second * seconds_per_chunk)
    t_index = (torch.arange(t) * LAYOUT_SECOND_PER_GRID * tokens_per_second).long().tolist()
    out, added = [ids["audio_bos"]], 0
    for chunk in _chunks_by_time(t_index, per_chunk):
        out += [ids["video"]] * (len(chunk) * h * w // merge ** 2)
        take = min(per_chunk, item.audio_tokens - added)
        out += [ids["audio"]] * take
        added += take
    out += [ids["audio"]] * (item.audio_tokens - added) + [ids["audio_eos"]]
    return out


def expand_omni_tokens(tokens: Sequence[int], ids: dict[str, int], media: Sequence[MediaInput], merge: int,
                       tokens_per_second: float, seconds_per_chunk: float) -> list[int]:
    """Each placeholder replaced as vLLM replaces it (`media` in prompt order)."""
    out: list[int] = []
    items = iter(media)
    placeholders = {ids["image"], ids["video"]}
    for token in tokens:
        if token not in placeholders:
            out.append(token)
            continue
        item = next(items)
        if item.audio_tokens:
            out += interleaved_video_tokens(item, ids, merge, tokens_per_second, seconds_per_chunk)
        else:
            out += [token] * item.num_tokens
    return out


def _interleaved_positions(start: int, grid: tuple[int, int, int], t_factor: float, audio_tokens: int,
                           per_chunk: int) -> np.ndarray:
    """vLLM's `_compute_interleaved_positions`: per time chunk the vision grid, then that chunk's audio run."""
    t, h, w = grid
    t_index = (np.arange(t) * t_factor).astype(np.int64)
    chunks: list[list[int]] = [[] for _ in range(int(t_index.max()) // per_chunk + 1)]
    for value in t_index:
        chunks[int(value) // per_chunk].append(int(value))
    parts, added, audio_start = [], 0, start
    for chunk in (c for c in chunks if c):
        n = len(chunk)
        parts.append(np.stack([np.repeat(np.array(chunk), h * w), np.tile(np.arange(h).reshape(1, -1, 1), (n, 1, w)).ravel(),
                               np.tile(np.arange(w).reshape(1, 1, -1), (n, h, 1)).ravel()]) + start)
        take = min(per_chunk, audio_tokens - added)
        if take > 0:
            parts.append(np.broadcast_to(np.arange(take), (3, take)) + audio_start)
            audio_start, added = audio_start + take, added + take
    if added < audio_tokens:
        parts.append(np.broadcast_to(np.arange(audio_tokens - added), (3, audio_tokens - added)) + audio_start)
    return np.concatenate(parts, axis=1)


def omni_mrope_positions(tokens: Sequence[int], ids: dict[str, int], media: Sequence[MediaInput], merge: int,
                         tokens_per_second: float, seconds_per_chunk: float) -> torch.Tensor:
    """vLLM's `Qwen2_5OmniThinkerForConditionalGeneration.get_mrope_input_positions`, int64 [3, len(tokens)], of an
    expanded sequence (`media` in prompt order).

    An item starts at its first placeholder token (for a video with audio: at `<|audio_bos|>`); the text before
    it continues from the largest position so far + 1. A video with audio gets, per time chunk, its vision grid
    (time index * second_per_grid * tokens_per_second) then its audio run counting on from the item's start;
    the item covers vision + audio tokens from its start, so its last audio token and `<|audio_eos|>` are
    counted as text (what vLLM does, not what transformers does).
    """
    tokens = list(tokens)
    per_chunk = int(tokens_per_second * seconds_per_chunk)
    parts: list[np.ndarray] = []
    covered, cursor = 0, 0

    def next_start() -> int:
        return int(parts[-1].max()) + 1 if parts else 0

    for item in media:
        first = ids["audio_bos"] if item.audio_tokens else ids[item.modality]
        offset = tokens.index(first, cursor)
        if offset > covered:
            parts.append(np.broadcast_to(np.arange(offset - covered), (3, offset - covered)) + next_start())
        start = next_start()
        t, h, w = item.grid_thw[0], item.grid_thw[1] // merge, item.grid_thw[2] // merge
        t_factor = float(item.second_per_grid_ts) * tokens_per_second if item.modality == "video" else tokens_per_second
        if item.audio_tokens:
            parts.append(_interleaved_positions(start, (t, h, w), t_factor, item.audio_tokens, per_chunk))
            covered = offset + t * h * w + item.audio_tokens
            cursor = offset + item.expanded_tokens
        else:
            grid = np.indices((t, h, w))
            if t_factor != 1.0:
                grid[0] = (grid[0] * t_factor).astype(np.int64)
            parts.append(grid.reshape(3, -1) + start)
            covered = cursor = offset + t * h * w
        if any(tok not in (ids["video"], ids["audio"], ids["image"], ids["audio_bos"], ids["audio_eos"])
               for tok in tokens[offset:cursor]) or cursor > len(tokens):
            raise ValueError(f"{item.modality} {item.path}: expected {item.expanded_tokens} media tokens at {offset}")
    if covered < len(tokens):
        parts.append(np.broadcast_to(np.arange(len(tokens) - covered), (3, len(tokens) - covered)) + next_start())
    return torch.from_numpy(np.concatenate(parts, axis=1).astype(np.int64))


def token_ids(thinker_config: object) -> dict[str, int]:
    """The thinker's media token ids by role."""
    c = thinker_config
    return {"image": c.image_token_id, "video": c.video_token_id, "audio": c.audio_token_id,
            "audio_bos": c.audio_start_token_id, "audio_eos": c.audio_end_token_id,
            "vision_bos": c.vision_start_token_id, "vision_eos": c.vision_end_token_id}


class Qwen2_5OmniAdapter(Qwen2_5_VLAdapter):
    """Qwen2.5-Omni: the thinker (`Qwen2_5OmniThinkerForConditionalGeneration`) loaded from the full Omni
    checkpoint (its `thinker.` prefix is stripped by the class); text layers are FSDP units, the vision and
    audio towers stay in the root unit (see Qwen2_5_VLAdapter for why)."""

    auto_class = "Qwen2_5OmniThinkerForConditionalGeneration"
    fsdp_forward_methods = ()
    """None: the thinker's forward calls its own get_*_features on the root module, and a method registered
    with FSDP reshards the root's parameters when it returns, in the middle of that forward ("mixed torch.Tensor
    and DTensor" at the final norm, seen in the 2-worker run). The towers run only inside forward here (no
    embedding cache for omni models yet)."""
    hears_audio = True
    checkpoint_prefix = "thinker."
    """vLLM's Omni model maps `thinker.model.*` / `thinker.lm_head.*` / `thinker.visual.*` to its modules; the
    thinker's own names (`model.*`, ...) fail there ("no module or parameter named 'lm_head'")."""

    @staticmethod
    def thinker_config(hf_config: object) -> object:
        """The thinker's config within the checkpoint's (full Omni) config, or the config itself (a thinker's)."""
        return getattr(hf_config, "thinker_config", hf_config)

    def media_config(self, hf_config: object) -> object:
        return self.thinker_config(hf_config)

    def load(self, path: str, dtype: torch.dtype, trust_remote_code: bool = False,
             empty: bool = False) -> torch.nn.Module:
        model = super().load(path, dtype, trust_remote_code, empty)
        # transformers defines it but never uses it in a forward: it would get no gradient, so AdamW would keep no
        # state for it and a resumed optimizer (which has state for every trained parameter) would look for one
        model.audio_tower.audio_bos_eos_token.requires_grad_(False)
        model.forward = _keeping_logits(model.forward, model.lm_head)
        return model

    def decoder_layers(self, model: torch.nn.Module) -> Sequence[torch.nn.Module]:
        return list(model.model.layers)

    def vision_tower(self, model: torch.nn.Module) -> torch.nn.Module | None:
        return model.visual

    def strip_media(self, model_config: object, prompt_ids: Sequence[int]) -> list[int]:
        """The prompt without its image, video and audio parts (placeholders and their bos/eos tokens)."""
        drop = set(token_ids(self.thinker_config(model_config)).values())
        return [t for t in prompt_ids if t not in drop]

    def expand(self, model_config: object, prompt: Sequence[int], media: Sequence[MediaInput]) -> list[int]:
        """The prompt as vLLM expands it (`media` in prompt order), to check the engine's expansion against."""
        cfg = self.thinker_config(model_config)
        vision = cfg.vision_config
        return expand_omni_tokens(prompt, token_ids(cfg), media, vision.spatial_merge_size,
                                  _tokens_per_second(vision), cfg.seconds_per_chunk)

    def model_inputs(self, model: torch.nn.Module, batch: Batch, pad_id: int,
                     device: torch.device) -> tuple[dict[str, object], torch.Tensor]:
        """input_ids, attention_mask [b, L]; position_ids [3, b, L]; pixels of images and videos; the videos' audio
        as `input_features` [n, mel, frames] + `feature_attention_mask` [n, frames]; and each row's expanded
        prompt length."""
        cfg = model.config
        ids = token_ids(cfg)
        merge, tps = cfg.vision_config.spatial_merge_size, _tokens_per_second(cfg.vision_config)
        rows = list(batch[MEDIA_INPUTS]) if MEDIA_INPUTS in batch else [[] for _ in range(len(batch))]
        sequences, prompt_lens, positions, ordered = [], [], [], []
        for i, (seq, prompt, media) in enumerate(zip(sequences_of(batch), batch["prompt_ids"], rows)):
            try:
                media = in_prompt_order(prompt, {"image": ids["image"], "video": ids["video"]}, media)
            except ValueError as exc:
                raise ValueError(f"row {i}: {exc}") from None
            # only the prompt's placeholders are media: a sampled response may hold those ids too (vLLM embeds
            # them as text), see response_media_as_text
            expanded = expand_omni_tokens(prompt, ids, media, merge, tps, cfg.seconds_per_chunk) + list(seq[len(prompt):])
            sequences.append(expanded)
            prompt_lens.append(len(prompt) + sum(m.expanded_tokens - 1 for m in media))
            positions.append(omni_mrope_positions(expanded, ids, media, merge, tps, cfg.seconds_per_chunk))
            ordered.extend(media)
        input_ids, mask, pos = padded_mrope_rows(sequences, positions, pad_id)
        inputs: dict[str, object] = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device),
                                     "position_ids": pos.to(device)}
        placeholders = response_media_as_text(input_ids, mask, prompt_lens, list(ids.values()), pad_id)
        if placeholders is not None:
            inputs[PLACEHOLDER_IDS] = placeholders.to(device)
        inputs.update(_pixel_inputs(ordered, device))
        inputs.update(_audio_inputs([m for m in ordered if m.audio_tokens], device))
        return inputs, torch.tensor(prompt_lens)


def _keeping_logits(forward, head: torch.nn.Module):
    """The thinker's forward with `logits_to_keep` (positions whose logits are wanted), which transformers' Omni
    thinker lacks (it would pass it on to the text model and run the LM head everywhere): the head's input is cut
    to those positions, as other causal LMs do, so the log-prob passes skip the prompt's positions."""
    def with_keep(*args, logits_to_keep: int | torch.Tensor | None = None, **kwargs):
        handle = None
        if logits_to_keep is not None and not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            handle = head.register_forward_pre_hook(lambda module, inputs: (inputs[0][:, keep],))
        try:
            return forward(*args, **kwargs)
        finally:
            if handle is not None:
                handle.remove()

    return with_keep


def _tokens_per_second(vision_config: object) -> float:
    return getattr(vision_config, "tokens_per_second", 25)  # vLLM's default when the config lacks it


def _pixel_inputs(media: list[MediaInput], device: torch.device) -> dict[str, object]:
    if any(m.pixel_values is None for m in media):
        raise AssertionError("the Omni adapter takes images and videos as pixels")
    images = [m for m in media if m.modality == "image"]
    videos = [m for m in media if m.modality == "video"]
    inputs: dict[str, object] = {}
    if images:
        inputs.update(pixel_values=torch.cat([m.pixel_values for m in images]).to(device),
                      image_grid_thw=torch.tensor([m.grid_thw for m in images], device=device))
    if videos:
        inputs.update(pixel_values_videos=torch.cat([v.pixel_values for v in videos]).to(device),
                      video_grid_thw=torch.tensor([v.grid_thw for v in videos], device=device))
    return inputs


def _audio_inputs(items: list[MediaInput], device: torch.device) -> dict[str, object]:
    """The clips' mel features right-padded to the longest, with the mask that says which frames are real."""
    if not items:
        return {}
    frames = max(m.audio_features.shape[1] for m in items)
    features = torch.zeros((len(items), items[0].audio_features.shape[0], frames))
    mask = torch.zeros((len(items), frames), dtype=torch.long)
    for i, m in enumerate(items):
        features[i, :, : m.audio_features.shape[1]] = m.audio_features
        mask[i, : m.audio_features.shape[1]] = 1
    return {"input_features": features.to(device), "feature_attention_mask": mask.to(device)}


ADAPTERS.register("qwen2_5_omni")(Qwen2_5OmniAdapter)
