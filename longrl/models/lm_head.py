"""The LM head in chunks over the sequence: per-token log-probs and entropies without [B, L, V] logits.

With a 150k vocabulary the fp32 logits of a long response are the largest tensor of the whole step
([B, R, V]: 4 x 8k x 152k x 4 bytes = 20 GB), and autograd keeps them for backward. Here the head runs
on `chunk` positions at a time and turns each chunk straight into two numbers per token; under autograd
each chunk is checkpointed (only its hidden states are kept, its logits are recomputed in backward), so
the peak is one chunk's logits, [B, chunk, V], in forward and in backward. Exact: the same arithmetic as
the full version, chunk by chunk (tests/models/test_lm_head.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

CHUNK = 1024
"""Positions per chunk: [B, 1024, 152k] fp32 is 0.6 GB a row, small next to a 3B model's activations."""


def _token_stats(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
                 temperature: float, with_entropy: bool) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias)  # [B, c, V]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature  # bf16 -> fp32
    log_z = torch.logsumexp(logits, dim=-1)
    log_probs = torch.gather(logits, -1, labels[..., None]).squeeze(-1) - log_z
    entropy = log_z - (torch.softmax(logits, -1) * logits).sum(-1) if with_entropy else torch.zeros_like(log_z)
    return torch.stack([log_probs, entropy], dim=-1)


def chunked_token_stats(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
                        temperature: float = 1.0, with_entropy: bool = False, chunk: int = CHUNK) -> torch.Tensor:
    """hidden [B, K, H], head weight [V, H], labels [B, K] -> [B, K, 2]: log p(label) and the entropy (0 without
    `with_entropy`) of softmax(head(hidden) / temperature), `chunk` positions at a time."""
    outs = []
    # at least one (possibly empty) chunk: an SP rank with no position to predict still joins the autograd graph
    for start in range(0, max(hidden.shape[1], 1), chunk):
        args = (hidden[:, start:start + chunk], weight, bias, labels[:, start:start + chunk], temperature, with_entropy)
        grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
        outs.append(checkpoint(_token_stats, *args, use_reentrant=False) if grad else _token_stats(*args))
    return torch.cat(outs, dim=1)


@contextmanager
def token_stats_head(model: torch.nn.Module, labels: torch.Tensor, temperature: float, with_entropy: bool,
                     chunk: int = CHUNK) -> Iterator[None]:
    """Inside the block the model's output `logits` are per-token stats [B, K, 2] (`chunked_token_stats` with
    `labels` [B, K], K the positions the head is asked for) instead of [B, K, V].

    The head's forward is swapped on this model instance for the block, so the head still runs inside the
    model's forward: under FSDP its weight is gathered there, exactly as for the plain head.
    """
    head = model.get_output_embeddings()

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        return chunked_token_stats(hidden, head.weight, head.bias, labels.to(hidden.device), temperature,
                                   with_entropy, chunk)

    head.forward = forward
    try:
        yield
    finally:
        del head.forward  # back to the class's forward
