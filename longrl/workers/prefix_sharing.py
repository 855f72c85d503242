"""Prompt-prefix sharing: the n responses of one prompt attend to ONE forward of that prompt.

GRPO samples n responses per prompt, and rollouts are prompt-major, so a micro-batch holds each
long video prompt up to n times. The plain path runs the language model over every copy; here
each unique prompt (prompt_ids + video paths) of a micro-batch runs once with `use_cache=True`,
video embeddings and M-RoPE positions exactly as the adapter builds them, and its KV cache is
repeated per response (`Cache.reorder_cache`, an index_select that keeps the autograd graph).
The responses then run against that cache. Causal attention makes this exact: a prompt token
never attends to a response token, so its keys and values do not depend on which response
follows. Same floating-point operations per position up to the batch layout, so log-probs equal
the full-sequence path's to fp32 rounding (tests/workers/test_prefix_sharing.py).

Every call runs exactly two forwards (all prompts of the micro-batch padded together, then all
responses), whatever the grouping: with FSDP every rank must make the same collectives.

Limits (enforced by validation.validate or here): sequence parallelism and padding-free packing
cut or concatenate whole sequences and are not supported; with gradients, HF gradient
checkpointing drops the KV cache (its layers refuse caches when recomputing), so it is refused.
"""

from __future__ import annotations

import torch

from longrl.data.image import image_name
from longrl.models.adapter import PLACEHOLDER_IDS, TextAdapter
from longrl.models.vision_cache import media_refs
from longrl.models.ulysses_attention import own_attention, split_media
from longrl.protocol import Batch


def prompt_groups(batch: Batch) -> list[list[int]]:
    """Row indices grouped by identical prompt (prompt_ids + image and video names), in order of first appearance."""
    media = [tuple(f"{m}:{image_name(r) if m == 'image' else r}" for m, r in row) for row in media_refs(batch)]
    groups: dict[tuple, list[int]] = {}
    for i, (ids, names) in enumerate(zip(batch["prompt_ids"], media)):
        groups.setdefault((tuple(ids), names), []).append(i)
    return list(groups.values())


