"""Qwen2.5-VL adapter: expanded image and video tokens, M-RoPE positions exactly as vLLM computes them,
media inputs.

Rows carry the prompt as the chat template renders it, with ONE `<|image_pad|>` per image and ONE
`<|video_pad|>` per video (what vLLM takes: it expands each placeholder itself). The trainer's forward
needs the expanded sequence, the 3-axis (time, height, width) rotary positions, and the media either as
pixels (the tower runs inside the forward) or as cached tower embeddings (VisionCache). An image is a
one-step video to the tower and to M-RoPE (grid (1, h, w), time index 0).

Positions follow vLLM's `Qwen2_5_VLForConditionalGeneration.get_mrope_input_positions`, not
transformers' `get_rope_index`: the two disagree on where the text after a video starts when
the video's temporal span exceeds its spatial one (vLLM: max vision position + 1;
transformers 5.19: start + max(h, w)). The rollout engine samples with vLLM's positions, so
the trainer must use the same ones or its log-probs are not those of the sampling policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from longrl.models.adapter import ADAPTERS, PLACEHOLDER_IDS, TextAdapter, response_media_as_text, sequences_of
from longrl.models.vision_cache import MediaInput
from longrl.parallel.ulysses import SPGroup, gather_sequence
from longrl.protocol import Batch

MEDIA_INPUTS = "media_inputs"
"""Batch object column a worker adds for a pass: per row, its list[MediaInput] (images, then videos)."""


def in_prompt_order(tokens: Sequence[int], token_ids: Mapping[str, int], media: Sequence[MediaInput]) -> list[MediaInput]:
    """`media` (each modality in its placeholders' order) reordered as their placeholders appear in `tokens`.

    Raises ValueError when a modality's placeholder count and item count differ.
    """
    queues = {m: [x for x in media if x.modality == m] for m in token_ids}
    for modality, queue in queues.items():
        placeholders = list(tokens).count(token_ids[modality])
        if placeholders != len(queue):
            raise ValueError(f"the prompt has {placeholders} {modality} placeholders but {len(queue)} "
                             f"{modality}s were given")
    by_id = {token_ids[m]: iter(q) for m, q in queues.items()}
    return [next(by_id[t]) for t in tokens if t in by_id]


def expand_media_tokens(tokens: Sequence[int], token_ids: Mapping[str, int], media: Sequence[MediaInput]) -> list[int]:
    """Each image/video placeholder replaced by its item's num_tokens copies (`media` in prompt order)."""
    out: list[int] = []
    items = iter(media)
    placeholders = set(token_ids.values())
    for token in tokens:
        out.extend([token] * next(items).num_tokens if token in placeholders else [token])
    return out


def mrope_positions(tokens: Sequence[int], token_ids: Mapping[str, int], media: Sequence[MediaInput],
                    spatial_merge_size: int, tokens_per_second: float) -> torch.Tensor:
    """vLLM's M-RoPE positions, int64 [3, len(tokens)], of an expanded sequence (`media` in prompt order).

    Text advances all three axes together. An item of (t, h, w) merged tokens starting where the
    text would continue at p gets time p + floor(i_t * second_per_grid_ts * tokens_per_second)
    (an image: t = 1, time p), height p + i_h and width p + i_w; the text after it resumes at the
    largest position so far + 1.
    """
    tokens = list(tokens)
    parts, cursor, next_pos = [], 0, 0
    for item in media:
        token = token_ids[item.modality]
        start = tokens.index(token, cursor)
        parts.append(torch.arange(start - cursor).expand(3, -1) + next_pos)
        base = next_pos + start - cursor
        t, h, w = item.grid_thw[0], item.grid_thw[1] // spatial_merge_size, item.grid_thw[2] // spatial_merge_size
        factor = float(item.second_per_grid_ts) * tokens_per_second if item.modality == "video" else 1.0
        time_axis = (torch.arange(t, dtype=torch.float64) * factor).long() if factor != 1.0 else torch.arange(t)
        grid = torch.stack(torch.meshgrid(time_axis, torch.arange(h), torch.arange(w), indexing="ij")).reshape(3, -1)
        end = start + t * h * w
        if end > len(tokens) or any(tok != token for tok in tokens[start:end]):
            raise ValueError(f"{item.modality} {item.path}: expected {t * h * w} consecutive {item.modality} "
                             f"tokens at {start}")
        parts.append(grid + base)
        next_pos = int(parts[-1].max()) + 1
        cursor = end
    parts.append(torch.arange(len(tokens) - cursor).expand(3, -1) + next_pos)
    return torch.cat(parts, dim=1)


class Qwen2_5_VLAdapter(TextAdapter):
    """Qwen2.5-VL: the language model's layers are FSDP units; the vision tower stays in the root unit.

    Why not shard the tower block by block: a rank whose micro-batch has no video would skip
    the tower's all-gathers that the other ranks wait in. In the root unit the tower is
    gathered with the root by every rank, and running it is local.
    """

    auto_class = "Qwen2_5_VLForConditionalGeneration"
    media = ("image", "video")
    fsdp_forward_methods = ("get_video_features", "get_image_features")

    def decoder_layers(self, model: torch.nn.Module) -> Sequence[torch.nn.Module]:
        return list(model.model.language_model.layers)

    def vision_tower(self, model: torch.nn.Module) -> torch.nn.Module | None:
        return model.model.visual

    def encode(self, model: torch.nn.Module, video: MediaInput, sp: SPGroup | None = None) -> torch.Tensor:
        """The tower's embeddings of one video or image, without gradients: [num_tokens, hidden].

        An image (one temporal step) is encoded whole by every rank. With a sequence-parallel group each of its ranks encodes an even share of the video's temporal steps
        and the group gathers the shares (MR-SP: the tower's work is split like the sequence). Exact: the
        tower attends within one temporal step (its cu_seqlens are per frame pair) and merges patches within
        it, so a share's output equals those rows of the whole video's. Every rank of the group must call it.
        """
        t, h, w = video.grid_thw
        if video.modality == "image":
            return self._encode(model, video.pixel_values, video.grid_thw, "image")
        per_step = h * w // model.config.vision_config.spatial_merge_size ** 2
        return encode_in_shares(lambda a, b: self._encode(model, video.pixel_values[a * h * w: b * h * w],
                                                          (b - a, h, w)), t, per_step, sp)

    def _encode(self, model: torch.nn.Module, pixel_values: torch.Tensor, grid_thw: tuple[int, int, int],
                modality: str = "video") -> torch.Tensor:
        device = next(model.parameters()).device
        features = model.get_image_features if modality == "image" else model.get_video_features
        with torch.no_grad():
            out = features(pixel_values.to(device), torch.tensor([grid_thw], device=device))
        return self.tower_embeddings(out)

    def tower_embeddings(self, output: object) -> torch.Tensor:
        """One item's embeddings, as cached and as vLLM takes them, from the tower's output ([num_tokens, hidden])."""
        return output.pooler_output[0]

    def encoder_output(self, model_config: object, embeds: tuple[torch.Tensor, ...]) -> object:
        """What the model's forward takes in `mm_encoder_outputs` for one modality's cached embeddings."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(pooler_output=embeds)

    def positions(self, model_config: object, tokens: Sequence[int], token_ids: Mapping[str, int],
                  media: Sequence[MediaInput]) -> torch.Tensor:
        """M-RoPE positions [3, len(tokens)] of an expanded sequence, as vLLM computes them."""
        vision = model_config.vision_config
        return mrope_positions(tokens, token_ids, media, vision.spatial_merge_size, vision.tokens_per_second)

    def strip_media(self, model_config: object, prompt_ids: Sequence[int]) -> list[int]:
        """The prompt without its image and video parts (`<|vision_start|><|image_pad|><|vision_end|>`, ...)."""
        drop = {model_config.image_token_id, model_config.video_token_id, model_config.vision_start_token_id,
                model_config.vision_end_token_id}
        return [t for t in prompt_ids if t not in drop]

    def model_inputs(self, model: torch.nn.Module, batch: Batch, pad_id: int,
                     device: torch.device) -> tuple[dict[str, object], torch.Tensor]:
        """Inputs for prompt+response rows with their images and videos, and each row's expanded prompt length.

        input_ids, attention_mask: [b, L]; position_ids: [3, b, L]; plus either `mm_encoder_outputs`
        (cached embeddings) or `pixel_values` + `image_grid_thw` / `pixel_values_videos` + `video_grid_thw`.
        """
        cfg = model.config
        token_ids = {"image": cfg.image_token_id, "video": cfg.video_token_id}
        rows = list(batch[MEDIA_INPUTS]) if MEDIA_INPUTS in batch else [[] for _ in range(len(batch))]
        sequences, prompt_lens, positions, ordered = [], [], [], []
        for i, (seq, prompt, media) in enumerate(zip(sequences_of(batch), batch["prompt_ids"], rows)):
            try:
                media = in_prompt_order(prompt, token_ids, media)
            except ValueError as exc:
                raise ValueError(f"row {i}: {exc}") from None
            # only the prompt's placeholders are media: a sampled response may hold those ids too (vLLM embeds
            # them as text), see response_media_as_text
            expanded = expand_media_tokens(prompt, token_ids, media) + list(seq[len(prompt):])
            sequences.append(expanded)
            prompt_lens.append(len(prompt) + sum(m.num_tokens - 1 for m in media))
            positions.append(self.positions(cfg, expanded, token_ids, media))
            ordered.extend(media)
        ids, mask, pos = padded_mrope_rows(sequences, positions, pad_id)
        if not ordered and torch.is_grad_enabled() and any(p.requires_grad for p in model.model.visual.parameters()):
            ids, mask, pos, ordered = _with_padding_video(ids, mask, pos, cfg)
        inputs: dict[str, object] = {"input_ids": ids.to(device), "attention_mask": mask.to(device),
                                     "position_ids": pos.to(device)}
        placeholders = response_media_as_text(ids, mask, prompt_lens, list(token_ids.values()), pad_id)
        if placeholders is not None:
            inputs[PLACEHOLDER_IDS] = placeholders.to(device)
        inputs.update(self._media_inputs(cfg, ordered, device))
        return inputs, torch.tensor(prompt_lens)

    def _media_inputs(self, model_config: object, media: list[MediaInput], device: torch.device) -> dict[str, object]:
        """Cached embeddings as `mm_encoder_outputs`, or pixels for the tower to encode in the forward.

        `media` in the order of their placeholders in the batch: the model scatters each modality's
        embeddings onto that modality's placeholders in order."""
        if not media:
            return {}
        if all(m.embeds is not None for m in media):
            by_modality = {name: tuple(m.embeds.to(device) for m in media if m.modality == name)
                           for name in ("image", "video")}
            return {"mm_encoder_outputs": {name: self.encoder_output(model_config, embeds)
                                           for name, embeds in by_modality.items() if embeds}}
        return _pixel_inputs(media, device)


def encode_in_shares(encode: Callable[[int, int], torch.Tensor], steps: int, per_step: int,
                     sp: SPGroup | None) -> torch.Tensor:
    """[steps * per_step, hidden]: `encode(start, end)` of steps [start, end), each rank of the SP group encoding
    an even share of the steps and the group gathering the shares (MR-SP). Every rank of the group must call it.

    Exact when the tower treats steps independently. A rank with no steps (fewer steps than ranks) encodes the
    last one anyway: with FSDP a tower call is a collective."""
    size, rank = (sp.size, sp.rank) if sp is not None else (1, 0)
    bounds = [r * steps // size for r in range(size + 1)]
    start, end = bounds[rank], bounds[rank + 1]
    mine = encode(start, end) if start < end else encode(steps - 1, steps)
    if size == 1:
        return mine
    rows = [(b - a) * per_step for a, b in zip(bounds[:-1], bounds[1:])]
    width = max(rows)  # all_gather takes equal shapes: pad each share, then drop the padding
    padded = torch.nn.functional.pad(mine[: rows[rank]], (0, 0, 0, width - rows[rank]))
    full = gather_sequence(padded, sp, dim=0)
    return torch.cat([full[r * width: r * width + n] for r, n in enumerate(rows)])


def padded_mrope_rows(sequences: Sequence[Sequence[int]], positions: Sequence[torch.Tensor],
                      pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input_ids and attention_mask [b, L] and M-RoPE position_ids [3, b, L] of expanded sequences
    with their [3, len] positions (padding: pad_id, mask 0, position 0)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    pos = torch.zeros((3, len(sequences), width), dtype=torch.long)
    for i, (seq, p) in enumerate(zip(sequences, positions)):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        pos[:, i, : len(seq)] = p
    return ids, mask, pos


def _with_padding_video(ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
                        cfg: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[MediaInput]]:
    """One more (masked) padding slot holding a one-token dummy video.

    Why: FSDP reduce-scatters, after backward, the gradients each rank has; a rank whose
    micro-batch has no video would have none for a trainable tower and the ranks' collectives
    would not match. The dummy slot is masked out and its logits unused, so the tower gets
    exactly-zero gradients.
    """
    vision = cfg.vision_config
    merge = vision.spatial_merge_size
    width = vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2
    dummy = MediaInput("<padding video>", (1, merge, merge), 1.0, 1, torch.zeros(merge * merge, width))
    slot = torch.zeros((ids.shape[0], 1), dtype=ids.dtype)
    ids, mask = torch.cat([ids, slot], 1), torch.cat([mask, slot], 1)
    ids[0, -1] = cfg.video_token_id
    return ids, mask, torch.cat([pos, slot[None].expand(3, -1, -1)], 2), [dummy]


def _pixel_inputs(media: list[MediaInput], device: torch.device) -> dict[str, object]:
    """Pixels and grids of every image and video (in placeholder order), for the tower to encode in the forward."""
    images = [m for m in media if m.modality == "image"]
    videos = [m for m in media if m.modality == "video"]
    if any(m.embeds is not None for m in media) or any(m.pixel_values is None for m in media):
        raise AssertionError("a pass gives every image and video as embeddings, or every one as pixels")
    inputs: dict[str, object] = {}
    if images:
        inputs.update(pixel_values=torch.cat([m.pixel_values for m in images]).to(device),
                      image_grid_thw=torch.tensor([m.grid_thw for m in images], device=device))
    if videos:
        inputs.update(pixel_values_videos=torch.cat([v.pixel_values for v in videos]).to(device),
                      video_grid_thw=torch.tensor([v.grid_thw for v in videos], device=device),
                      second_per_grid_ts=torch.tensor([v.second_per_grid_ts for v in videos], device=device))
    return inputs


ADAPTERS.register("qwen2_5_vl")(Qwen2_5_VLAdapter)
