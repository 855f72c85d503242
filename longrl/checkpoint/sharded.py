"""Sharded train state (model + optimizer + scheduler + RNG), saved and loaded collectively by every rank.

Model and optimizer go through torch.distributed.checkpoint (DCP): each rank writes only its FSDP2 shards,
and `get_state_dict`/`set_state_dict` give FQNs that do not depend on the wrapping, so the merger can read
the same files without a process group. What DCP does not cover (scheduler, RNG streams, caller extras)
goes to one small `rank_{r}.pt` per rank; exact resume needs the same world size.

Layout under `directory` (e.g. global_step_N.tmp/actor):
    model_optim/         DCP files: keys "model.<fqn>" and "optim.<...>"
    rank_{r}.pt          lr_scheduler state, RNG states (torch cpu/cuda, python, numpy), extra
    huggingface/         config + tokenizer (rank 0), what the merger needs to rebuild the model
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from longrl.parallel.device import device_type

logger = logging.getLogger(__name__)

MODEL_OPTIM_DIR = "model_optim"
HF_DIR = "huggingface"


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _rank_file(directory: Path, rank: int) -> Path:
    return directory / f"rank_{rank}.pt"


def rng_state() -> dict[str, Any]:
    """Every RNG stream a training step may draw from, in a form `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch_cpu": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
    }
    if device_type() == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the streams saved by `rng_state`."""
    torch.set_rng_state(state["torch_cpu"])
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    if "torch_cuda" in state and device_type() == "cuda":
        torch.cuda.set_rng_state(state["torch_cuda"])


def _options(trainable_only: bool) -> StateDictOptions:
    # trainable_only (LoRA): the frozen base is not saved, and loading leaves it as it is (strict=False); dcp.load
    # still fails on a trainable parameter the checkpoint lacks.
    return StateDictOptions(ignore_frozen_params=trainable_only, strict=not trainable_only)


def _model_optim_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                       trainable_only: bool = False) -> dict[str, Any]:
    # optimizers=() gives the model's dict alone (a frozen reference model has no optimizer).
    model_sd, optim_sd = get_state_dict(model, optimizer if optimizer is not None else (),
                                        options=_options(trainable_only))
    if trainable_only:  # ignore_frozen_params keeps a tied frozen alias (lm_head.weight of tied embeddings)
        trained = {name for name, p in model.named_parameters() if p.requires_grad}
        model_sd = {name: t for name, t in model_sd.items() if name in trained}
    return {"model": model_sd, "optim": optim_sd} if optimizer is not None else {"model": model_sd}


def _has_optimizer_state(dcp_dir: Path) -> bool:
    """Whether a DCP directory written by save_train_state holds optimizer tensors ("optim.*" keys)."""
    metadata = dcp.FileSystemReader(str(dcp_dir)).read_metadata()
    return any(key.startswith("optim.") for key in metadata.state_dict_metadata)


def save_train_state(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                     lr_scheduler: Any | None, extra: dict | None = None, trainable_only: bool = False) -> None:
    """Collective: write model+optimizer shards (DCP) and this rank's scheduler/RNG/extra under `directory`;
    optimizer=None saves the model alone (trainer.save_model_only: smaller, but a resume restarts AdamW);
    trainable_only saves the parameters that require grad alone (LoRA adapters)."""
    directory = Path(directory)
    rank, world = _rank_world()
    directory.mkdir(parents=True, exist_ok=True)
    dcp.save(_model_optim_state(model, optimizer, trainable_only), checkpoint_id=directory / MODEL_OPTIM_DIR)
    torch.save({
        "world_size": world,
        "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
        "rng": rng_state(),
        "extra": extra or {},
    }, _rank_file(directory, rank))
    # Every rank's files exist once any rank returns, so whoever commits next sees a complete directory.
    _barrier()
    logger.info("rank %d saved train state to %s", rank, directory)


def load_train_state(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                     lr_scheduler: Any | None, trainable_only: bool = False) -> dict:
    """Collective: restore what `save_train_state` wrote (and this rank's RNG); returns this rank's `extra`.
    trainable_only as it was saved with."""
    directory = Path(directory)
    rank, world = _rank_world()
    rank_file = _rank_file(directory, rank)
    if not rank_file.exists():
        saved = len(list(directory.glob("rank_*.pt")))
        raise FileNotFoundError(
            f"{rank_file} is missing ({saved} rank files in {directory}, world size now {world}): a checkpoint "
            f"resumes exactly only onto the world size it was saved with; pass a checkpoint of this run's "
            f"global_step_N/<role> or restart with the saved world size")
    rank_state = torch.load(rank_file, weights_only=True)
    if rank_state["world_size"] != world:
        raise ValueError(f"{directory} was saved by a world of {rank_state['world_size']} ranks, this one has "
                         f"{world}: RNG and scheduler state are per rank; resume with the same world size")

    if optimizer is not None and not _has_optimizer_state(directory / MODEL_OPTIM_DIR):
        logger.warning("%s holds the model only (trainer.save_model_only=true): the optimizer starts afresh, so "
                       "this resume is not exact", directory)
        optimizer = None
    state = _model_optim_state(model, optimizer, trainable_only)
    dcp.load(state, checkpoint_id=directory / MODEL_OPTIM_DIR)
    set_state_dict(model, optimizer if optimizer is not None else (), model_state_dict=state["model"],
                   optim_state_dict=state.get("optim", {}), options=_options(trainable_only))
    if lr_scheduler is not None:
        lr_scheduler.load_state_dict(rank_state["lr_scheduler"])
    set_rng_state(rank_state["rng"])
    logger.info("rank %d loaded train state from %s", rank, directory)
    return rank_state["extra"]


# Files besides config and tokenizer that a vision-language model directory needs (vLLM reads the
# video processor's size bounds from them); copied from the starting model into every checkpoint.
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json",
                   "chat_template.json", "chat_template.jinja")


def copy_processor_files(model_dir: str | Path, hf_dir: str | Path) -> list[str]:
    """Copy the processor configs of `model_dir` that `hf_dir` lacks; returns the names copied."""
    copied = []
    for name in PROCESSOR_FILES:
        src, dst = Path(model_dir) / name, Path(hf_dir) / name
        if src.is_file() and not dst.exists():
            shutil.copy2(src, dst)
            copied.append(name)
    return copied


def save_hf_metadata(directory: Path, hf_config: Any, tokenizer: Any, generation_config: Any | None = None,
                     source_dir: str | Path | None = None) -> None:
    """Rank 0 writes config (+ generation config) and tokenizer to directory/huggingface, plus the processor
    files of `source_dir` (the model training started from), so a merged checkpoint loads like the original.

    Not collective (no barrier), so it is safe both when every rank calls it and when only rank 0 does.
    """
    rank, _ = _rank_world()
    if rank != 0:
        return
    out = Path(directory) / HF_DIR
    out.mkdir(parents=True, exist_ok=True)
    hf_config.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    if generation_config is not None:
        generation_config.save_pretrained(str(out))
    if source_dir is not None:
        copy_processor_files(source_dir, out)