def shared_prefix_log_probs(model: torch.nn.Module, adapter: TextAdapter, batch: Batch, pad_id: int,
                            temperature: float, with_entropy: bool = False
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and entropies) of each response token, [B, R] each, prompts run once per group.

    Drop-in for `response_log_probs_and_entropy` with sp=1 and padding_free=false: columns past a
    row's end hold 0 or junk (mask them with `response_mask`). Works with or without gradients.
    """
    if torch.is_grad_enabled() and model.training and getattr(model, "is_gradient_checkpointing", False):
        raise ValueError("worker.actor.share_prompt_prefix=true cannot run a pass with gradients under gradient "
                         "checkpointing (the checkpointed layers drop the shared KV cache); set "
                         "worker.actor.model.enable_gradient_checkpointing=false or share_prompt_prefix=false")
    with own_attention(model):  # inside the update's ulysses_attention block too: its kernel takes no KV cache
        return _log_probs(model, adapter, batch, pad_id, temperature, with_entropy)


def _log_probs(model: torch.nn.Module, adapter: TextAdapter, batch: Batch, pad_id: int, temperature: float,
               with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    device = next(model.parameters()).device
    groups = prompt_groups(batch)
    lengths = batch["response_mask"].sum(-1)
    group_of_row = torch.empty(len(batch), dtype=torch.long)
    for g, rows in enumerate(groups):
        group_of_row[rows] = g
    # each group's longest row: its positions cover every response column any row of the group needs
    heads = [max(rows, key=lambda r: int(lengths[r])) for rows in groups]
    inputs, prompt_lens = adapter.model_inputs(model, batch.index(heads), pad_id, device)
    rows, media = split_media(inputs)
    prompt_lens = prompt_lens.to(device)
    first_logits, cache, prefix_mask = _prefix_forward(model, rows, media, prompt_lens, pad_id, bool(media))
    index = group_of_row.to(device)
    cache.reorder_cache(index)  # [G, ...] -> [B, ...]: row b gets its prompt's keys and values

    width = batch["responses"].shape[1]
    cont = max(1, int(lengths.max()) - 1)  # response tokens fed as inputs (the last one predicts nothing)
    responses = batch["responses"].to(device)
    columns = prompt_lens[index, None] + torch.arange(cont, device=device)
    positions = rows["position_ids"][..., index, :]  # [B, L] or [3, B, L]
    columns = columns.clamp(max=positions.shape[-1] - 1).expand_as(positions[..., :cont])
    mask = torch.cat([prefix_mask[index], torch.ones(len(batch), cont, dtype=torch.long, device=device)], 1)
    # right-padded responses need no mask of their own: causality hides a row's pads from its real tokens
    logits = model(input_ids=responses[:, :cont], attention_mask=mask, position_ids=positions.gather(-1, columns),
                   past_key_values=cache, use_cache=True).logits  # [B, cont, V]: predict tokens 1..cont
    logits = torch.cat([first_logits[index, None], logits], 1)[:, :width]
    return _per_token(logits, responses[:, : logits.shape[1]], temperature, width, with_entropy)


def _prefix_forward(model: torch.nn.Module, rows: dict[str, torch.Tensor], media: dict[str, object],
                    prompt_lens: torch.Tensor, pad_id: int,
                    with_media: bool) -> tuple[torch.Tensor, object, torch.Tensor]:
    """The unique prompts, right-padded together: (logits predicting each first response token [G, V],
    the KV cache [G, ..., P, ...], the prompts' attention mask [G, P])."""
    ids, mask = rows["input_ids"], rows["attention_mask"]
    # a masked media placeholder past the rows (an adapter's padding video, so a trainable tower gets zero
    # gradients on a rank without videos: FSDP's collectives must match) stays where the model finds it
    extra = (mask == 0) & torch.isin(ids, _media_token_ids(model)) if with_media else torch.zeros_like(mask).bool()
    longest = ids.shape[1] if bool(extra.any()) else int(prompt_lens.max())
    prefix_mask = (torch.arange(longest, device=prompt_lens.device) < prompt_lens[:, None]).long()
    # drop the head rows' responses
    ids = ids[:, :longest].masked_fill((prefix_mask == 0) & ~extra[:, :longest], pad_id)
    last = prompt_lens - 1
    keep = torch.unique(last)  # sorted; the LM head runs only where a prompt ends
    # the prefix rows hold no response, so no sampled media id to keep as text (the responses run without media)
    media = {k: v for k, v in media.items() if k != PLACEHOLDER_IDS}
    out = model(input_ids=ids, attention_mask=prefix_mask, position_ids=rows["position_ids"][..., :longest],
                use_cache=True, logits_to_keep=keep, **media)
    picked = out.logits[torch.arange(len(ids), device=ids.device), torch.searchsorted(keep, last)]
    return picked, out.past_key_values, prefix_mask


def _media_token_ids(model: torch.nn.Module) -> torch.Tensor:
    ids = [i for i in (getattr(model.config, "image_token_id", None), getattr(model.config, "video_token_id", None))
           if i is not None]
    return torch.tensor(ids, dtype=torch.long, device=next(model.parameters()).device)


def _per_token(logits: torch.Tensor, labels: torch.Tensor, temperature: float, width: int,
               with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(label) (and entropy) from logits [B, W, V], each padded with zeros to [B, width]."""
    logits = logits.float() / temperature  # the same arithmetic as sp_token_log_probs
    log_z = torch.logsumexp(logits, dim=-1)
    outs = [torch.gather(logits, -1, labels[..., None]).squeeze(-1) - log_z]
    if with_entropy:
        outs.append(log_z - (torch.softmax(logits, -1) * logits).sum(-1))
    outs = [torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in outs]
    return outs[0], outs[1] if with_entropy else None
