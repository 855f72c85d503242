"""Tiny random-init diffusers pipelines (SD3 images, Wan videos) with locally built text encoders and tokenizers.

There is no hub here: `python3 -m longrl.diffusion.tiny sd3 --out tiny/sd3` writes a pipeline directory that
`DiffusionPipeline.from_pretrained` loads like a downloaded one. The prompts are encoded by real (tiny, random)
CLIP/T5 (SD3) or UMT5 (Wan) encoders with a byte-level BPE trained here, so the training path is the one a real
checkpoint takes. Sizes follow diffusers' own test configs (tests/pipelines/stable_diffusion_3, tests/pipelines/wan).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def _corpus() -> list[str]:
    colours, things, places = ["red", "blue", "green", "small", "big"], ["cat", "dog", "car", "house", "tree"], \
        ["table", "street", "hill", "beach"]
    return [f"a photo of a {c} {t} on a {p}" for c in colours for t in things for p in places] + \
        [f"a video of a {c} {t} running on a {p}" for c in colours for t in things for p in places]


def build_tokenizer(max_length: int, eos: str, specials: list[str]):
    """A byte-level BPE over a fixed caption corpus that appends `eos` (CLIP pools the hidden state at its EOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, specials.index(eos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=specials[0], eos_token=eos, model_max_length=max_length)


def build_sd3(out_dir: str | Path, vae_blocks: int = 4, sample_size: int = 32, layers: int = 1, seed: int = 0) -> Path:
    """A tiny StableDiffusion3Pipeline directory: SD3Transformer2DModel (4 heads x 8), AutoencoderKL with
    `vae_blocks` blocks (VAE factor 2**(vae_blocks-1)), FlowMatchEulerDiscreteScheduler(shift=3), two CLIP and a
    T5 encoder. Images of `sample_size` pixels; the transformer's patch is 2 when the latent allows it."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    clip_tok = build_tokenizer(77, "<|eos|>", ["<|pad|>", "<|bos|>", "<|eos|>"])
    t5_tok = build_tokenizer(512, "<|eos|>", ["<|pad|>", "<|bos|>", "<|eos|>"])
    clip_cfg = CLIPTextConfig(vocab_size=len(clip_tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                              num_attention_heads=2, projection_dim=32, max_position_embeddings=77, pad_token_id=0,
                              bos_token_id=1, eos_token_id=2, hidden_act="gelu")
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                                 relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=2,
                                 decoder_start_token_id=0))
    factor = 2 ** (vae_blocks - 1)
    latent = sample_size // factor
    # joint_attention_dim = T5's d_model (the two CLIPs' 2 x 16 is padded to it); pooled = 2 x CLIP projection
    transformer = SD3Transformer2DModel(sample_size=latent, patch_size=2 if latent % 2 == 0 else 1, in_channels=4,
                                        out_channels=4, num_layers=layers, attention_head_dim=8, num_attention_heads=4,
                                        joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=64,
                                        pos_embed_max_size=max(latent, 8))
    channels = (4,) if vae_blocks == 1 else (8,) + (16,) * (vae_blocks - 1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=channels,
                        down_block_types=("DownEncoderBlock2D",) * vae_blocks,
                        up_block_types=("UpDecoderBlock2D",) * vae_blocks, layers_per_block=1,
                        norm_num_groups=1 if vae_blocks == 1 else 8, sample_size=sample_size, use_quant_conv=False,
                        use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=CLIPTextModelWithProjection(clip_cfg), tokenizer=clip_tok,
        text_encoder_2=CLIPTextModelWithProjection(clip_cfg), tokenizer_2=clip_tok, text_encoder_3=t5,
        tokenizer_3=t5_tok)
    return _save(pipe, out_dir, "sd3")


def build_wan(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny WanPipeline directory (see wan_pipeline)."""
    return _save(wan_pipeline(seed), out_dir, "wan")


def wan_pipeline(seed: int = 0):
    """A tiny WanPipeline: WanTransformer3DModel (2 heads x 12, patch (1, 2, 2)), AutoencoderKLWan (spatial factor
    8, temporal factor 4), FlowMatchEulerDiscreteScheduler(shift=7) and a UMT5 encoder."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    tok = build_tokenizer(512, "</s>", ["<pad>", "</s>"])
    encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                                          relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                          decoder_start_token_id=0))
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                        in_channels=16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                                        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32)
    return WanPipeline(tokenizer=tok, text_encoder=encoder, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), transformer=transformer)


def _save(pipe, out_dir: str | Path, arch: str) -> Path:
    out = Path(out_dir)
    pipe.save_pretrained(str(out))
    logger.info("wrote tiny %s pipeline (transformer: %d parameters) to %s", arch,
                sum(p.numel() for p in pipe.transformer.parameters()), out)
    return out


BUILDERS = {"sd3": build_sd3, "wan": build_wan}


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a tiny random-init diffusers pipeline directory.")
    parser.add_argument("arch", choices=sorted(BUILDERS))
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    path = BUILDERS[args.arch](args.out, seed=args.seed)
    print(json.dumps({"arch": args.arch, "path": str(path)}))


if __name__ == "__main__":
    main()
