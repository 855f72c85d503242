"""Padding-free packing: several sequences laid end to end in one row, without pad tokens.

A packed row carries `cu_seqlens` (cumulative lengths, [n+1], starting at 0) so attention can keep each
sequence to itself, and position ids that restart at 0 for each sequence, so RoPE sees what it would see
on the sequence alone. Outputs of the model come back per sequence with `unpack` / `unpack_to_padded`.

Shapes: n sequences, T = total tokens, L_i = length of sequence i.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Packed:
    """One packed row: `input_ids` [1, T], `position_ids` [1, T] (or [3, 1, T] for M-RoPE), `cu_seqlens` [n+1] int32."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int

    @property
    def lengths(self) -> list[int]:
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).tolist()


def cu_seqlens_of(lengths: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """Cumulative lengths with a leading 0, as flash-attn's varlen kernels take them: [n+1] int32."""
    if any(n <= 0 for n in lengths):
        raise ValueError(f"packed sequences must be non-empty; got lengths {list(lengths)}")
    out = torch.zeros(len(lengths) + 1, dtype=torch.int32, device=device)
    out[1:] = torch.cumsum(torch.tensor(list(lengths), dtype=torch.int32, device=device), 0)
    return out


def pack_sequences(sequences: Sequence[Sequence[int] | torch.Tensor],
                   position_ids: Sequence[torch.Tensor] | None = None,
                   device: torch.device | str | None = None) -> Packed:
    """Lay `sequences` end to end in one row.

    `position_ids`, when given, are each sequence's own ids ([L_i], or [3, L_i] for M-RoPE) and are joined along
    the last dim; by default they are 0..L_i-1 for each sequence.
    """
    lengths = [len(s) for s in sequences]
    cu = cu_seqlens_of(lengths, device)
    ids = torch.cat([torch.as_tensor(s, dtype=torch.long) for s in sequences]).to(device)
    if position_ids is None:
        pos = torch.cat([torch.arange(n) for n in lengths]).to(device)
    else:
        for i, (p, n) in enumerate(zip(position_ids, lengths)):
            if p.shape[-1] != n:
                raise ValueError(f"position_ids[{i}] has {p.shape[-1]} positions for a sequence of {n} tokens")
        pos = torch.cat(list(position_ids), dim=-1).to(device)
    # the batch dim of 1 sits just before the sequence dim, also for [3, T] M-RoPE ids -> [3, 1, T]
    return Packed(ids[None], pos.unsqueeze(-2), cu, max(lengths))


def unpack(x: torch.Tensor, cu_seqlens: torch.Tensor) -> list[torch.Tensor]:
    """Split a packed output [1, T, ...] into one tensor per sequence [L_i, ...] (views)."""
    if x.shape[0] != 1:
        raise ValueError(f"a packed tensor has batch size 1; got shape {tuple(x.shape)}")
    bounds = cu_seqlens.tolist()
    return [x[0, start:end] for start, end in zip(bounds[:-1], bounds[1:])]


def unpack_to_padded(x: torch.Tensor, cu_seqlens: torch.Tensor, pad_value: float = 0) -> torch.Tensor:
    """Packed output [1, T, ...] -> right-padded [n, max L_i, ...] (differentiable)."""
    parts = unpack(x, cu_seqlens)
    return torch.nn.utils.rnn.pad_sequence(parts, batch_first=True, padding_value=pad_value)
