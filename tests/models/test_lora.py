"""longrl/models/lora.py: the config's LoRA section as a peft LoraConfig, and its checks."""

import pytest
import torch

from longrl.config import ConfigError, LoraConfig
from longrl.models.lora import lora_config, lora_problems


def test_rank_zero_is_off():
    assert lora_config(LoraConfig()) is None and lora_problems(LoraConfig()) == []


def test_the_section_becomes_a_peft_config_without_dropout_or_bias():
    peft_cfg = lora_config(LoraConfig(rank=8, alpha=16, target_modules=" q_proj, v_proj ,", exclude_modules=".*visual.*"))
    assert (peft_cfg.r, peft_cfg.lora_alpha, peft_cfg.lora_dropout, peft_cfg.bias) == (8, 16, 0.0, "none")
    assert set(peft_cfg.target_modules) == {"q_proj", "v_proj"} and peft_cfg.exclude_modules == ".*visual.*"
    assert lora_config(LoraConfig(rank=4, target_modules="All-Linear")).target_modules == "all-linear"


def test_bad_sections_name_the_key():
    problems = lora_problems(LoraConfig(rank=4, alpha=0, target_modules=" , ", exclude_modules="(visual"),
                             "worker.actor.model.lora")
    assert len(problems) == 3
    assert problems[0].startswith("worker.actor.model.lora.alpha=0 must be > 0")
    assert problems[1].startswith("worker.actor.model.lora.target_modules=' , ' names no module")
    assert problems[2].startswith("worker.actor.model.lora.exclude_modules='(visual' is not a regular expression")
    assert lora_problems(LoraConfig(rank=-1)) == ["worker.actor.model.lora.rank=-1 must be >= 0 (0 turns LoRA off)"]
    with pytest.raises(ConfigError, match="alpha=0"):
        lora_config(LoraConfig(rank=4, alpha=0))


def test_adapters_disabled_is_the_base_model_and_nests(tiny_qwen2):
    from transformers import AutoModelForCausalLM

    from longrl.models.lora import adapters_disabled, inject_lora

    model = inject_lora(AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32), LoraConfig(rank=4))
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.1)
    ids = torch.arange(12)[None]
    with torch.no_grad(), adapters_disabled(model):
        with adapters_disabled(model):
            pass
        assert torch.equal(model(ids).logits, base(ids).logits)  # still off after the inner block
    assert not torch.allclose(model(ids).logits, base(ids).logits)
    assert all(p.requires_grad for name, p in model.named_parameters() if "lora_" in name)


def test_targets_that_are_not_linear_layers_are_refused(tiny_qwen2):
    from transformers import AutoModelForCausalLM

    from longrl.models.lora import inject_lora

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    with pytest.raises(ConfigError, match="target_modules='embed_tokens' reaches layers that are not linear"):
        inject_lora(model, LoraConfig(rank=4, target_modules="embed_tokens"))
    with pytest.raises(ConfigError, match="target_modules='nothing_here'"):
        inject_lora(AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32),
                    LoraConfig(rank=4, target_modules="nothing_here"))
