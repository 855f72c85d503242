"""Tiny random-init Qwen2.5-VL checkpoint with tokenizer and processor configs, for tests/demos.

`python3 -m longrl.models.tiny_vl --out tiny/qwen25vl` writes a directory that
`Qwen2_5_VLForConditionalGeneration.from_pretrained`, `AutoProcessor.from_pretrained` (with the
longrl vLLM plugin registered where torchvision is missing) and vLLM load like a downloaded one.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from longrl.models.tiny import build_tokenizer

logger = logging.getLogger(__name__)

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
# Qwen2-VL's chat template, reduced: message content is a string or a list of
# {"type": "text"|"image"|"video"} parts; media parts become one placeholder each, which the
# processor (or vLLM) expands to the media's token count.
VL_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_vl_tokenizer(out_dir: str | Path):
    """longrl.models.tiny's BPE tokenizer plus the Qwen-VL special tokens and a media chat template."""
    from tokenizers import AddedToken

    tok = build_tokenizer(out_dir)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in VISION_TOKENS], special_tokens=True)
    tok.chat_template = VL_CHAT_TEMPLATE
    tok.save_pretrained(str(out_dir))
    return tok


CLIP_NORM = dict(image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
HALF_NORM = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])  # Qwen3-VL's processors


def _processor_configs(min_pixels: int, max_pixels: int, patch_size: int, merge_size: int,
                       temporal_patch_size: int, fps: float, processor_class: str = "Qwen2_5_VLProcessor",
                       video_processor_type: str = "Qwen2VLVideoProcessor",
                       norm: dict[str, list[float]] = CLIP_NORM) -> dict[str, dict]:
    """preprocessor_config.json, video_preprocessor_config.json and processor_config.json contents.

    Written by hand because transformers' Qwen2VLVideoProcessor cannot be instantiated (to call
    save_pretrained) without torchvision.
    """
    common = dict(do_resize=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True, do_convert_rgb=True,
                  **norm, patch_size=patch_size, temporal_patch_size=temporal_patch_size, merge_size=merge_size,
                  min_pixels=min_pixels, max_pixels=max_pixels,
                  size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
                  processor_class=processor_class)
    return {
        "preprocessor_config.json": dict(common, image_processor_type="Qwen2VLImageProcessor"),
        # frames arrive sampled by longrl.data.video, so the processor must not sample again
        "video_preprocessor_config.json": dict(common, video_processor_type=video_processor_type,
                                               fps=fps, do_sample_frames=False),
        "processor_config.json": {"processor_class": processor_class},
    }


def _fan_in_init(model: torch.nn.Module) -> None:
    """The default std-0.02 init gives near-uniform logits whatever the input; fan-in scaled weights make
    outputs depend on the prompt and the media, so tests can tell them apart."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.3 if "embed_tokens" in name else p[0].numel() ** -0.5)


def build_qwen2_5_vl(out_dir: str | Path, seed: int = 0, hidden_size: int = 128, num_layers: int = 2,
                     vision_hidden_size: int = 64, vision_depth: int = 2, min_pixels: int = 28 * 28 * 4,
                     max_pixels: int = 28 * 28 * 64, max_position_embeddings: int = 8192,
                     dtype: torch.dtype = torch.float32) -> Path:
    """Write a tiny random-init Qwen2_5_VLForConditionalGeneration + tokenizer + processor configs.

    Vision: patch 14, 2x2 merge, temporal patch 2, `vision_depth` blocks. Text: head_dim 32
    (M-RoPE sections 4+6+6 = 16 = head_dim/2). Returns `out_dir`.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_vl_tokenizer(out)
    ids = {t: tok.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    head_dim = 32
    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
            num_hidden_layers=num_layers, num_attention_heads=hidden_size // head_dim,
            num_key_value_heads=max(1, hidden_size // head_dim // 2), head_dim=head_dim,
            max_position_embeddings=max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
            bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(
            depth=vision_depth, hidden_size=vision_hidden_size, intermediate_size=vision_hidden_size * 2,
            num_heads=vision_hidden_size // 32, out_hidden_size=hidden_size, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, window_size=112, fullatt_block_indexes=[vision_depth - 1], tokens_per_second=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    _fan_in_init(model)
    _save(model.to(dtype), tok, out, _processor_configs(min_pixels, max_pixels, 14, 2, 2, fps=2.0))
    return out


def _save(model: torch.nn.Module, tok: object, out: Path, processor_configs: dict[str, dict]) -> None:
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(out))
    for name, content in processor_configs.items():
        (out / name).write_text(json.dumps(content, indent=1))
    logger.info("wrote tiny %s (%d parameters) to %s", model.config.model_type,
                sum(p.numel() for p in model.parameters()), out)


def build_qwen3_vl(out_dir: str | Path, seed: int = 0, hidden_size: int = 128, num_layers: int = 2,
                   vision_hidden_size: int = 64, vision_depth: int = 2, min_pixels: int = 32 * 32 * 4,
                   max_pixels: int = 32 * 32 * 64, max_position_embeddings: int = 8192,
                   dtype: torch.dtype = torch.float32) -> Path:
    """Write a tiny random-init Qwen3VLForConditionalGeneration + tokenizer + processor configs.

    Vision: patch 16, 2x2 merge, temporal patch 2, a learned 8x8 position grid (interpolated per image),
    `vision_depth` blocks, DeepStack features from block 0 added to the first language layer's input.
    Text: Qwen3 (q/k RMSNorm), head_dim 32 (vLLM-CPU's attention needs 32 or more), interleaved M-RoPE
    sections 6+5+5 = 16 = head_dim/2 (the 24+20+20 of the released models, scaled). Returns `out_dir`.
    """
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_vl_tokenizer(out)
    ids = {t: tok.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    head_dim = 32
    cfg = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
            num_hidden_layers=num_layers, num_attention_heads=hidden_size // head_dim,
            num_key_value_heads=max(1, hidden_size // head_dim // 2), head_dim=head_dim,
            max_position_embeddings=max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [6, 5, 5],
                             "mrope_interleaved": True},
            bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(
            depth=vision_depth, hidden_size=vision_hidden_size, intermediate_size=vision_hidden_size * 2,
            num_heads=vision_hidden_size // 32, out_hidden_size=hidden_size, patch_size=16, spatial_merge_size=2,
            temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(cfg)
    _fan_in_init(model)
    _save(model.to(dtype), tok, out, _processor_configs(min_pixels, max_pixels, 16, 2, 2, fps=2.0,
                                                        processor_class="Qwen3VLProcessor",
                                                        video_processor_type="Qwen3VLVideoProcessor", norm=HALF_NORM))
    return out


BUILDERS = {"qwen2_5_vl": build_qwen2_5_vl, "qwen3_vl": build_qwen3_vl}


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a tiny random-init Qwen2.5-VL or Qwen3-VL model directory.")
    parser.add_argument("arch", nargs="?", choices=sorted(BUILDERS), default="qwen2_5_vl")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    print(json.dumps({"arch": args.arch, "path": str(BUILDERS[args.arch](args.out, seed=args.seed))}))


if __name__ == "__main__":
    main()
