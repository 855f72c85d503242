"""longrl/models/lora.py: the config's LoRA section as a peft LoraConfig, and its checks."""

import pytest

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
