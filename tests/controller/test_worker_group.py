"""The single controller on a real local Ray cluster: dispatch, and failures that never hang the driver."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest
import ray
import torch

from longrl.controller.dispatch import Dispatch, collect_from_ranks, split_for_ranks, verb
from longrl.controller.worker_group import ClusterResourceError, ResourcePool, WorkerError, WorkerGroup, init_ray
from longrl.protocol import Batch


# Ray workers cannot import this test module by name: ship its classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class EchoWorker:
    """Joins the gloo world; verbs that show what each rank received."""

    def __init__(self) -> None:
        from longrl.parallel.device import init_distributed

        self.rank, self.world = init_distributed()

    @verb(Dispatch.ALL)
    def whoami(self) -> tuple[int, int]:
        return self.rank, self.world

    @verb(Dispatch.SPLIT_BY_DP)
    def double(self, batch: Batch) -> Batch:
        return Batch({"x": batch["x"] * 2, "rank": torch.full((len(batch),), self.rank)})

    @verb(Dispatch.ALL)
    def fail_on_rank_one(self) -> None:
        import torch.distributed as dist

        if self.rank == 1:
            raise ValueError("rank one broke on purpose")
        dist.barrier()  # rank 0 waits for a peer that will never come

    @verb(Dispatch.ALL)
    def nap_then_barrier(self, seconds: float) -> None:
        import torch.distributed as dist

        time.sleep(seconds)
        dist.barrier()

    def not_a_verb(self) -> None:
        pass


@pytest.fixture(scope="module")
def cluster():
    init_ray(None, num_cpus=4)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(cluster):
    """Two worker slots, reused by each test's group in turn (a stopped group frees them)."""
    return ResourcePool(1, 2, use_gpu=False)


def test_split_pads_to_the_data_parallel_size_and_collect_drops_the_padding():
    batch = Batch({"x": torch.arange(5)})
    parts, pad = split_for_ranks(batch, dp_size=2, sp_size=2)
    # 5 rows -> 6 (row 0 repeated), 3 per dp rank; both ranks of an SP group get the same part
    assert pad == 1 and [p["x"].tolist() for p in parts] == [[0, 1, 2], [0, 1, 2], [3, 4, 0], [3, 4, 0]]
    merged = collect_from_ranks(parts, sp_size=2, pad=pad, rows=6)
    assert merged["x"].tolist() == [0, 1, 2, 3, 4]


def test_collect_drops_every_result_row_of_the_padding_when_a_verb_returns_n_rows_per_input_row():
    batch = Batch({"x": torch.arange(3)})
    parts, pad = split_for_ranks(batch, dp_size=2, sp_size=1)
    # 3 prompts -> 4 (prompt 0 repeated); each rank samples n=2 responses per prompt, as generate does
    results = [part.repeat(2) for part in parts]  # [0, 0, 1, 1], [2, 2, 0, 0]
    merged = collect_from_ranks(results, sp_size=1, pad=pad, rows=4)
    assert merged["x"].tolist() == [0, 0, 1, 1, 2, 2]  # the padding copy's 2 responses are gone


def test_split_samples_tags_each_row_with_its_place_and_copies_as_padding_leaving_the_drivers_batch_untagged():
    from longrl.controller.dispatch import PADDING, ROW_INDEX

    batch = Batch({"x": torch.arange(10, 15)})
    parts, pad = split_for_ranks(batch, dp_size=4, sp_size=1, tag=True)
    # 5 samples on 4 ranks: 2 each, the last 3 rows copies of rows 0-2
    assert pad == 3 and [p["x"].tolist() for p in parts] == [[10, 11], [12, 13], [14, 10], [11, 12]]
    assert [p[ROW_INDEX].tolist() for p in parts] == [[0, 1], [2, 3], [4, PADDING], [PADDING, PADDING]]
    assert ROW_INDEX not in batch
    merged = collect_from_ranks(parts, sp_size=1, pad=pad, rows=8)
    assert merged["x"].tolist() == [10, 11, 12, 13, 14] and ROW_INDEX not in merged
    even, _ = split_for_ranks(Batch({"x": torch.arange(4)}), dp_size=2, sp_size=1, tag=True)
    assert [p[ROW_INDEX].tolist() for p in even] == [[0, 1], [2, 3]]


@pytest.mark.e2e
def test_group_calls_every_rank_and_splits_batches(pool):
    group = WorkerGroup(EchoWorker, pool, sp_size=1, env={}, call_timeout_s=120)
    try:
        assert group.whoami() == [(0, 2), (1, 2)]
        out = group.double(Batch({"x": torch.arange(3)}))
        assert out["x"].tolist() == [0, 2, 4] and out["rank"].tolist() == [0, 0, 1]
        with pytest.raises(AttributeError, match="not a worker verb"):
            group.not_a_verb()
    finally:
        group.shutdown()


@pytest.mark.e2e
def test_a_worker_that_raises_surfaces_its_traceback_and_the_driver_does_not_hang(pool):
    group = WorkerGroup(EchoWorker, pool, sp_size=1, env={}, call_timeout_s=120)
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"rank 1 \(node .*\) failed while running fail_on_rank_one(.|\n)*"
                                          r"rank one broke on purpose"):
        group.fail_on_rank_one()
    assert time.monotonic() - start < 30


@pytest.mark.e2e
def test_asking_for_more_slots_than_the_cluster_has_names_what_is_missing(cluster):
    with pytest.raises(ClusterResourceError, match=r"missing 1 node\(s\) with \{'CPU': 40.0\}"):
        ResourcePool(1, 40, use_gpu=False, timeout_s=5)


def _gone(pids: list[int], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.2)
    return False


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.e2e
def test_a_worker_killed_mid_verb_is_named_with_its_node_and_the_verb_and_the_group_is_stopped(pool):
    group = WorkerGroup(EchoWorker, pool, sp_size=1, env={}, call_timeout_s=120)
    pids = [w["pid"] for w in group.placement]
    node = group.placement[1]["node_ip"]
    threading.Timer(1.0, os.kill, (pids[1], signal.SIGKILL)).start()
    start = time.monotonic()
    with pytest.raises(WorkerError, match=rf"worker rank 1 \(node {node} \w{{8}}, pid {pids[1]}\) died "
                                          rf"\(its process exited\) while running nap_then_barrier"):
        group.nap_then_barrier(10.0)
    assert time.monotonic() - start < 15  # well inside call_timeout_s=120: a death is noticed, not waited out
    assert _gone(pids, within_s=10), "rank 0 outlived its group"


@pytest.mark.e2e
def test_a_verb_that_outlives_the_timeout_names_each_rank_and_stops_the_group(pool):
    group = WorkerGroup(EchoWorker, pool, sp_size=1, env={}, call_timeout_s=2)
    pids = [w["pid"] for w in group.placement]
    start = time.monotonic()
    with pytest.raises(WorkerError, match=rf"worker rank 0 \(node .*pid {pids[0]}\), rank 1 \(node .*pid "
                                          rf"{pids[1]}\) did not finish nap_then_barrier within 2 s "
                                          rf"\(trainer.worker_timeout_s\)"):
        group.nap_then_barrier(60.0)
    assert time.monotonic() - start < 10
    assert _gone(pids, within_s=10)
