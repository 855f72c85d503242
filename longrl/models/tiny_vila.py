"""Tiny random-init VILA checkpoints in VILA's own layout, for tests and CPU examples.

`python3 -m longrl.models.tiny_vila --out tiny/vila --projector mlp_downsample_2x2_fix --form remote` writes
config.json + llm/ + vision_tower/ + mm_projector/ as a VILA upload has them (remote-code form: model_type
"vila" with auto_map; dev form: model_type "llava_llama"). The geometry is the real one scaled down: patch 14,
a 3x3 (image 42) or 4x4 (image 56) patch grid, so both projectors zero-pad an odd edge.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Literal

import torch

from longrl.models.tiny import build_tokenizer
from longrl.models.tiny_vl import HALF_NORM, _fan_in_init
from longrl.models.vila import ADDED_TOKENS, IMAGE_TOKEN, VIDEO_TOKEN, VILAForCausalLM, MultimodalProjector

logger = logging.getLogger(__name__)

# Qwen's chat template with VILA's media tokens: a media part becomes its single placeholder (the model
# expands it into the media's embeddings), the text follows on the next line as VILA's prompts have it.
VILA_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    f"{{% if c['type'] == 'image' %}}{IMAGE_TOKEN}\n"
    f"{{% elif c['type'] == 'video' %}}{VIDEO_TOKEN}\n"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IMAGE_SIZES = {"mlp_downsample_2x2_fix": 42, "mlp_downsample_3x3_fix": 56}
"""Tower input size per projector: grids 3x3 and 4x4, each padded (to 4x4, 6x6) into 4 tokens per frame."""
Form = Literal["remote", "dev"]


def build_vila_tokenizer(out_dir: str | Path):
    """longrl.models.tiny's BPE tokenizer plus VILA's five added special tokens and a media chat template."""
    from tokenizers import AddedToken

    tok = build_tokenizer(out_dir)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in ADDED_TOKENS], special_tokens=True)
    tok.chat_template = VILA_CHAT_TEMPLATE
    tok.save_pretrained(str(out_dir))
    return tok


def top_config(form: Form, llm: dict, tower: dict, projector: dict, num_video_frames: int) -> dict:
    """The top-level config.json of either form (configuration_vila.py; convert_vila_dev_ckpt_to_remote)."""
    common = dict(llm_cfg=llm, vision_tower_cfg=tower, mm_projector_cfg=projector, hidden_size=llm["hidden_size"],
                  mm_hidden_size=tower["hidden_size"], mm_vision_select_layer=-2,
                  mm_vision_select_feature="cls_patch", image_aspect_ratio="resize",
                  num_video_frames=num_video_frames, fps=0.0, min_tiles=1, max_tiles=12, s2=False, dynamic_s2=False,
                  model_dtype="torch.float32", interpolate_mode="linear",
                  image_encoder={"_target_": "llava.model.encoders.BasicImageEncoder"},
                  video_encoder={"_target_": "llava.model.encoders.BasicVideoEncoder"})
    if form == "dev":
        return dict(common, model_type="llava_llama", architectures=["LlavaLlamaModel"])
    return dict(common, model_type="vila", architectures=["VILAForCausalLM"], version="2.0",
                auto_map={"AutoConfig": "modeling_vila.VILAConfig",
                          "AutoModel": "modeling_vila.VILAForCausalLM",
                          "AutoModelForCausalLM": "modeling_vila.VILAForCausalLM",
                          "AutoProcessor": "auto_processor.VILAProcessor"})


def build_vila(out_dir: str | Path, projector: str = "mlp_downsample_2x2_fix", form: Form = "remote", seed: int = 0,
               hidden_size: int = 128, num_layers: int = 2, vision_hidden_size: int = 32, vision_layers: int = 2,
               num_video_frames: int = 4, max_position_embeddings: int = 4096, image_size: int | None = None) -> Path:
    """Write a tiny random-init VILA checkpoint (fp32) to `out_dir`; returns the path.

    Text: Qwen2, head_dim 32 (vLLM-CPU's attention needs 32 or more), tied embeddings. Vision: SigLIP, patch 14,
    `vision_layers` layers, 2 heads, no head. Projector: `projector` at its IMAGE_SIZES input size, or at
    `image_size` (448: the released models' 32x32 grid, 257 or 122 tokens per frame)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    out = Path(out_dir)
    (out / "llm").mkdir(parents=True, exist_ok=True)
    tok = build_vila_tokenizer(out / "llm")
    head_dim = 32
    llm_cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2, num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // head_dim, num_key_value_heads=max(1, hidden_size // head_dim // 2),
        head_dim=head_dim, max_position_embeddings=max_position_embeddings, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id)
    size = image_size or IMAGE_SIZES[projector]
    tower_cfg = SiglipVisionConfig(
        hidden_size=vision_hidden_size, intermediate_size=vision_hidden_size * 2, num_hidden_layers=vision_layers,
        num_attention_heads=2, patch_size=14, image_size=size, layer_norm_eps=1e-6)
    torch.manual_seed(seed)
    llm = Qwen2ForCausalLM(llm_cfg)
    tower = SiglipVisionModel(tower_cfg)
    mm_projector = MultimodalProjector(projector, vision_hidden_size, hidden_size)
    for module in (llm, tower, mm_projector):
        _fan_in_init(module)
    llm.generation_config.eos_token_id = tok.eos_token_id
    llm.generation_config.pad_token_id = tok.pad_token_id
    llm_dict, tower_dict = llm_cfg.to_dict(), tower_cfg.to_dict()
    config = top_config(form, llm_dict, tower_dict, {"mm_projector_type": projector, "model_type": "v2l_projector"},
                        num_video_frames)
    ids = tuple(tok.convert_tokens_to_ids(t) for t in (IMAGE_TOKEN, VIDEO_TOKEN))
    VILAForCausalLM(llm, tower, mm_projector, config, ids).save_pretrained(out)
    (out / "vision_tower" / "preprocessor_config.json").write_text(json.dumps(dict(
        image_processor_type="SiglipImageProcessor", do_resize=True, size={"height": size, "width": size},
        resample=3, do_rescale=True, rescale_factor=1 / 255, do_normalize=True, **HALF_NORM), indent=1))
    logger.info("wrote tiny VILA (%s, %s form) to %s", projector, form, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a tiny random-init VILA checkpoint directory.")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--projector", choices=sorted(IMAGE_SIZES), default="mlp_downsample_2x2_fix")
    parser.add_argument("--form", choices=["remote", "dev"], default="remote")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    print(json.dumps({"path": str(build_vila(args.out, args.projector, args.form, args.seed))}))


if __name__ == "__main__":
    main()
