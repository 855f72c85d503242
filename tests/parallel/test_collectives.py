"""Scalar collectives go through one helper that places them on the backend's device (NCCL takes CUDA only)."""

from __future__ import annotations

import ast
import datetime
import os
import socket
from pathlib import Path

import torch

from longrl.parallel.collectives import all_reduce_scalar, all_reduce_tensor

PACKAGE = Path(__file__).resolve().parents[2] / "longrl"
COLLECTIVES = {"all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter", "broadcast", "all_to_all_single",
               "all_gather_object", "broadcast_object_list"}


def _direct_collective_calls(path: Path) -> list[str]:
    """`dist.<collective>(...)` calls in a file, as 'file:line name'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in COLLECTIVES \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "dist":
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.func.attr}")
    return found


def test_no_module_outside_parallel_calls_a_collective_directly():
    # update.py's loss units and statistics, vision_cache's max over ranks were CPU tensors reduced in place:
    # fine under gloo, a crash under NCCL
    calls = [c for path in sorted(PACKAGE.rglob("*.py")) if path.parent.name != "parallel"
             for c in _direct_collective_calls(path)]
    assert calls == []


def test_outside_a_process_group_the_helpers_return_their_input():
    t = torch.tensor([1.5, 2.0])
    assert all_reduce_tensor(t) is t
    assert all_reduce_scalar(3.25) == 3.25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
    try:
        units = torch.tensor(3.0 + rank)  # a CPU tensor, as loss_units builds it
        out = {"sum": all_reduce_scalar(0.25 + rank), "max": all_reduce_scalar(5 - 3 * rank, "max"),
               "tensor": all_reduce_tensor(units), "input_kept": units.clone()}
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_scalars_and_small_tensors_are_reduced_over_a_gloo_world_of_two(tmp_path):
    torch.multiprocessing.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt")
        assert out["sum"] == 1.5  # 0.25 + 1.25
        assert out["max"] == 5.0  # max(5, 2)
        assert out["tensor"].item() == 7.0 and out["tensor"].device.type == "cpu"  # 3 + 4, back on the caller's device
        assert out["input_kept"].item() == 3.0 + rank  # the caller's tensor is not modified in place
