"""The rollout engine's lifecycle: weights streamed in buckets (never a full copy), sleep around training."""

from __future__ import annotations

import torch

from longrl.config import RolloutConfig
from longrl.workers.lifecycle import EngineLifecycle, reduce_engine_stats, weight_buckets
from longrl.workers.rollout import SamplingSpec, rollout_engine

GREEDY = SamplingSpec(n=1, temperature=0.0, top_p=1.0, top_k=-1, max_tokens=6)


def test_buckets_hold_at_most_the_limit_in_the_rollout_dtype_and_a_larger_tensor_goes_alone():
    named = [("a", torch.ones(10)), ("b", torch.ones(20)), ("c", torch.ones(40)), ("d", torch.ones(5)),
             ("steps", torch.tensor([3]))]
    # bf16: a = 20 B, b = 40 B, c = 80 B, d = 10 B; int64 steps = 8 B stays int64. Limit 64 B:
    # [a, b] = 60; c alone (80 > 64); [d, steps] = 18
    buckets = list(weight_buckets(named, torch.bfloat16, bucket_bytes=64))
    assert [[n for n, _ in b] for b in buckets] == [["a", "b"], ["c"], ["d", "steps"]]
    assert [t.dtype for b in buckets for _, t in b] == [torch.bfloat16] * 4 + [torch.int64]


def test_buckets_read_the_parameters_only_as_far_as_the_bucket_being_filled():
    read = []

    def gathered():  # stands for the FSDP gather, parameter by parameter
        for i in range(6):
            read.append(i)
            yield f"p{i}", torch.ones(8)  # 32 B in fp32

    buckets = weight_buckets(gathered(), torch.float32, bucket_bytes=64)
    assert [n for n, _ in next(buckets)] == ["p0", "p1"]
    assert read == [0, 1, 2]  # p2 was read to find that it does not fit; p3.. are not gathered yet


def test_stale_weights_stream_into_the_engine_at_the_next_rollout_and_the_engine_sleeps_after(tiny_qwen2):
    from transformers import AutoModelForCausalLM

    engine = rollout_engine("hf", str(tiny_qwen2), RolloutConfig(name="hf", dtype="fp32"), max_model_len=64)
    actor = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    with torch.no_grad():
        for p in actor.parameters():
            p.add_(0.5 * torch.randn_like(p))
    lifecycle = EngineLifecycle(engine, lambda: actor.state_dict().items(), torch.float32, bucket_mb=1)

    with lifecycle.rollout_mode() as rollout:  # not stale yet: the engine still has the checkpoint's weights
        before = rollout.generate([[5, 6, 7]], GREEDY, seed=0)[0][0].token_ids
    lifecycle.weights_changed()
    with lifecycle.train_mode():
        assert lifecycle.asleep
    with lifecycle.rollout_mode() as rollout:
        assert not lifecycle.asleep
        after = rollout.generate([[5, 6, 7]], GREEDY, seed=0)[0][0].token_ids
    assert lifecycle.asleep

    expected = actor.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=6, do_sample=False,
                              pad_token_id=actor.config.pad_token_id)[0, 3:].tolist()
    assert after == expected[: len(after)] and after != before
    stats = lifecycle.take_stats()
    state_bytes = sum(t.numel() * 4 for t in actor.state_dict().values())
    assert stats["weight_syncs"] == 1 and stats["weight_sync_bytes"] == state_bytes
    assert stats["sleeps"] == 2  # after each rollout; train_mode found it asleep already
    assert lifecycle.take_stats() == {}


def test_a_rank_that_does_not_generate_still_runs_every_gather_of_the_sync():
    read = []

    def gathered():
        for i in range(3):
            read.append(i)
            yield f"p{i}", torch.ones(4)

    lifecycle = EngineLifecycle(None, gathered, torch.float32, bucket_mb=1, generates=False)
    lifecycle.weights_changed()
    with lifecycle.rollout_mode() as rollout:
        assert rollout is None  # an SP follower samples nothing
    with lifecycle.rollout_mode():
        assert lifecycle.asleep  # and its engine, put to sleep after the first phase, never wakes again
    assert read == [0, 1, 2]  # the gathers are collectives: the other ranks wait for this one's


def test_the_driver_logs_the_slowest_ranks_sync_time_and_one_engines_megabytes():
    per_rank = [{"weight_sync_s": 0.5, "weight_sync_bytes": 3 * 2 ** 20}, {"weight_sync_s": 0.75}, {}]
    assert reduce_engine_stats(per_rank) == {"timing_s/weight_sync": 0.75, "perf/weight_sync_mb": 3.0}


def test_gpu_memory_awake_and_asleep_are_logged_when_ranks_report_them():
    per_rank = [{"mem_awake_bytes": 30e9, "mem_asleep_bytes": 12e9}, {"mem_awake_bytes": 31e9, "mem_asleep_bytes": 11e9}]
    stats = reduce_engine_stats(per_rank)
    assert stats["perf/gpu_mem_awake_gb"] == 31.0 and stats["perf/gpu_mem_asleep_gb"] == 12.0
