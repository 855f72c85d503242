"""Ulysses sequence parallelism: split one long sequence over the ranks of an SP group.

Outside attention every rank holds a slice of the sequence (all heads); inside attention an all-to-all gives
each rank the whole sequence for a slice of the heads, and a second all-to-all goes back
(DeepSpeed-Ulysses, https://arxiv.org/abs/2309.14509). The world is dp x sp: consecutive ranks form one SP
group and receive the same part of the batch (see controller/dispatch.py `split_for_ranks`).

Gradient convention: every collective here has the exact autograd of the distributed program, i.e. the
gradient of the SUM of the losses of all ranks. When the ranks of an SP group compute the same loss from
gathered outputs, the parameter gradients summed over the group are sp x the single-rank gradient, and
FSDP's average over the world (dp x sp ranks) gives back exactly the sp=1 gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from longrl.config import ConfigError


@dataclass(frozen=True)
class SPGroup:
    """This rank's sequence-parallel group: its `rank` inside the group, the group `size`, the process group."""

    rank: int
    size: int
    group: dist.ProcessGroup | None  # None only for size 1 (no collectives are issued)


def init_sp_groups(sp_size: int) -> SPGroup:
    """Split the world into groups of `sp_size` consecutive ranks; returns this rank's (a collective call)."""
    if not dist.is_initialized():
        if sp_size != 1:
            raise ConfigError(f"worker.actor.ulysses_size={sp_size} needs torch.distributed to be initialised "
                              f"with a world of a multiple of {sp_size} ranks")
        return SPGroup(0, 1, None)
    world, rank = dist.get_world_size(), dist.get_rank()
    if sp_size < 1 or world % sp_size:
        raise ConfigError(f"worker.actor.ulysses_size={sp_size} must divide the world size {world}; "
                          f"choose one of {[d for d in range(1, world + 1) if world % d == 0]}")
    mine = None
    for start in range(0, world, sp_size):  # every rank must create every group, in the same order
        group = dist.new_group(list(range(start, start + sp_size)))
        if start <= rank < start + sp_size:
            mine = group
    return SPGroup(rank % sp_size, sp_size, mine)


# ---- all-to-all: sequence-sharded <-> head-sharded ---------------------------------------------------------------


def _all_to_all(x: torch.Tensor, sp: SPGroup, scatter_dim: int, gather_dim: int) -> torch.Tensor:
    """Cut `x` into sp pieces along scatter_dim, send piece j to rank j, join what arrives along gather_dim."""
    pieces = torch.stack(x.chunk(sp.size, dim=scatter_dim)).contiguous()  # [sp, ...piece]
    received = torch.empty_like(pieces)
    dist.all_to_all_single(received, pieces, group=sp.group)
    return torch.cat(received.unbind(0), dim=gather_dim)


