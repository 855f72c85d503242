"""What one GPU holds in each phase of a hybrid-engine step, in bytes (docs/memory.md is this function's table).

The phases are those of `workers/lifecycle.py`. Per GPU, with the world of `world` GPUs sharding the actor and
the reference with FSDP (full shard) and each GPU running its own rollout engine (tensor_parallel_size=1):

    rollout    actor params + optimizer state (shards), reference (shard), engine weights (whole model, rollout
               dtype), engine KV cache (what `gpu_memory_utilization` leaves after the engine's weights)
    sync       actor + optimizer + reference shards, engine weights, one bucket of gathered weights in the rollout
               dtype, and the largest parameter gathered whole in fp32 before it is cast
    training   actor params + gradients + optimizer state (shards), reference (shard), two decoder layers gathered
               in the compute dtype (FSDP prefetches the next), checkpointed layer inputs of one micro-batch, and
               one chunk of fp32 logits with its gradient. The engine is asleep: 0 bytes on the GPU.

Activations inside one layer's recomputation and allocator fragmentation are not modelled; keep a margin.
"""

from __future__ import annotations

import dataclasses

GB = 10 ** 9


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """What the memory plan needs to know about a decoder."""

    name: str
    params: int
    layers: int
    hidden: int
    vocab: int
    kv_heads: int
    head_dim: int
    tied_embeddings: bool
    intermediate: int  # the MLP's width: LoRA adapters on its gate, up and down projections


QWEN2_5_3B = ModelShape("Qwen2.5-3B", 3_085_938_688, 36, 2048, 151_936, 2, 128, True, 11_008)
QWEN2_5_7B = ModelShape("Qwen2.5-7B", 7_615_616_512, 28, 3584, 152_064, 4, 128, False, 18_944)


def lora_params(model: ModelShape, rank: int) -> int:
    """Adapter parameters of worker.actor.model.lora.rank on every linear layer of the decoder ("all-linear"):
    rank x (inputs + outputs) per projection: q and o (hidden, hidden), k and v (hidden, KV width), gate and up
    (hidden, intermediate), down (intermediate, hidden)."""
    kv = model.kv_heads * model.head_dim
    return rank * model.layers * (9 * model.hidden + 2 * kv + 3 * model.intermediate)


@dataclasses.dataclass(frozen=True)
class RunShape:
    """The run's settings that size memory (defaults: one 8 x 80 GB node, the 1-hour example's lengths)."""

    world: int = 8
    gpu_bytes: int = 80 * GB
    gpu_memory_utilization: float = 0.6
    micro_batch: int = 4
    seq_len: int = 8192
    logits_chunk: int = 1024
    bucket_mb: int = 512
    actor_bytes: int = 4   # fp32 master weights (worker.actor.fsdp.torch_dtype)
    compute_bytes: int = 2  # bf16 compute (mp_param_dtype), the reference (GPU default) and the rollout engine
    lora_rank: int = 0  # worker.actor.model.lora.rank: only adapters train; the reference is the base, no copy


def memory_plan(model: ModelShape, run: RunShape = RunShape()) -> dict[str, dict[str, int]]:
    """Bytes resident on one GPU, per phase ("rollout", "sync", "training") and component."""
    adapters = lora_params(model, run.lora_rank)
    shard = (model.params + adapters) // run.world
    trained = adapters // run.world if run.lora_rank else shard  # what holds gradients and AdamW state
    engine_weights = model.params * run.compute_bytes  # LoRA: merged into the base before the sync
    layer = (model.params - model.vocab * model.hidden * (1 if model.tied_embeddings else 2)) // model.layers
    trainer = {"actor params (shard)": shard * run.actor_bytes,
               "optimizer state (shard)": 2 * trained * 4,  # AdamW exp_avg + exp_avg_sq, fp32
               "reference (shard)": 0 if run.lora_rank else shard * run.compute_bytes}
    kv = int(run.gpu_memory_utilization * run.gpu_bytes) - engine_weights
    return {
        "rollout": {**trainer, "engine weights": engine_weights, "engine KV cache": max(kv, 0)},
        "sync": {**trainer, "engine weights": engine_weights, "bucket": run.bucket_mb * 2 ** 20,
                 "largest parameter, fp32": model.vocab * model.hidden * 4},
        "training": {**trainer, "gradients (shard)": trained * 4,
                     "gathered layers": 2 * layer * run.compute_bytes,
                     "checkpointed activations": model.layers * run.micro_batch * run.seq_len * model.hidden
                     * run.compute_bytes,
                     "logits chunk + grad, fp32": 2 * run.micro_batch * run.logits_chunk * model.vocab * 4},
    }


def kv_cache_tokens(model: ModelShape, kv_bytes: int, run: RunShape = RunShape()) -> int:
    """Tokens the engine's KV cache holds: K and V of every layer per token."""
    return kv_bytes // (2 * model.layers * model.kv_heads * model.head_dim * run.compute_bytes)


def markdown_table(model: ModelShape, run: RunShape = RunShape()) -> str:
    """The plan as the table in docs/memory.md (GB = 10^9 bytes)."""
    plan = memory_plan(model, run)
    lora = f", LoRA rank {run.lora_rank}" if run.lora_rank else ""
    lines = [f"#### {model.name} on {run.world} x {run.gpu_bytes // GB} GB{lora}", "",
             "| phase | component | GB |", "|---|---|---:|"]
    for phase, parts in plan.items():
        for component, nbytes in parts.items():
            lines.append(f"| {phase} | {component} | {nbytes / GB:.2f} |")
        lines.append(f"| **{phase}** | **total** | **{sum(parts.values()) / GB:.2f}** |")
    kv = plan["rollout"]["engine KV cache"]
    lines += ["", f"KV cache: {kv_cache_tokens(model, kv, run):,} tokens per GPU."]
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join([*(markdown_table(m) for m in (QWEN2_5_3B, QWEN2_5_7B)),
                       markdown_table(QWEN2_5_7B, RunShape(lora_rank=64))]))
