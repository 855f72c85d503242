"""A real 2-process FSDP2 world on CPU (gloo) for the checkpoint tests; run with `run_world`."""

from __future__ import annotations

import datetime
import os
import random
import socket
from pathlib import Path

import numpy as np
import torch

WORLD = 2
LR = 1e-2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build(model_dir: str):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    # lr halves every step, so a scheduler that was not restored changes the weights
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    return model, optimizer, scheduler


def _train_step(model, optimizer, scheduler) -> None:
    # The batch comes from torch's global RNG and the loss scale from python's and numpy's, so an
    # RNG stream that was not restored changes the weights.
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    scale = 1.0 + random.random() + float(np.random.rand())
    loss = model(input_ids=ids, labels=ids).loss * scale
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def _full_weights(model) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _worker(rank: int, port: int, phase: str, model_dir: str, ckpt_dir: str, out_dir: str) -> None:
    import torch.distributed as dist

    from longrl.checkpoint.sharded import load_train_state, save_hf_metadata, save_train_state

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # a collective that one rank skips fails after 60 s instead of hanging the test run
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    out = Path(out_dir)
    try:
        model, optimizer, scheduler = _build(model_dir)
        if phase == "first":
            _seed(100 + rank)
            for _ in range(2):
                _train_step(model, optimizer, scheduler)
            save_train_state(Path(ckpt_dir), model, optimizer, scheduler, extra={"rank": rank, "step": 2})
            from transformers import AutoTokenizer

            if rank == 0:  # as the worker calls it: rank 0 alone, then a barrier of its own
                save_hf_metadata(Path(ckpt_dir), model.config, AutoTokenizer.from_pretrained(model_dir),
                                 model.generation_config)
            dist.barrier()
            saved = _full_weights(model)
            if rank == 0:
                torch.save(saved, out / "w_saved.pt")
        else:
            _seed(999)  # different from the first run: only a restored RNG reproduces its batches
            extra = load_train_state(Path(ckpt_dir), model, optimizer, scheduler)
            torch.save(extra, out / f"extra_{rank}.pt")
        for _ in range(2):
            _train_step(model, optimizer, scheduler)
        weights = _full_weights(model)
        if rank == 0:
            torch.save(weights, out / f"w_{phase}.pt")
    finally:
        dist.destroy_process_group()


def run_world(phase: str, model_dir: Path, ckpt_dir: Path, out_dir: Path) -> None:
    """Spawn WORLD fresh processes running one phase: 'first' (train 2, save, train 2) or 'resume' (load, train 2)."""
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(free_port(), phase, str(model_dir), str(ckpt_dir), str(out_dir)), nprocs=WORLD,
             join=True)