class _AllToAll(torch.autograd.Function):
    """The gradient of an all-to-all is the all-to-all back (it only moves data between ranks)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sp: SPGroup, scatter_dim: int, gather_dim: int) -> torch.Tensor:
        ctx.sp, ctx.scatter_dim, ctx.gather_dim = sp, scatter_dim, gather_dim
        return _all_to_all(x, sp, scatter_dim, gather_dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _all_to_all(grad, ctx.sp, ctx.gather_dim, ctx.scatter_dim), None, None, None


def all_to_all_seq_to_heads(x: torch.Tensor, sp: SPGroup, seq_dim: int = 2, head_dim: int = 1) -> torch.Tensor:
    """[B, H, L/sp, D] (this rank's tokens, all heads) -> [B, H/sp, L, D] (all tokens, this rank's heads)."""
    if sp.size == 1:
        return x
    if x.shape[head_dim] % sp.size:
        raise ValueError(f"{x.shape[head_dim]} heads cannot be split over {sp.size} sequence-parallel ranks")
    return _AllToAll.apply(x, sp, head_dim, seq_dim)


def all_to_all_heads_to_seq(x: torch.Tensor, sp: SPGroup, seq_dim: int = 2, head_dim: int = 1) -> torch.Tensor:
    """[B, H/sp, L, D] -> [B, H, L/sp, D]: the inverse of `all_to_all_seq_to_heads`."""
    if sp.size == 1:
        return x
    if x.shape[seq_dim] % sp.size:
        raise ValueError(f"sequence length {x.shape[seq_dim]} is not a multiple of sp={sp.size}; "
                         "shard inputs with shard_sequence, which pads them")
    return _AllToAll.apply(x, sp, seq_dim, head_dim)


# ---- inputs in, outputs out ----------------------------------------------------------------------------------------


def padded_length(length: int, sp_size: int) -> int:
    """`length` rounded up to a multiple of sp_size (what every rank's slice is cut from)."""
    return -(-length // sp_size) * sp_size


def shard_sequence(t: torch.Tensor, sp: SPGroup, dim: int = 1, pad_value: float = 0,
                   order: torch.Tensor | None = None) -> torch.Tensor:
    """Pad `t` along `dim` to a multiple of sp with `pad_value`, and return this rank's slice.

    The slice is contiguous, or with `order` (a permutation of the padded positions, `balanced_order`) the
    positions order[rank * n: (rank + 1) * n]. Works for any layout: ids/masks [B, L] (dim=1 or -1), M-RoPE
    position ids [3, B, L] (dim=-1), embeddings [B, L, E] (dim=1). Slicing is differentiable: gradient flows
    back to this rank's part only.
    """
    dim = dim % t.dim()
    length = t.shape[dim]
    extra = padded_length(length, sp.size) - length
    if extra:
        pad_shape = list(t.shape)
        pad_shape[dim] = extra
        t = torch.cat([t, t.new_full(pad_shape, pad_value)], dim=dim)
    if sp.size == 1:
        return t
    if order is not None:
        t = t.index_select(dim, order.to(t.device))
    return t.chunk(sp.size, dim=dim)[sp.rank]


def balanced_order(weights: torch.Tensor, sp_size: int) -> torch.Tensor:
    """A permutation of the sp-padded positions whose sp equal slices (`shard_sequence(order=...)`) hold equal
    shares of the weighted positions: [padded_length(L, sp_size)] from `weights` [L] (e.g. how many rows hold a
    media token at each position).

    Weighted positions, heaviest first, are dealt to the ranks in turn (so with 0/1 weights the ranks' counts
    differ by at most one); the other positions fill each slice up to its length, in sequence order, and each
    slice keeps sequence order. Ulysses attention undoes the permutation on the whole sequence it sees, so
    the result is exact whatever the order; only each rank's share of the work changes.
    """
    length = padded_length(weights.shape[0], sp_size)
    w = torch.zeros(length, dtype=weights.dtype, device=weights.device)
    w[: weights.shape[0]] = weights
    heavy = (w > 0).nonzero().squeeze(1)
    heavy = heavy[torch.argsort(w[heavy], descending=True, stable=True)]
    owner = torch.empty(length, dtype=torch.long, device=w.device)
    owner[heavy] = torch.arange(len(heavy), device=w.device) % sp_size
    held = torch.bincount(owner[heavy], minlength=sp_size)
    owner[w <= 0] = torch.repeat_interleave(torch.arange(sp_size, device=w.device), length // sp_size - held)
    return torch.argsort(owner * length + torch.arange(length, device=w.device))


def inverse_order(order: torch.Tensor) -> torch.Tensor:
    """The permutation that puts `order`-permuted positions back in sequence order."""
    return torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))


def _all_gather(t: torch.Tensor, sp: SPGroup, dim: int) -> torch.Tensor:
    parts = [torch.empty_like(t) for _ in range(sp.size)]
    dist.all_gather(parts, t.contiguous(), group=sp.group)
    return torch.cat(parts, dim=dim)


class _GatherSequence(torch.autograd.Function):
    """All-gather along the sequence; backward sums every rank's gradient of the full tensor and keeps our slice."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, sp: SPGroup, dim: int) -> torch.Tensor:
        ctx.sp, ctx.dim = sp, dim
        return _all_gather(t, sp, dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        # each rank's loss may read any position, so our slice's gradient is the sum over ranks
        dist.all_reduce(grad, group=ctx.sp.group)
        return grad.chunk(ctx.sp.size, dim=ctx.dim)[ctx.sp.rank].contiguous(), None, None


def gather_sequence(t: torch.Tensor, sp: SPGroup, dim: int = 1, original_len: int | None = None,
                    order: torch.Tensor | None = None) -> torch.Tensor:
    """Join every rank's slice along `dim` (rank order), undo the `order` the slices were cut by
    (`shard_sequence`), and drop the padding beyond `original_len`."""
    dim = dim % t.dim()
    full = t if sp.size == 1 else _GatherSequence.apply(t, sp, dim)
    if order is not None and sp.size > 1:
        full = full.index_select(dim, inverse_order(order).to(full.device))
    if original_len is not None:
        full = full.narrow(dim, 0, original_len)
    return full
