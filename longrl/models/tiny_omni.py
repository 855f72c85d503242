"""Tiny random-init Qwen2.5-Omni (thinker only) checkpoint with tokenizer and processor configs, for tests/demos.

`python3 -m longrl.models.tiny_omni --out tiny/omni` writes what vLLM 0.32 and transformers load like a
downloaded Qwen2.5-Omni: config.json is the full `Qwen2_5OmniConfig` (vLLM reads `thinker_config` from it and
registers only `Qwen2_5OmniForConditionalGeneration`), without audio output; the weights are the thinker's,
saved under `thinker.*` (talker and token2wav are never built). Facts behind the sizes
(shared/reference/missing-models-facts.md B.3b): CPU attention needs head_dim >= 32, so the text model has
2 heads of 32 and M-RoPE sections 4+6+6; transformers 5.19's thinker config must receive
vision_start/vision_end token ids in its constructor or its rope index raises.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from longrl.models.tiny import build_tokenizer

logger = logging.getLogger(__name__)

# The processor's attribute -> the token string Qwen2.5-Omni's tokenizer uses.
OMNI_TOKENS = {"vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
               "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
               "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>", "audio_token": "<|AUDIO|>"}
# Qwen2.5-Omni's chat template, reduced: media parts become one placeholder each (vLLM expands them; with
# use_audio_in_video a video's placeholder takes its audio too).
OMNI_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif c['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif c['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
AUDIO_SECONDS = 30
"""The tiny feature extractor's window (chunk_length): every clip is padded to it (the real model: 300 s)."""


def build_omni_tokenizer(out_dir: str | Path):
    """longrl.models.tiny's BPE plus the Omni special tokens, exposed as the processor's named tokens."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    base = build_tokenizer(out_dir)
    base.add_tokens([AddedToken(t, special=True, normalized=False) for t in OMNI_TOKENS.values()],
                    special_tokens=True)
    tok = PreTrainedTokenizerFast(tokenizer_object=base.backend_tokenizer, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", extra_special_tokens=dict(OMNI_TOKENS))
    tok.chat_template = OMNI_CHAT_TEMPLATE
    tok.save_pretrained(str(out_dir))
    return tok


def _processor_configs(min_pixels: int, max_pixels: int) -> dict[str, dict]:
    """preprocessor_config.json (image processor + Whisper feature extractor, as Qwen2.5-Omni ships it),
    video_preprocessor_config.json and processor_config.json; by hand, since the torchvision video processor
    cannot be instantiated here to save itself."""
    vision = dict(do_resize=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True, do_convert_rgb=True,
                  image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
                  patch_size=14, temporal_patch_size=2, merge_size=2, min_pixels=min_pixels, max_pixels=max_pixels,
                  size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
                  processor_class="Qwen2_5OmniProcessor")
    audio = dict(feature_extractor_type="WhisperFeatureExtractor", feature_size=128, sampling_rate=16000,
                 hop_length=160, n_fft=400, chunk_length=AUDIO_SECONDS, n_samples=AUDIO_SECONDS * 16000,
                 nb_max_frames=AUDIO_SECONDS * 100, padding_side="right", padding_value=0.0, dither=0.0,
                 return_attention_mask=True)
    return {
        "preprocessor_config.json": dict(vision, image_processor_type="Qwen2VLImageProcessor", **audio),
        # frames arrive sampled by longrl.data.video, so the processor must not sample again
        "video_preprocessor_config.json": dict(vision, video_processor_type="Qwen2VLVideoProcessor",
                                               do_sample_frames=False),
        "processor_config.json": {"processor_class": "Qwen2_5OmniProcessor"},
    }


def build_qwen2_5_omni(out_dir: str | Path, seed: int = 0, hidden_size: int = 64, num_layers: int = 2,
                       min_pixels: int = 28 * 28 * 4, max_pixels: int = 28 * 28 * 64,
                       max_position_embeddings: int = 8192, dtype: torch.dtype = torch.float32) -> Path:
    """Write a tiny random-init Qwen2.5-Omni thinker (+ tokenizer, processor configs) to `out_dir`; returns it.

    Text: `hidden_size` with heads of 32; vision: depth 2, width 32, patch 14, 2x2 merge; audio: 2 layers of
    width 32 on 128 mel bins.
    """
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration
    from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniThinkerConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_omni_tokenizer(out)
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in OMNI_TOKENS.items()}
    head_dim = 32
    thinker = Qwen2_5OmniThinkerConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
            num_hidden_layers=num_layers, num_attention_heads=hidden_size // head_dim,
            num_key_value_heads=max(1, hidden_size // head_dim // 2), head_dim=head_dim,
            max_position_embeddings=max_position_embeddings, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=1, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=112, out_hidden_size=hidden_size,
                           fullatt_block_indexes=[1], tokens_per_second=25),
        audio_config=dict(d_model=32, encoder_layers=2, encoder_attention_heads=1, encoder_ffn_dim=64,
                          num_mel_bins=128, max_source_positions=1500, n_window=100, output_dim=hidden_size),
        audio_token_index=ids["audio_token"], image_token_index=ids["image_token"],
        video_token_index=ids["video_token"], audio_start_token_id=ids["audio_bos_token"],
        audio_end_token_id=ids["audio_eos_token"], vision_start_token_id=ids["vision_bos_token"],
        vision_end_token_id=ids["vision_eos_token"], user_token_id=tok.convert_tokens_to_ids("<|im_start|>"),
        position_id_per_seconds=25, seconds_per_chunk=2,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    cfg = Qwen2_5OmniConfig(thinker_config=thinker.to_dict(), enable_audio_output=False)
    torch.manual_seed(seed)
    model = Qwen2_5OmniForConditionalGeneration(cfg)
    # std-0.02 init gives near-uniform logits whatever the input; fan-in scaled weights make the outputs depend
    # on the prompt, the frames and the audio, so tests can tell them apart
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.3 if "embed_tokens" in name else p[0].numel() ** -0.5)
    model = model.to(dtype)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(out))
    for name, content in _processor_configs(min_pixels, max_pixels).items():
        (out / name).write_text(json.dumps(content, indent=1))
    logger.info("wrote tiny qwen2.5-omni thinker (%d parameters) to %s",
                sum(p.numel() for p in model.parameters()), out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a tiny random-init Qwen2.5-Omni (thinker) model directory.")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    print(json.dumps({"arch": "qwen2_5_omni", "path": str(build_qwen2_5_omni(args.out, seed=args.seed))}))


if __name__ == "__main__":
    main()
