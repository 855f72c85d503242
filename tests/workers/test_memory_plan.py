"""The memory plan: hand-worked bytes for a toy shape, and docs/memory.md shows exactly what the function computes."""

from __future__ import annotations

from pathlib import Path

import torch

from longrl.workers.memory_plan import (QWEN2_5_3B, QWEN2_5_7B, ModelShape, RunShape, kv_cache_tokens, lora_params,
                                        markdown_table, memory_plan)

DOC = Path(__file__).resolve().parents[2] / "docs" / "memory.md"
TOY = ModelShape("toy", params=800, layers=2, hidden=10, vocab=20, kv_heads=1, head_dim=5, tied_embeddings=True,
                 intermediate=30)
RUN = RunShape(world=4, gpu_bytes=10_000, gpu_memory_utilization=0.5, micro_batch=2, seq_len=8, logits_chunk=4,
               bucket_mb=1)


def test_toy_plan_bytes_per_phase():
    plan = memory_plan(TOY, RUN)
    # shard = 800 / 4 = 200 params: fp32 actor 800 B, AdamW 2 x 4 x 200 = 1600 B, bf16 reference 400 B
    trainer = {"actor params (shard)": 800, "optimizer state (shard)": 1600, "reference (shard)": 400}
    # engine: 800 params x 2 B = 1600 B; KV = 0.5 x 10000 - 1600 = 3400 B
    assert plan["rollout"] == {**trainer, "engine weights": 1600, "engine KV cache": 3400}
    # sync: a 1 MB bucket and the tied embedding 20 x 10 gathered in fp32 = 800 B
    assert plan["sync"] == {**trainer, "engine weights": 1600, "bucket": 2 ** 20, "largest parameter, fp32": 800}
    # training: fp32 grads 800 B; a layer = (800 - 200 embedding) / 2 = 300 params, two in bf16 = 1200 B;
    # checkpoints 2 layers x [2, 8, 10] bf16 = 640 B; logits [2, 4, 20] fp32 and their grad = 1280 B; engine: 0
    assert plan["training"] == {**trainer, "gradients (shard)": 800, "gathered layers": 1200,
                                "checkpointed activations": 640, "logits chunk + grad, fp32": 1280}
    assert kv_cache_tokens(TOY, 3400, RUN) == 85  # per token K and V: 2 x 2 layers x 1 head x 5 x 2 B = 40 B


def test_toy_plan_with_lora_trains_only_the_adapters_and_keeps_no_reference_copy():
    # rank 2 x 2 layers x (9 x 10 + 2 x 5 + 3 x 30) = 760 adapter params; shard = (800 + 760) / 4 = 390
    assert lora_params(TOY, 2) == 760
    plan = memory_plan(TOY, RunShape(**{**RUN.__dict__, "lora_rank": 2}))
    # actor 390 x 4 B; AdamW on the adapters' shard 190 x 8 B; the reference is the base: 0 B
    trainer = {"actor params (shard)": 1560, "optimizer state (shard)": 1520, "reference (shard)": 0}
    assert plan["rollout"] == {**trainer, "engine weights": 1600, "engine KV cache": 3400}
    assert plan["training"]["gradients (shard)"] == 760  # 190 x 4 B
    assert {k: plan["training"][k] for k in trainer} == trainer


def test_lora_params_counts_what_inject_lora_adds(tiny_qwen2):
    from longrl.config import LoraConfig
    from longrl.models.adapter import adapter_for
    from longrl.models.lora import inject_lora

    model = inject_lora(adapter_for("qwen2").load(str(tiny_qwen2), torch.float32), LoraConfig(rank=4, alpha=8))
    hf = model.config
    shape = ModelShape("tiny", 0, hf.num_hidden_layers, hf.hidden_size, hf.vocab_size, hf.num_key_value_heads,
                       hf.head_dim, hf.tie_word_embeddings, hf.intermediate_size)
    assert lora_params(shape, 4) == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_docs_memory_md_holds_the_tables_the_function_computes():
    text = DOC.read_text()
    for model, run in ((QWEN2_5_3B, RunShape()), (QWEN2_5_7B, RunShape()), (QWEN2_5_7B, RunShape(lora_rank=64))):
        assert markdown_table(model, run) in text, "regenerate docs/memory.md: python -m longrl.workers.memory_plan"


def test_a_7b_model_fits_every_phase_on_80_gb():
    for phase, parts in memory_plan(QWEN2_5_7B).items():
        assert sum(parts.values()) < 70 * 10 ** 9, phase  # a 10 GB margin for what the plan does not model
