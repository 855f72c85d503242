"""Qwen3-VL adapter: Qwen2.5-VL's paths (expanded placeholders, vLLM's M-RoPE positions, cached tower
embeddings) with Qwen3-VL's DeepStack tower output; images only.

What differs from Qwen2.5-VL, and how it is handled here:
  * The tower returns, besides the merged patch embeddings, one DeepStack feature map per entry of
    `vision_config.deepstack_visual_indexes`, which the language model adds to the hidden states of its
    first layers at the image tokens. A cached embedding is therefore the concatenation
    [main | deepstack_0 | ...] along the hidden axis, [num_tokens, hidden * (1 + levels)]: the layout vLLM's
    Qwen3-VL takes as `image_embeds`, split back into transformers' `pooler_output` and
    `deepstack_features` for the trainer's forward.
  * M-RoPE of an image: time 0, height and width from where the text would continue, text after it at the
    largest position + 1 (vLLM's `Qwen3VLForConditionalGeneration._get_mrope_input_positions`): the same
    positions as `mrope_positions` gives for an image. The rotary sections are interleaved, which the models
    themselves do.
  * Videos: Qwen3-VL splits a video into frames separated by timestamp text ("<0.5 seconds>") that its
    processor inserts, with time position 0 for every frame. longrl does not build that yet; a data set with
    videos is refused before any worker starts (`media`, read by longrl.data.dataset.check_media).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from longrl.models.adapter import ADAPTERS
from longrl.models.qwen2_5_vl import Qwen2_5_VLAdapter, mrope_positions
from longrl.models.vision_cache import MediaInput


class Qwen3VLAdapter(Qwen2_5_VLAdapter):
    """Qwen3-VL (dense): language layers are FSDP units, the tower (with its DeepStack mergers) stays in the root."""

    auto_class = "Qwen3VLForConditionalGeneration"
    media = ("image",)

    def tower_embeddings(self, output: object) -> torch.Tensor:
        """[num_tokens, hidden * (1 + levels)]: the merged embeddings, then each DeepStack level's."""
        return torch.cat([output.pooler_output[0], *(level[0] for level in output.deepstack_features)], dim=-1)

    def encoder_output(self, model_config: object, embeds: tuple[torch.Tensor, ...]) -> object:
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        levels = 1 + len(model_config.vision_config.deepstack_visual_indexes)
        parts = [e.split(e.shape[-1] // levels, dim=-1) for e in embeds]  # per item: (main, level 0, ...)
        return BaseModelOutputWithDeepstackFeatures(
            pooler_output=tuple(p[0] for p in parts),
            deepstack_features=[tuple(p[k] for p in parts) for k in range(1, levels)])

    def positions(self, model_config: object, tokens: Sequence[int], token_ids: Mapping[str, int],
                  media: Sequence[MediaInput]) -> torch.Tensor:
        videos = [m.path for m in media if m.modality == "video"]
        if videos:
            raise ValueError(f"Qwen3-VL takes images only in longrl (its videos need timestamp text between "
                             f"frames, not built yet); got videos {videos}")
        return mrope_positions(tokens, token_ids, media, model_config.vision_config.spatial_merge_size, 1.0)


ADAPTERS.register("qwen3_vl")(Qwen3VLAdapter)
