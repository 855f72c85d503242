"""Collectives on Python scalars and small tensors: the one place that puts them on the backend's device.

NCCL (the CUDA backend) reduces only CUDA tensors; gloo only CPU ones. A statistic built with
`torch.tensor(value)` lives on the CPU, so an `all_reduce` of it works under gloo and fails under NCCL
("No backend type associated with device type cpu"). Everything outside `parallel/` reduces through here,
never with `dist.all_reduce` on a tensor it just made (tests/parallel/test_collectives.py checks this).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from longrl.parallel.device import device

_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def _world(group: dist.ProcessGroup | None) -> int:
    return dist.get_world_size(group) if dist.is_initialized() else 1


def all_reduce_tensor(t: torch.Tensor, op: str = "sum", group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """`t` reduced over the group (a collective), returned on `t`'s own device; `t` itself outside a group."""
    if _world(group) == 1:
        return t
    on_device = t.detach().to(device(), copy=True)
    dist.all_reduce(on_device, op=_OPS[op], group=group)
    return on_device.to(t.device)


def all_reduce_scalar(value: float, op: str = "sum", group: dist.ProcessGroup | None = None) -> float:
    """A Python number reduced over the group (float64 on the wire; a collective)."""
    return float(all_reduce_tensor(torch.tensor(float(value), dtype=torch.float64), op, group))
