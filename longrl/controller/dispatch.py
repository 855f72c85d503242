"""Dispatch modes: how a driver call of a worker verb is spread over the worker group.

A worker method decorated with `@verb(Dispatch.SPLIT_BY_DP)` is called from the driver as
`group.log_probs(batch)`: the batch is padded to a multiple of the data-parallel size,
split into one part per data-parallel rank, and the results are concatenated (and the
padding dropped) in rank order. `Dispatch.SPLIT_SAMPLES` splits the same way, for rows that need not divide by
the data-parallel size (diffusion samples): every row is tagged with its place in the driver's batch
(`ROW_INDEX`, -1 for a padding copy), so a rank can tell which of its rows belong to which of the world's optimizer
steps and which are padding. `Dispatch.ALL` sends the same arguments to every worker.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from longrl.protocol import Batch

F = TypeVar("F", bound=Callable[..., Any])


class Dispatch(enum.Enum):
    ALL = "all"                  # same args to every rank; returns the list of results
    SPLIT_BY_DP = "split_by_dp"  # first arg (a Batch) split over data-parallel ranks
    SPLIT_SAMPLES = "split_samples"  # as SPLIT_BY_DP, each row tagged with its driver-batch row (ROW_INDEX)


ROW_INDEX = "row_index"
"""The column SPLIT_SAMPLES adds: the row's index in the driver's batch, or PADDING for a padding copy."""
PADDING = -1


def verb(mode: Dispatch) -> Callable[[F], F]:
    """Mark a worker method as callable from the driver with the given dispatch mode."""

    def mark(fn: F) -> F:
        fn.__longrl_dispatch__ = mode  # type: ignore[attr-defined]
        return fn

    return mark


def dispatch_mode(cls: type, name: str) -> Dispatch | None:
    return getattr(getattr(cls, name, None), "__longrl_dispatch__", None)


def split_for_ranks(batch: Batch, dp_size: int, sp_size: int, tag: bool = False) -> tuple[list[Batch], int]:
    """One part per rank (ranks of one sequence-parallel group get the same part) + the pad count. Every rank gets
    ceil(rows / dp_size) rows: contiguous runs of the batch, the last ranks' tails padded with copies of its first
    rows. `tag`: add ROW_INDEX (PADDING on the copies)."""
    padded, pad = batch.pad_to_multiple(dp_size)
    if tag:  # on a shallow copy: the driver's batch stays untagged
        padded = Batch(dict(padded.tensors), dict(padded.objects), dict(padded.meta))
        index = torch.arange(len(padded))
        index[len(batch):] = PADDING
        padded[ROW_INDEX] = index
    parts = padded.chunk(dp_size)
    return [parts[rank // sp_size] for rank in range(dp_size * sp_size)], pad


def collect_from_ranks(results: list[Any], sp_size: int, pad: int, rows: int) -> Any:
    """Concatenate Batch results of one rank per data-parallel group, without the padding's results; other
    results come back as a list. `rows`: the padded input's size.

    A verb may return k rows per input row, in input order (generate: n responses per prompt), so the
    `pad` padding rows at the end of the input are the last `pad * k` result rows.
    """
    firsts = results[::sp_size]
    if firsts and all(isinstance(r, Batch) for r in firsts):
        merged = Batch.concat(firsts)
        if len(merged) % rows:
            raise RuntimeError(f"a verb returned {len(merged)} rows for {rows} input rows; it must return the same "
                               f"number of rows for every input row, in input order")
        per_row = len(merged) // rows
        merged.tensors.pop(ROW_INDEX, None)  # the dispatch's tag, not a result
        return merged.index(range(len(merged) - pad * per_row)) if pad else merged
    return firsts
