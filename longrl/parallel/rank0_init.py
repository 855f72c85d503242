"""fsdp.enable_rank0_init (EasyR1's key): one rank reads the checkpoint, the others get its weights by broadcast.

With every rank reading the checkpoint, a node of 8 ranks holds 8 full copies of the model in CPU memory while
loading (and reads the files 8 times). Here rank 0 alone loads the checkpoint; every rank builds the model on
the meta device, shards it with FSDP2 (`fully_shard` takes meta parameters; its device mesh is a collective,
so every rank shards), allocates its own shards (`to_empty`) and fills them from rank 0's full state dict, which
torch.distributed.checkpoint broadcasts tensor by tensor, each rank keeping its shard.

Two things the state dict does not carry are handled here: non-persistent buffers (the rotary embeddings'
`inv_freq`, computed in `__init__` and left as uninitialised memory by `to_empty`) are broadcast from rank 0's
loaded model too; tied weights (lm_head sharing the embedding) stay one parameter through sharding and are
written once per name, with the same values.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

from longrl.parallel.device import device


def load_from_rank0(model: torch.nn.Module, source: torch.nn.Module | None) -> None:
    """Fill the sharded, allocated `model` with rank 0's `source` model (None on every other rank); a collective."""
    if (source is None) != (dist.get_rank() != 0):
        raise ValueError("load_from_rank0: rank 0, and only rank 0, passes the loaded model")
    full = source.state_dict() if source is not None else {}
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    persistent = set(model.state_dict())
    for name, buffer in model.named_buffers():
        if name in persistent:
            continue
        # on the backend's device (NCCL broadcasts CUDA tensors only; an offloaded model's buffers are on the CPU)
        value = source.get_buffer(name) if source is not None else buffer
        wire = value.detach().to(device(), buffer.dtype, copy=True)
        dist.broadcast(wire, src=0)
        with torch.no_grad():
            buffer.copy_(wire)
