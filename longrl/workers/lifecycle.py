"""The device and memory lifecycle of the hybrid worker's rollout engine, in one place.

One GPU holds the FSDP actor (+ reference, optimizer state) and a rollout engine. They take turns:

    rollout phase  (`with lifecycle.rollout_mode() as engine:`)
        wake the engine's weights -> stream the actor's weights in, if they changed -> wake its KV cache
        -> generate -> sleep (level 1: weights to CPU, KV cache dropped) -> free cached GPU blocks
    training phases (`with lifecycle.train_mode():` log-probs, values, updates)
        the engine is asleep; cached blocks are freed after the phase so the engine can wake into them

Weights move parameter by parameter (a collective: every rank gathers each FSDP parameter in the same
order), in the rollout dtype, in buckets of `worker.rollout.sync_bucket_mb`: the engine consumes them as a
stream and a bucket is dropped once consumed, so no full copy of the model ever exists on a device. On
CPU the engines' sleep and wake are no-ops and the same code runs (the CPU e2e tests go through here).
See docs/memory.md for what is resident in each phase.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch

from longrl.parallel.device import device_memory_used, empty_cache
from longrl.workers.rollout import RolloutEngine

logger = logging.getLogger(__name__)

NamedTensors = Iterable[tuple[str, torch.Tensor]]


def weight_buckets(named: NamedTensors, dtype: torch.dtype, bucket_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """`named` tensors in `dtype` (floating ones), grouped into lists of at most `bucket_bytes` (a tensor larger
    than that is a bucket of its own). Lazy: the source is read only as far as the bucket being filled."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named:
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


class EngineLifecycle:
    """Owns sleep/wake, weight streaming, cache resets and freeing memory for one rank's rollout engine.

    `generates=False` on the ranks that do not generate (followers of a sequence-parallel group): their engine
    exists (creating one is a collective over the world: vLLM makes its process groups there) but sleeps for
    good; they still take part in every weight gather, which is a collective too. `weights` yields the actor's
    full parameters by name.
    """

    def __init__(self, engine: RolloutEngine | None, weights: Callable[[], NamedTensors], dtype: torch.dtype,
                 bucket_mb: int, generates: bool = True):
        self.engine, self.weights, self.dtype = engine, weights, dtype
        self.active = engine if generates else None  # the engine that wakes, loads weights and generates
        self.bucket_bytes = bucket_mb * 2 ** 20
        self.stale = False  # the engine loaded the same checkpoint from disk
        self.asleep = False
        self.stats: dict[str, float] = {}

    def weights_changed(self) -> None:
        """The actor was updated (or restored): stream its weights in before the next generation."""
        self.stale = True

    @contextmanager
    def rollout_mode(self) -> Iterator[RolloutEngine | None]:
        """The engine awake with the actor's current weights inside the block; asleep again after it."""
        if self.asleep and self.active is not None:
            self.engine.wake_up(["weights"])  # weights first: the KV cache wakes after the new weights are in
        if self.stale:
            self._sync_weights()
        if self.asleep and self.active is not None:
            self.engine.wake_up(["kv_cache"])
        if self.active is not None:
            self.asleep = False
        try:
            yield self.active
        finally:
            self._record_memory("mem_awake_bytes")
            self._sleep()
            self._record_memory("mem_asleep_bytes")

    @contextmanager
    def train_mode(self) -> Iterator[None]:
        """The engine asleep inside the block; blocks the phase cached but no longer uses are freed after it."""
        self._sleep()
        try:
            yield
        finally:
            empty_cache()

    def take_stats(self) -> dict[str, float]:
        """Counts and seconds since the last call: generate_calls, weight_syncs, weight_sync_s, weight_sync_bytes,
        sleeps."""
        stats, self.stats = self.stats, {}
        return stats

    def count(self, key: str, value: float = 1.0) -> None:
        self.stats[key] = self.stats.get(key, 0.0) + value

    def _record_memory(self, key: str) -> None:
        used = device_memory_used()
        if used:  # GPU only
            self.stats[key] = max(self.stats.get(key, 0.0), float(used))

    def _sleep(self) -> None:
        if not self.asleep:
            if self.engine is not None:
                self.engine.sleep()
            self.asleep = True
            self.count("sleeps")
        empty_cache()

    def _sync_weights(self) -> None:
        start, moved = time.perf_counter(), 0

        def stream() -> Iterator[tuple[str, torch.Tensor]]:
            nonlocal moved
            for bucket in weight_buckets(self.weights(), self.dtype, self.bucket_bytes):
                moved += sum(t.numel() * t.element_size() for _, t in bucket)
                yield from bucket
                del bucket  # consumed: the engine copied it into its own weights

        tensors = stream()
        if self.active is not None:
            self.active.load_weights(tensors)
        for _ in tensors:  # whatever the engine did not read (or all of it, without an engine): the gathers are
            pass           # collectives, every rank runs them all
        self.stale = False
        self.count("weight_syncs")
        self.count("weight_sync_s", time.perf_counter() - start)
        self.count("weight_sync_bytes", moved)
        logger.debug("weights streamed to the rollout engine: %.1f MB in %.2f s", moved / 2 ** 20,
                     time.perf_counter() - start)


def reduce_engine_stats(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """The driver's step metrics from every rank's `take_stats`: the slowest rank's weight-sync seconds and the
    bytes one engine received (every generating rank receives the same model)."""
    out = {"timing_s/weight_sync": max((s.get("weight_sync_s", 0.0) for s in per_rank), default=0.0),
           "perf/weight_sync_mb": max((s.get("weight_sync_bytes", 0.0) for s in per_rank), default=0.0) / 2 ** 20}
    for key, name in (("mem_awake_bytes", "perf/gpu_mem_awake_gb"), ("mem_asleep_bytes", "perf/gpu_mem_asleep_gb")):
        if any(key in s for s in per_rank):  # GPU runs: device memory in use at the end of a rollout, after sleep
            out[name] = max(s.get(key, 0.0) for s in per_rank) / 10 ** 9
    return out
