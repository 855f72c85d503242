"""The one place that decides cuda+nccl or cpu+gloo. Nothing else calls `.cuda()`."""

from __future__ import annotations

import os

import torch


def device_type() -> str:
    """'cuda' where a GPU is visible, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def device() -> torch.device:
    """This process's device (its local GPU, or the CPU)."""
    if device_type() == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def backend() -> str:
    """torch.distributed backend for this device."""
    return "nccl" if device_type() == "cuda" else "gloo"


def init_distributed() -> tuple[int, int]:
    """Join the world described by RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT; returns (rank, world)."""
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device_type() == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend(), rank=rank, world_size=world)
    return rank, world


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """Config dtype name (fp32/bf16/fp16) to torch dtype."""
    return DTYPES[name]


def vllm_dtype(name: str) -> str:
    """Config dtype name to vLLM's dtype string."""
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[name]
