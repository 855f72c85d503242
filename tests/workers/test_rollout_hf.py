"""The transformers `generate` rollout engine: same interface and log-prob meaning as vLLM's."""

from __future__ import annotations

import torch

from longrl.config import RolloutConfig
from longrl.models.adapter import TextAdapter
from longrl.protocol import Batch
from longrl.workers.actor import response_log_probs
from longrl.workers.rollout import SamplingSpec, rollout_engine


def test_hf_engine_log_probs_are_the_trainers_and_sampling_is_seeded(tiny_qwen2):
    from transformers import AutoModelForCausalLM

    engine = rollout_engine("hf", str(tiny_qwen2), RolloutConfig(name="hf", dtype="fp32"), max_model_len=128)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12]]
    spec = SamplingSpec(n=3, temperature=0.7, top_p=1.0, top_k=-1, max_tokens=8)
    groups = engine.generate(prompts, spec, seed=3)
    assert [len(g) for g in groups] == [3, 3]
    assert [[s.token_ids for s in g] for g in groups] == [[s.token_ids for s in g] for g in engine.generate(prompts, spec, seed=3)]

    samples = [s for g in groups for s in g]
    width = max(len(s.token_ids) for s in samples)
    responses = torch.zeros(len(samples), width, dtype=torch.long)
    mask = torch.zeros(len(samples), width, dtype=torch.long)
    for i, s in enumerate(samples):
        responses[i, : len(s.token_ids)] = torch.tensor(s.token_ids)
        mask[i, : len(s.token_ids)] = 1
    batch = Batch({"responses": responses, "response_mask": mask},
                  {"prompt_ids": [p for p in prompts for _ in range(3)]})
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    trainer_lp = response_log_probs(model, TextAdapter(), batch, model.config.pad_token_id, 0.7, 4)
    engine_lp = torch.zeros_like(trainer_lp)
    for i, s in enumerate(samples):
        engine_lp[i, : len(s.log_probs)] = torch.tensor(s.log_probs)
    assert (trainer_lp - engine_lp)[mask.bool()].abs().max() < 1e-4


def test_hf_engine_greedy_follows_loaded_weights(tiny_qwen2):
    from transformers import AutoModelForCausalLM

    engine = rollout_engine("hf", str(tiny_qwen2), RolloutConfig(name="hf", dtype="fp32"), max_model_len=128)
    greedy = SamplingSpec(n=1, temperature=0.0, top_p=1.0, top_k=-1, max_tokens=6)
    before = engine.generate([[5, 6, 7]], greedy, seed=0)[0][0].token_ids
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    weights = {k: v + 0.5 * torch.randn_like(v) for k, v in model.state_dict().items()}
    engine.load_weights(weights.items())
    model.load_state_dict(weights)
    after = engine.generate([[5, 6, 7]], greedy, seed=0)[0][0].token_ids
    expected = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=6, do_sample=False,
                              pad_token_id=model.config.pad_token_id)[0, 3:].tolist()
    assert after == expected[: len(after)] and after != before


def test_a_list_of_eos_ids_ends_the_response_at_the_first_of_them(tiny_qwen2, tmp_path):
    import json
    import shutil

    greedy = SamplingSpec(n=1, temperature=0.0, top_p=1.0, top_k=-1, max_tokens=6)
    plain = rollout_engine("hf", str(tiny_qwen2), RolloutConfig(name="hf", dtype="fp32"), max_model_len=128)
    first = plain.generate([[5, 6, 7]], greedy, seed=0)[0][0].token_ids[0]
    # a real Qwen2.5 checkpoint: generation_config.eos_token_id = [<|im_end|>, <|endoftext|>]
    model_dir = shutil.copytree(tiny_qwen2, tmp_path / "qwen2_eos_list")
    gen = json.loads((model_dir / "generation_config.json").read_text())
    gen["eos_token_id"] = [gen["eos_token_id"], first]
    (model_dir / "generation_config.json").write_text(json.dumps(gen))
    engine = rollout_engine("hf", str(model_dir), RolloutConfig(name="hf", dtype="fp32"), max_model_len=128)
    sample = engine.generate([[5, 6, 7]], greedy, seed=0)[0][0]
    assert sample.token_ids == [first]  # not [first, pad, pad, ...]: nothing after EOS is trained on
    assert len(sample.log_probs) == 1


def test_weights_under_a_name_the_engine_lacks_are_refused_naming_it(tiny_qwen2):
    import pytest
    from transformers import AutoModelForCausalLM

    engine = rollout_engine("hf", str(tiny_qwen2), RolloutConfig(name="hf", dtype="fp32"), max_model_len=128)
    state = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32).state_dict()
    renamed = [(f"module.{name}" if "embed_tokens" in name else name, t) for name, t in state.items()]
    with pytest.raises(RuntimeError, match=r"module\.model\.embed_tokens\.weight.*none for .*model\.embed_tokens"):
        engine.load_weights(renamed)
