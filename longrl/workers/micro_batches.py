"""Micro-batches by count or by token budget (dynamic batching, EasyR1's `dynamic_batching`), and rows balanced
by tokens over the data-parallel ranks.

A fixed micro-batch holds `micro_batch_size` rows whatever their lengths: short rows waste the budget a long one
needs, and in a padded forward every row pays for the longest. Dynamic batching packs rows, longest first, into
micro-batches of at most `micro_batch_size` x (the longest row's tokens) tokens, the memory a fixed micro-batch may
take (EasyR1 derives the budget the same way): padding-free forwards count the rows' tokens, padded ones rows x the
longest. The loss stays exact: `minibatch_updates` weights each micro-batch by its share of the mini-batch's tokens
or sequences, whichever rows it holds. Every rank runs as many micro-batches as the rank with the most (FSDP's
parameter gathers are collectives), so a rank with fewer splits its largest ones.

Lengths are what the trainer forwards: prompt ids (media placeholders as written) + valid response tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from longrl.parallel.collectives import all_reduce_scalar
from longrl.protocol import Batch


def row_tokens(batch: Batch) -> list[int]:
    """Tokens of each row's forward: its prompt ids + its valid response tokens."""
    responses = batch["response_mask"].sum(-1).tolist()
    return [len(prompt) + int(n) for prompt, n in zip(batch["prompt_ids"], responses)]


def token_budget_groups(lengths: Sequence[int], budget: int, padded: bool) -> list[list[int]]:
    """Row indices grouped so each group costs at most `budget` tokens (a row longer than that alone): padded
    groups cost rows x their longest (consecutive rows of the longest-first order: the fewest pads), packed ones
    the sum of their rows (first fit, longest first). Each group's indices ascend."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    if padded:
        for i in order:
            if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= budget:
                groups[-1].append(i)
            else:
                groups.append([i])
    else:
        loads: list[int] = []
        for i in order:
            fit = next((g for g, load in enumerate(loads) if load + lengths[i] <= budget), None)
            if fit is None:
                groups.append([i])
                loads.append(lengths[i])
            else:
                groups[fit].append(i)
                loads[fit] += lengths[i]
    return [sorted(g) for g in groups]


def split_to_count(groups: list[list[int]], lengths: Sequence[int], count: int) -> list[list[int]]:
    """`groups` split until there are `count`: the one with the most tokens (of those with 2+ rows) in halves."""
    groups = [list(g) for g in groups]
    if count > sum(len(g) for g in groups):
        raise ValueError(f"cannot make {count} non-empty micro-batches of {sum(len(g) for g in groups)} rows")
    while len(groups) < count:
        k = max((g for g in range(len(groups)) if len(groups[g]) > 1), key=lambda g: sum(lengths[i] for i in groups[g]))
        by_length = sorted(groups[k], key=lambda i: -lengths[i])
        groups[k:k + 1] = [sorted(by_length[0::2]), sorted(by_length[1::2])]  # alternate: halves of like tokens
    return groups


def micro_batches(batch: Batch, size: int, dynamic: bool, padding_free: bool) -> tuple[list[Batch], list[int]]:
    """The micro-batches of `batch` and the batch rows they hold, in their order: contiguous runs of `size` rows,
    or (`dynamic`) rows packed to `size` x the longest row's tokens, each narrowed to its own longest response (a
    micro-batch of many short rows must not carry the batch's full width into [b, R, V] logits). A collective
    when dynamic (the count)."""
    if not dynamic or not len(batch):
        return batch.split(size), list(range(len(batch)))
    lengths = row_tokens(batch)
    groups = token_budget_groups(lengths, size * max(lengths), padded=not padding_free)
    groups = split_to_count(groups, lengths, int(all_reduce_scalar(len(groups), "max")))
    return [_narrowed(batch.index(g)) for g in groups], [i for g in groups for i in g]


def _narrowed(micro: Batch) -> Batch:
    """`micro` with its per-token columns ([b, R, ...], the tensors of 2+ dimensions) cut to its longest response."""
    width = max(1, int(micro["response_mask"].sum(-1).max()))
    for key, value in list(micro.tensors.items()):
        if value.dim() >= 2:
            micro[key] = value[:, :width]
    return micro


def in_batch_order(parts: Sequence[torch.Tensor], rows: Sequence[int], width: int) -> torch.Tensor:
    """Per-micro-batch outputs ([b_k, R_k], narrowed or not) back in batch order as [B, width], zero-padded:
    `parts` hold rows `rows` (as micro_batches returns them)."""
    out = torch.cat([F.pad(part, (0, width - part.shape[1])) for part in parts])
    inverse = torch.empty(len(rows), dtype=torch.long)
    inverse[torch.as_tensor(list(rows), dtype=torch.long)] = torch.arange(len(rows))
    return out[inverse]


def balanced_order(lengths: Sequence[int], parts: int) -> list[int]:
    """A row order whose `parts` contiguous equal chunks (the data-parallel split) hold about equal tokens:
    longest first, each row to the chunk with the fewest tokens that has room."""
    if len(lengths) % parts:
        raise ValueError(f"cannot balance {len(lengths)} rows over {parts} data-parallel ranks: it must divide")
    room = len(lengths) // parts
    chunks: list[list[int]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        k = min((k for k in range(parts) if len(chunks[k]) < room), key=lambda k: loads[k])
        chunks[k].append(i)
        loads[k] += lengths[i]
    return [i for chunk in chunks for i in sorted(chunk)]
