"""GPU or CPU is decided from the Ray cluster's resources; each GPU worker uses the GPU Ray assigned it."""

from __future__ import annotations

import pytest

from longrl.config import ConfigError
from longrl.parallel.device import cuda_device_index, resolve_device


def test_auto_trains_on_cuda_when_the_cluster_has_gpus_even_if_the_driver_has_none():
    # the driver (a CPU-only head node) is not asked: only the cluster's GPU count decides
    assert resolve_device("auto", 8.0) == "cuda"
    assert resolve_device("auto", 0.0) == "cpu"


def test_cpu_is_honoured_on_a_gpu_cluster():
    assert resolve_device("cpu", 8.0) == "cpu"


def test_cuda_on_a_cluster_without_gpus_is_an_error_that_says_what_was_found():
    with pytest.raises(ConfigError, match=r"trainer.device=cuda.*GPU=0.*trainer.device=cpu"):
        resolve_device("cuda", 0.0)
    assert resolve_device("cuda", 2.0) == "cuda"


def test_a_ray_gpu_worker_uses_its_only_visible_gpu_whatever_its_local_rank():
    # Ray sets CUDA_VISIBLE_DEVICES to the one GPU it assigned: rank 5 of a node sees it as device 0
    assert cuda_device_index(local_rank=5, visible=1) == 0
    assert cuda_device_index(local_rank=0, visible=1) == 0


def test_a_launcher_showing_every_gpu_uses_local_rank_and_refuses_one_beyond_them():
    assert cuda_device_index(local_rank=3, visible=8) == 3
    with pytest.raises(RuntimeError, match="LOCAL_RANK=9 but this process sees 8 GPUs"):
        cuda_device_index(local_rank=9, visible=8)


def test_the_reference_defaults_to_bf16_on_gpu_and_fp32_on_cpu_unless_set(monkeypatch):
    import torch

    from longrl.parallel.device import DEVICE_ENV, param_dtype

    monkeypatch.setenv(DEVICE_ENV, "cuda")  # what the driver tells a GPU worker
    assert param_dtype(None, gpu_default="bf16") == torch.bfloat16
    assert param_dtype("fp32", gpu_default="bf16") == torch.float32  # an explicit setting wins
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert param_dtype(None, gpu_default="bf16") == torch.float32
    assert param_dtype("bf16", gpu_default="bf16") == torch.bfloat16
