"""The one place that decides cuda+nccl or cpu+gloo. Nothing else calls `.cuda()`.

The driver decides GPU or CPU from the Ray cluster's resources (`resolve_device`), not from its own
`torch.cuda.is_available()`: a CPU-only head node (SLURM, `ray start` then attach) drives GPU workers.
It tells the workers through DEVICE_ENV; a worker asked for CUDA that sees no GPU is an error, never a
silent CPU run.
"""

from __future__ import annotations

import os

import torch

from longrl.config import ConfigError

DEVICE_ENV = "LONGRL_DEVICE"
"""Set by the driver for every worker: 'cuda' or 'cpu'."""


def resolve_device(requested: str, cluster_gpus: float) -> str:
    """'cuda' or 'cpu' for trainer.device=auto|cuda|cpu on a Ray cluster with `cluster_gpus` GPUs in total.
    auto: cuda when the cluster has GPUs."""
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" and cluster_gpus <= 0:
        raise ConfigError("trainer.device=cuda, but the Ray cluster has no GPU resources (ray.cluster_resources() "
                          "shows GPU=0): start the worker nodes with their GPUs (`ray start --num-gpus=N`, or "
                          "check CUDA_VISIBLE_DEVICES and the driver), or set trainer.device=cpu")
    if requested not in ("auto", "cuda"):
        raise ConfigError(f"trainer.device={requested!r} is unknown; choose from ['auto', 'cpu', 'cuda']")
    return "cuda" if cluster_gpus > 0 else "cpu"


def cuda_device_index(local_rank: int, visible: int) -> int:
    """This process's CUDA device among the `visible` ones. A Ray GPU actor sees only the GPU Ray assigned it
    (Ray sets CUDA_VISIBLE_DEVICES), so it is device 0 whatever its LOCAL_RANK; a launcher that shows
    every GPU of the node (torchrun) uses LOCAL_RANK."""
    if visible == 1:
        return 0
    if 0 <= local_rank < visible:
        return local_rank
    raise RuntimeError(f"LOCAL_RANK={local_rank} but this process sees {visible} GPUs "
                       f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}): give each worker one GPU, "
                       f"or run at most {visible} workers on this node")


def device_type() -> str:
    """'cuda' or 'cpu': what the driver decided (DEVICE_ENV), else 'cuda' where a GPU is visible."""
    decided = os.environ.get(DEVICE_ENV)
    if decided:
        return decided
    return "cuda" if torch.cuda.is_available() else "cpu"


def device() -> torch.device:
    """This process's device (its local GPU, or the CPU)."""
    if device_type() == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def empty_cache() -> None:
    """Return the blocks torch's CUDA allocator cached but no longer uses to the device (no-op on CPU), so the
    next phase (the rollout engine waking, or training) can take them."""
    if device_type() == "cuda":
        torch.cuda.empty_cache()


def device_memory_used() -> int:
    """Bytes in use on this process's GPU, whichever allocator holds them (torch's, vLLM's); 0 on CPU."""
    if device_type() != "cuda":
        return 0
    free, total = torch.cuda.mem_get_info()
    return total - free


def backend() -> str:
    """torch.distributed backend for this device."""
    return "nccl" if device_type() == "cuda" else "gloo"


def init_distributed() -> tuple[int, int]:
    """Join the world described by RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT; returns (rank, world)."""
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device_type() == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"worker rank {rank} was asked for CUDA ({DEVICE_ENV}=cuda) but sees no GPU "
                               f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); check the node's "
                               f"driver and its Ray GPU resources, or set trainer.device=cpu")
        torch.cuda.set_device(cuda_device_index(int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()))
    if not dist.is_initialized():
        dist.init_process_group(backend(), rank=rank, world_size=world)
    return rank, world


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """Config dtype name (fp32/bf16/fp16) to torch dtype."""
    return DTYPES[name]


def param_dtype(configured: str | None, gpu_default: str) -> torch.dtype:
    """A role's parameter dtype: as configured, else `gpu_default` on GPU and fp32 on CPU (where bf16 matmuls
    are slow and the tests compare against fp32 references)."""
    return torch_dtype(configured or (gpu_default if device_type() == "cuda" else "fp32"))


def vllm_dtype(name: str) -> str:
    """Config dtype name to vLLM's dtype string."""
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[name]
