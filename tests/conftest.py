"""Shared fixtures: tiny models and data built once per test session (there is no model hub here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Engines run in the test process or in Ray workers; both read these at import time.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# vLLM's sampler torch.compiles a small op (batched_count_greater_than) in every engine: an inductor compile of
# 4-15 s per engine on 2 loaded cores, in each of the suite's many engine start-ups, for a result eager mode gives
# equally (longrl itself compiles nothing). Ray workers and the example scripts' subprocesses inherit this.
os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")
# No hub here: a hub id fails at once instead of after network retries (the error path is what tests check).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    """A tiny random-init Qwen2 checkpoint directory with its tokenizer."""
    from longrl.models.tiny import build_qwen2

    return build_qwen2(tmp_path_factory.mktemp("tiny") / "qwen2")


@pytest.fixture(scope="session")
def math_data(tmp_path_factory) -> dict[str, Path]:
    """The synthetic arithmetic set (train.jsonl, val.jsonl)."""
    from longrl.data.synthetic import write_math_dataset

    return write_math_dataset(tmp_path_factory.mktemp("data") / "math", n_train=64, n_val=8)
