"""Qwen2.5-VL adapter: expanded video tokens, M-RoPE positions exactly as vLLM computes them, media inputs.

Rows carry the prompt as the chat template renders it, with ONE `<|video_pad|>` per video
(what vLLM takes: it expands the placeholder itself). The trainer's forward needs the
expanded sequence, the 3-axis (time, height, width) rotary positions, and the video either as
pixels (the tower runs inside the forward) or as cached tower embeddings (VisionCache).

Positions follow vLLM's `Qwen2_5_VLForConditionalGeneration.get_mrope_input_positions`, not
transformers' `get_rope_index`: the two disagree on where the text after a video starts when
the video's temporal span exceeds its spatial one (vLLM: max vision position + 1;
transformers 5.19: start + max(h, w)). The rollout engine samples with vLLM's positions, so
the trainer must use the same ones or its log-probs are not those of the sampling policy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from longrl.models.adapter import ADAPTERS, TextAdapter, sequences_of
from longrl.models.vision_cache import VideoInput
from longrl.parallel.ulysses import SPGroup, gather_sequence
from longrl.protocol import Batch

VIDEO_INPUTS = "video_inputs"
"""Batch object column a worker adds for a pass: per row, its list[VideoInput] in placeholder order."""


def expand_video_tokens(tokens: Sequence[int], video_token_id: int, counts: Sequence[int]) -> list[int]:
    """Each video placeholder replaced by `counts[i]` copies of it (placeholders taken in order)."""
    out: list[int] = []
    videos = iter(counts)
    for token in tokens:
        out.extend([token] * next(videos) if token == video_token_id else [token])
    return out


def mrope_positions(tokens: Sequence[int], video_token_id: int, videos: Sequence[VideoInput],
                    spatial_merge_size: int, tokens_per_second: float) -> torch.Tensor:
    """vLLM's M-RoPE positions, int64 [3, len(tokens)], of an expanded sequence.

    Text advances all three axes together. A video of (t, h, w) merged tokens starting where the
    text would continue at p gets time p + floor(i_t * second_per_grid_ts * tokens_per_second),
    height p + i_h and width p + i_w; the text after it resumes at the largest position so far + 1.
    """
    tokens = list(tokens)
    parts, cursor, next_pos = [], 0, 0
    for video in videos:
        start = tokens.index(video_token_id, cursor)
        parts.append(torch.arange(start - cursor).expand(3, -1) + next_pos)
        base = next_pos + start - cursor
        t, h, w = video.grid_thw[0], video.grid_thw[1] // spatial_merge_size, video.grid_thw[2] // spatial_merge_size
        factor = float(video.second_per_grid_ts) * tokens_per_second  # float64, as vLLM's numpy
        time_axis = (torch.arange(t, dtype=torch.float64) * factor).long() if factor != 1.0 else torch.arange(t)
        grid = torch.stack(torch.meshgrid(time_axis, torch.arange(h), torch.arange(w), indexing="ij")).reshape(3, -1)
        end = start + t * h * w
        if end > len(tokens) or any(tok != video_token_id for tok in tokens[start:end]):
            raise ValueError(f"video {video.path}: expected {t * h * w} consecutive video tokens at {start}")
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
    fsdp_forward_methods = ("get_video_features",)

    def decoder_layers(self, model: torch.nn.Module) -> Sequence[torch.nn.Module]:
        return list(model.model.language_model.layers)

    def vision_tower(self, model: torch.nn.Module) -> torch.nn.Module | None:
        return model.model.visual

    def encode_video(self, model: torch.nn.Module, video: VideoInput, sp: SPGroup | None = None) -> torch.Tensor:
        """The tower's embeddings of one video, without gradients: [num_tokens, hidden].

        With a sequence-parallel group each of its ranks encodes an even share of the video's temporal steps
        and the group gathers the shares (MR-SP: the tower's work is split like the sequence). Exact: the
        tower attends within one temporal step (its cu_seqlens are per frame pair) and merges patches within
        it, so a share's output equals those rows of the whole video's. Every rank of the group must call it.
        """
        t, h, w = video.grid_thw
        size, rank = (sp.size, sp.rank) if sp is not None else (1, 0)
        bounds = [r * t // size for r in range(size + 1)]
        start, end = bounds[rank], bounds[rank + 1]
        if start == end:  # fewer steps than ranks: encode one anyway (with FSDP a tower call is a collective)
            start, end = t - 1, t
        mine = self._encode(model, video.pixel_values[start * h * w: end * h * w], (end - start, h, w))
        if size == 1:
            return mine
        per_step = h * w // model.config.vision_config.spatial_merge_size ** 2
        rows = [(b - a) * per_step for a, b in zip(bounds[:-1], bounds[1:])]
        width = max(rows)  # all_gather takes equal shapes: pad each share, then drop the padding
        padded = torch.nn.functional.pad(mine[: rows[rank]], (0, 0, 0, width - rows[rank]))
        full = gather_sequence(padded, sp, dim=0)
        return torch.cat([full[r * width: r * width + n] for r, n in enumerate(rows)])

    @staticmethod
    def _encode(model: torch.nn.Module, pixel_values: torch.Tensor, grid_thw: tuple[int, int, int]) -> torch.Tensor:
        device = next(model.parameters()).device
        with torch.no_grad():
            out = model.get_video_features(pixel_values.to(device), torch.tensor([grid_thw], device=device))
        return out.pooler_output[0]

    def strip_media(self, model_config: object, prompt_ids: Sequence[int]) -> list[int]:
        """The prompt without its video parts (`<|vision_start|><|video_pad|><|vision_end|>`)."""
        drop = {model_config.video_token_id, model_config.vision_start_token_id, model_config.vision_end_token_id}
        return [t for t in prompt_ids if t not in drop]

    def model_inputs(self, model: torch.nn.Module, batch: Batch, pad_id: int,
                     device: torch.device) -> tuple[dict[str, object], torch.Tensor]:
        """Inputs for prompt+response rows with their videos, and each row's expanded prompt length.

        input_ids, attention_mask: [b, L]; position_ids: [3, b, L]; plus either
        `mm_encoder_outputs` (cached embeddings) or `pixel_values_videos` + `video_grid_thw`.
        """
        cfg = model.config
        merge, tps = cfg.vision_config.spatial_merge_size, cfg.vision_config.tokens_per_second
        rows = list(batch[VIDEO_INPUTS]) if VIDEO_INPUTS in batch else [[] for _ in range(len(batch))]
        sequences, prompt_lens, positions = [], [], []
        for i, (seq, prompt, videos) in enumerate(zip(sequences_of(batch), batch["prompt_ids"], rows)):
            placeholders = list(prompt).count(cfg.video_token_id)
            if placeholders != len(videos):
                raise ValueError(f"row {i}: the prompt has {placeholders} <|video_pad|> placeholders but "
                                 f"{len(videos)} videos were given")
            counts = [v.num_tokens for v in videos]
            expanded = expand_video_tokens(seq, cfg.video_token_id, counts)
            sequences.append(expanded)
            prompt_lens.append(len(prompt) + sum(counts) - len(counts))
            positions.append(mrope_positions(expanded, cfg.video_token_id, videos, merge, tps))
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        pos = torch.zeros((3, len(sequences), width), dtype=torch.long)
        for i, (seq, p) in enumerate(zip(sequences, positions)):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
            pos[:, i, : len(seq)] = p
        videos = [v for row in rows for v in row]
        if not videos and torch.is_grad_enabled() and any(p.requires_grad for p in model.model.visual.parameters()):
            ids, mask, pos, videos = _with_padding_video(ids, mask, pos, cfg)
        inputs: dict[str, object] = {"input_ids": ids.to(device), "attention_mask": mask.to(device),
                                     "position_ids": pos.to(device)}
        inputs.update(_media_inputs(videos, device))
        return inputs, torch.tensor(prompt_lens)


def _with_padding_video(ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
                        cfg: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[VideoInput]]:
    """One more (masked) padding slot holding a one-token dummy video.

    Why: FSDP reduce-scatters, after backward, the gradients each rank has; a rank whose
    micro-batch has no video would have none for a trainable tower and the ranks' collectives
    would not match. The dummy slot is masked out and its logits unused, so the tower gets
    exactly-zero gradients.
    """
    vision = cfg.vision_config
    merge = vision.spatial_merge_size
    width = vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2
    dummy = VideoInput("<padding video>", (1, merge, merge), 1.0, 1, torch.zeros(merge * merge, width))
    slot = torch.zeros((ids.shape[0], 1), dtype=ids.dtype)
    ids, mask = torch.cat([ids, slot], 1), torch.cat([mask, slot], 1)
    ids[0, -1] = cfg.video_token_id
    return ids, mask, torch.cat([pos, slot[None].expand(3, -1, -1)], 2), [dummy]


def _media_inputs(videos: list[VideoInput], device: torch.device) -> dict[str, object]:
    """Cached embeddings as `mm_encoder_outputs`, or pixels for the tower to encode in the forward."""
    if not videos:
        return {}
    with_embeds = [v.embeds is not None for v in videos]
    if all(with_embeds):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        embeds = tuple(v.embeds.to(device) for v in videos)
        return {"mm_encoder_outputs": {"video": BaseModelOutputWithPooling(pooler_output=embeds)}}
    if any(with_embeds) or any(v.pixel_values is None for v in videos):
        raise AssertionError("a pass gives every video as embeddings, or every video as pixels")
    return {"pixel_values_videos": torch.cat([v.pixel_values for v in videos]).to(device),
            "video_grid_thw": torch.tensor([v.grid_thw for v in videos], device=device),
            "second_per_grid_ts": torch.tensor([v.second_per_grid_ts for v in videos], device=device)}


ADAPTERS.register("qwen2_5_vl")(Qwen2_5_VLAdapter)
