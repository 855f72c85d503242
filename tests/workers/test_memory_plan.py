"""The memory plan: hand-worked bytes for a toy shape, and docs/memory.md shows exactly what the function computes."""

from __future__ import annotations

from pathlib import Path

from longrl.workers.memory_plan import (QWEN2_5_3B, QWEN2_5_7B, ModelShape, RunShape, kv_cache_tokens,
                                        markdown_table, memory_plan)

DOC = Path(__file__).resolve().parents[2] / "docs" / "memory.md"
TOY = ModelShape("toy", params=800, layers=2, hidden=10, vocab=20, kv_heads=1, head_dim=5, tied_embeddings=True)
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


def test_docs_memory_md_holds_the_tables_the_function_computes():
    text = DOC.read_text()
    for model in (QWEN2_5_3B, QWEN2_5_7B):
        assert markdown_table(model) in text, "regenerate docs/memory.md: python -m longrl.workers.memory_plan"


def test_a_7b_model_fits_every_phase_on_80_gb():
    for phase, parts in memory_plan(QWEN2_5_7B).items():
        assert sum(parts.values()) < 70 * 10 ** 9, phase  # a 10 GB margin for what the plan does not model
