"""Ulysses attention for Hugging Face decoders, registered through transformers' `AttentionInterface`.

Inside `ulysses_attention(model, sp)` the decoder's attention layers call `ulysses_attention_forward`: each
rank arrives with its slice of the sequence and all heads; one all-to-all gives it the whole sequence for
H/sp heads, it runs causal attention (flash-attn on GPU when importable, sdpa otherwise), and a second
all-to-all brings the output back to its slice. Everything outside attention (MLP, norms, RoPE, lm_head) is
per token and runs on the slice unchanged.

Masks: right-padded batches need none beyond causality (a pad key sits after every real query of its row,
so causal attention already hides it; outputs at pad positions are never read). Packed rows (padding-free)
pass `cu_seq_lens_q`/`max_length_q` through the model's `**kwargs` (transformers' own varlen keyword names),
and attention stays inside each sequence. Because the hook is not in transformers' mask registry, the model
builds no O(L^2) mask at all.

Inputs are cut into slices where they enter the decoder (`_sharded_at_decoder`), after the model has built
its input embeddings: a vision-language model's video embeddings land on their placeholder tokens first. The
slices are cut from a permutation of the sequence (`media_order`) that deals the media tokens evenly over the
SP group; the attention kernel puts the whole sequence it receives back in order (`sp_order`), so the result
is that of the unpermuted sequence.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from longrl.config import ConfigError
from longrl.models.adapter import PLACEHOLDER_IDS
from longrl.models.lm_head import CHUNK as LOGITS_CHUNK
from longrl.models.lm_head import token_stats_head
from longrl.parallel.packing import Packed, pack_sequences, unpack_to_padded
from longrl.parallel.ulysses import (SPGroup, all_to_all_heads_to_seq, all_to_all_seq_to_heads, balanced_order,
                                     gather_sequence, inverse_order, shard_sequence)

NAME = "longrl_ulysses"
_ACTIVE: list[SPGroup] = []  # the SP group of the innermost `ulysses_attention` block
_PREVIOUS: list[str] = []  # the attention implementation each `ulysses_attention` block replaced


def kv_repeat_factor(num_heads: int, num_kv_heads: int, sp_size: int) -> int:
    """How often each KV head is repeated so KV heads split evenly over sp ranks (1 = no repeat).

    Raises ConfigError when the query heads themselves cannot be split. The smallest r with
    num_kv_heads * r % sp == 0 is sp / gcd(num_kv_heads, sp); it always divides the GQA group size
    num_heads / num_kv_heads when sp divides num_heads, so repeated heads still line up with their queries.
    """
    if num_heads % sp_size:
        choices = [d for d in range(1, num_heads + 1) if num_heads % d == 0]
        raise ConfigError(f"worker.actor.ulysses_size={sp_size} must divide the model's num_attention_heads="
                          f"{num_heads} (each rank attends with whole heads); choose ulysses_size from {choices}")
    return sp_size // math.gcd(num_kv_heads, sp_size)


def ulysses_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              attention_mask: torch.Tensor | None, dropout: float = 0.0,
                              scaling: float | None = None, sliding_window: int | None = None,
                              cu_seq_lens_q: torch.Tensor | None = None, max_length_q: int | None = None,
                              sp_order: torch.Tensor | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """query [B, H, L/sp, D], key/value [B, Hkv, L/sp, D] -> attention output [B, L/sp, H, D].

    `sp_order`: the permutation of the sequence the ranks' slices were cut from (`media_order`); the decoder
    passes it down from `_sharded_at_decoder` as a keyword, so checkpoint recomputation sees it too."""
    if not _ACTIVE:
        raise RuntimeError(f"attn_implementation={NAME!r} runs only inside `with ulysses_attention(model, sp):`")
    sp = _ACTIVE[-1]
    if sliding_window is not None:
        raise NotImplementedError(f"Ulysses attention has no sliding window (layer asks for {sliding_window}); "
                                  "set use_sliding_window=false in the model config")
    if not getattr(module, "is_causal", True):
        raise NotImplementedError("Ulysses attention is for causal decoder layers only")
    heads, kv_heads = query.shape[1], key.shape[1]
    repeat = kv_repeat_factor(heads, kv_heads, sp.size)
    if repeat > 1:
        key, value = key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)
    q, k, v = _exchange_qkv(query, key, value, sp)
    if sp_order is not None and sp.size > 1:  # causality and packing bounds hold in sequence order
        back = inverse_order(sp_order)
        q, k, v = (t.index_select(2, back) for t in (q, k, v))
    out = _causal_attention(q, k, v, scaling, dropout, cu_seq_lens_q, max_length_q)  # [B, H/sp, L, D]
    if sp_order is not None and sp.size > 1:
        out = out.index_select(2, sp_order)
    return all_to_all_heads_to_seq(out, sp).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, ulysses_attention_forward)


def _exchange_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  sp: SPGroup) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One all-to-all for q, k and v together: rank j's heads of all three travel in one piece."""
    if sp.size == 1:
        return q, k, v
    b, _, length, d = q.shape
    per_rank = [t.reshape(b, sp.size, t.shape[1] // sp.size, length, d) for t in (q, k, v)]
    sizes = [t.shape[2] for t in per_rank]
    joined = torch.cat(per_rank, dim=2).flatten(1, 2)  # [B, sp * (h_q + h_k + h_v), L/sp, D]
    q, k, v = all_to_all_seq_to_heads(joined, sp).split(sizes, dim=1)
    return q, k, v


def _causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float | None, dropout: float,
                      cu_seqlens: torch.Tensor | None, max_seqlen: int | None) -> torch.Tensor:
    """Causal attention over the full sequence, inside each packed sequence: [B, h, L, D] -> [B, h, L, D]."""
    length = q.shape[2]
    bounds = None
    if cu_seqlens is not None:
        # tokens past the last sequence are sp padding (shard_sequence): they form one sequence of their own
        bounds = cu_seqlens.tolist() + ([length] if int(cu_seqlens[-1]) < length else [])
        max_seqlen = max(max_seqlen or 0, max(e - s for s, e in zip(bounds[:-1], bounds[1:])))
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and _has_flash_attn():
        return _flash(q, k, v, scaling, dropout, bounds, max_seqlen)
    gqa = q.shape[1] != k.shape[1]
    if gqa and q.is_cuda:
        # CUDA's memory-efficient sdpa kernel has no GQA; with enable_gqa torch would pick the O(L^2) math kernel
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
        gqa = False
    if bounds is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling,
                                              enable_gqa=gqa)
    # one causal call per sequence: exact, and no [T, T] block-diagonal mask is ever built
    return torch.cat([F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], dropout_p=dropout,
                                                     is_causal=True, scale=scaling, enable_gqa=gqa)
                      for s, e in zip(bounds[:-1], bounds[1:])], dim=2)


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float | None, dropout: float,
           bounds: list[int] | None, max_seqlen: int | None) -> torch.Tensor:
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # flash-attn wants [B, L, h, D]; it handles GQA itself
    if bounds is None:
        out = flash_attn_func(q, k, v, dropout, softmax_scale=scaling, causal=True)
    else:
        cu = torch.tensor(bounds, dtype=torch.int32, device=q.device)
        out = flash_attn_varlen_func(q[0], k[0], v[0], cu, cu, max_seqlen, max_seqlen, dropout,
                                     softmax_scale=scaling, causal=True)[None]
    return out.transpose(1, 2)


@functools.cache
def _has_flash_attn() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def ulysses_attention(model: torch.nn.Module, sp: SPGroup) -> Iterator[torch.nn.Module]:
    """Run the decoder's attention through the Ulysses hook inside the block; restore the previous one after.

    Only the text decoder's config is switched (`get_text_config`), so a vision tower keeps its own attention.
    With gradient checkpointing, backward recomputes attention and must run inside the block too (outside it
    the recomputation would pick the restored implementation; torch then raises a CheckpointError).
    """
    config = model.config.get_text_config(decoder=True)
    kv_repeat_factor(config.num_attention_heads, config.num_key_value_heads, sp.size)  # fail before any collective
    previous = config._attn_implementation
    config._attn_implementation = NAME
    _ACTIVE.append(sp)
    _PREVIOUS.append(previous)
    try:
        yield model
    finally:
        _ACTIVE.pop()
        _PREVIOUS.pop()
        config._attn_implementation = previous


@contextmanager
def own_attention(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The decoder's own attention inside the block, also within a `ulysses_attention` block.

    For KV-cached forwards (prompt prefix sharing, sp = 1): the Ulysses kernel is causal over q = k
    positions and takes no mask, so a continuation whose keys include a cached prefix would attend
    to the wrong keys.
    """
    config = model.config.get_text_config(decoder=True)
    if config._attn_implementation != NAME:
        yield model
        return
    config._attn_implementation = _PREVIOUS[-1]
    try:
        yield model
    finally:
        config._attn_implementation = NAME


# ---- the forward passes of the actor, the reference and the critic ---------------------------------------------------


def _varlen_kwargs(input_ids: torch.Tensor, mask_or_cu: torch.Tensor | None) -> dict[str, object]:
    """Checks the mask or cu_seqlens and returns the extra model kwargs (varlen bounds, or none)."""
    if mask_or_cu is None:
        return {}
    if mask_or_cu.dim() == 1:  # cu_seqlens of one packed row
        cu = mask_or_cu.to(device=input_ids.device, dtype=torch.int32)
        if input_ids.shape[0] != 1 or int(cu[-1]) != input_ids.shape[-1] or int(cu[0]) != 0:
            raise ValueError(f"cu_seqlens {cu.tolist()} must start at 0 and end at the packed length "
                             f"{input_ids.shape[-1]} of a batch of 1 row (got {input_ids.shape[0]} rows)")
        longest = int((cu[1:] - cu[:-1]).max())
        return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}
    if not bool((mask_or_cu[:, 1:] <= mask_or_cu[:, :-1]).all()):
        raise ValueError("attention_mask must be right-padded (ones, then zeros) for Ulysses attention, "
                         "which relies on causality to hide pad keys; pad on the right or pack the sequences")
    return {}


def media_token_ids(model: torch.nn.Module) -> list[int]:
    """The model's image/video placeholder ids: its own attributes (a native model such as VILA, whose
    `config` is its language model's) or its config's (transformers' vision-language models)."""
    ids = (getattr(model, name, None) if getattr(model, name, None) is not None else getattr(model.config, name, None)
           for name in ("image_token_id", "video_token_id"))
    return [i for i in ids if i is not None]


def media_order(model: torch.nn.Module, input_ids: torch.Tensor, sp: SPGroup,
                media: dict[str, object] | None = None) -> torch.Tensor | None:
    """The permutation that gives each rank of the SP group an equal share of the media tokens (to one
    token; `balanced_order`), or None (contiguous slices) without media or SP. The media tokens are the
    placeholder positions of `input_ids` [B, L] (or of media's `placeholder_ids`), counted over the rows."""
    ids = media_token_ids(model)
    if sp.size == 1 or not media or not ids:
        return None
    where = media.get(PLACEHOLDER_IDS, input_ids)
    weights = torch.isin(where, torch.tensor(ids, device=where.device)).reshape(-1, where.shape[-1]).sum(0)
    return balanced_order(weights, sp.size) if bool(weights.any()) else None


@contextmanager
def _sharded_at_decoder(model: torch.nn.Module, sp: SPGroup, order: torch.Tensor | None = None) -> Iterator[None]:
    """Cut the decoder's inputs to this rank's slice of the sequence (of its `order` permutation) as they
    enter it, and hand the order to the attention layers (`sp_order`).

    Sharding at the decoder, not before the model, lets the model build its full input embeddings first: a
    vision-language model scatters its (cached or freshly encoded) video embeddings into the text embeddings by
    position, so every rank needs all placeholders there. The decoder then sees `input_ids` [B, L/sp] (text
    models) or `inputs_embeds` [B, L/sp, E], and `position_ids` [B, L/sp] or [3, B, L/sp] (M-RoPE).
    """
    if sp.size == 1:
        yield
        return

    def shard(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:  # e.g. the token-classification head passes input_ids positionally
            kwargs["input_ids"], args = args[0], args[1:]
        assert not args and kwargs.get("position_ids") is not None and kwargs.get("attention_mask") is None, \
            "the SP decoder takes input_ids or inputs_embeds and position_ids by keyword, and no attention_mask"
        for key, dim in (("input_ids", -1), ("inputs_embeds", 1), ("position_ids", -1)):
            if kwargs.get(key) is not None:
                kwargs[key] = shard_sequence(kwargs[key], sp, dim=dim, order=order)
        if order is not None:
            kwargs["sp_order"] = order.to(kwargs["position_ids"].device)
        return args, kwargs

    handle = model.get_decoder().register_forward_pre_hook(shard, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def sp_forward_logits(model: torch.nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor,
                      attention_mask_or_cu_seqlens: torch.Tensor | None, sp: SPGroup,
                      gather: bool = True, media: dict[str, object] | None = None,
                      keep: torch.Tensor | None = None, order: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of a sequence-parallel forward pass.

    input_ids [B, L]; position_ids [B, L] or [3, B, L] (M-RoPE); attention_mask [B, L] (right-padded) or
    cu_seqlens [n+1] of one packed row (B=1), or None for unpadded rows; `media`: extra model inputs a
    vision-language adapter builds (`mm_encoder_outputs`, or `pixel_values_videos` + grids), whose embeddings
    fill the placeholder tokens of input_ids. Every rank of the SP group passes the same full inputs. Returns
    logits [B, L, V] on every rank, or with gather=False this rank's slice [B, ceil(L/sp), V] of the sp-padded
    sequence (compute per-token values on it and `gather_sequence` those: the full [B, L, V] never has to
    exist on one rank). `keep` (with gather=False): indices into this rank's slice; the LM head then runs on
    those positions only and the logits are [B, len(keep), V]. `order`: the permutation the ranks' slices are
    cut from (`media_order`; None: contiguous); a slice returned with gather=False is one of that order.
    """
    kwargs = _varlen_kwargs(input_ids, attention_mask_or_cu_seqlens)
    if keep is not None:
        assert not gather, "keep selects positions of this rank's slice"
        kwargs["logits_to_keep"] = keep
    with ulysses_attention(model, sp), _sharded_at_decoder(model, sp, order):
        logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False, **(media or {}),
                       **kwargs).logits
    return gather_sequence(logits, sp, dim=1, original_len=input_ids.shape[-1], order=order) if gather else logits


def sp_token_log_probs(model: torch.nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor,
                       attention_mask_or_cu_seqlens: torch.Tensor | None, sp: SPGroup, temperature: float = 1.0,
                       with_entropy: bool = False, media: dict[str, object] | None = None,
                       needed: torch.Tensor | None = None,
                       chunk: int = LOGITS_CHUNK) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(input_ids[:, t+1] | input_ids[:, :t+1]) for t < L-1: [B, L-1] (and the entropy there, [B, L-1]).

    Each rank turns its logits slice into per-token values before the gather, so per-rank memory for the
    vocabulary-sized tensors is 1/sp of a plain forward. At a packed sequence's last token the value
    refers to the next sequence's first token and must be ignored, as for any padding-free model.
    `needed` (bool [L]): the positions t whose values are wanted, 0 elsewhere; the LM head skips the others,
    which for a long video prompt and a short response is nearly all of the [L, V] logits. The head runs
    `chunk` positions at a time (models/lm_head.py): the rank's peak logits are [B, chunk, V], forward and backward.
    """
    length = input_ids.shape[-1]
    order = media_order(model, input_ids, sp, media)
    labels = shard_sequence(torch.roll(input_ids, -1, dims=-1), sp, dim=-1, order=order)
    keep = None if needed is None else shard_sequence(needed, sp, dim=0, order=order).nonzero().squeeze(-1)
    if keep is not None:
        labels = labels[:, keep]
    with token_stats_head(model, labels, temperature, with_entropy, chunk):
        stats = sp_forward_logits(model, input_ids, position_ids, attention_mask_or_cu_seqlens, sp, gather=False,
                                  media=media, keep=keep, order=order)  # [B, K, 2]: log-prob, entropy
    outs = [stats[..., 0]] + ([stats[..., 1]] if with_entropy else [])
    if keep is not None:  # back to this rank's slice, zeros where not needed, so the slices line up to gather
        outs = [t.new_zeros(labels.shape[0], -(-length // sp.size)).index_copy(1, keep, t) for t in outs]
    outs = [gather_sequence(t, sp, dim=1, original_len=length, order=order)[:, :-1] for t in outs]
    return outs[0], outs[1] if with_entropy else None


def sp_token_values(model: torch.nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor,
                    attention_mask_or_cu_seqlens: torch.Tensor | None, sp: SPGroup,
                    media: dict[str, object] | None = None) -> torch.Tensor:
    """A one-label head's output (e.g. a critic's value) at positions t < L-1, float32: [B, L-1]."""
    order = media_order(model, input_ids, sp, media)
    logits = sp_forward_logits(model, input_ids, position_ids, attention_mask_or_cu_seqlens, sp, gather=False,
                               media=media, order=order)
    return gather_sequence(logits[..., 0].float(), sp, dim=1, original_len=input_ids.shape[-1], order=order)[:, :-1]


TEXT_INPUTS = ("input_ids", "attention_mask", "position_ids")
"""The keys of an adapter's forward inputs that describe the token rows; the others are media (`split_media`)."""

PerToken = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, dict[str, object] | None],
                    tuple[torch.Tensor | None, ...]]
"""(input_ids, position_ids, attention mask or cu_seqlens, needed positions bool [L], media inputs) -> per-token
values [B, L-1] (None: not asked for)."""


def split_media(inputs: dict[str, object]) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """An adapter's forward inputs as (token rows: input_ids/attention_mask/position_ids, media inputs)."""
    return ({k: v for k, v in inputs.items() if k in TEXT_INPUTS},
            {k: v for k, v in inputs.items() if k not in TEXT_INPUTS})


def sp_response_log_probs(model: torch.nn.Module, inputs: dict[str, torch.Tensor], prompt_lens: torch.Tensor,
                          width: int, sp: SPGroup, temperature: float = 1.0, padding_free: bool = False,
                          with_entropy: bool = False, media: dict[str, object] | None = None,
                          chunk: int = LOGITS_CHUNK) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The actor's drop-in: log-probs (and entropies) of the `width` response tokens of each row, [B, R] each.

    `inputs` are right-padded `input_ids`/`attention_mask` [B, L] and `position_ids` ([B, L] or [3, B, L]) as
    an adapter's `forward_inputs` builds them, `media` the rest of an adapter's inputs (`split_media`);
    response token j of row b sits at prompt_lens[b] + j. With `padding_free` the rows are packed without
    their padding first. The LM head runs only where some row has a response token to predict. Columns past
    a row's end hold 0 or junk: mask them with `response_mask`.
    """
    def per_token(ids, positions, mask_or_cu, needed, media):
        return sp_token_log_probs(model, ids, positions, mask_or_cu, sp, temperature, with_entropy, media, needed,
                                  chunk)

    log_probs, entropy = _response_columns(model, inputs, prompt_lens, width, padding_free, media, per_token)
    return log_probs, entropy


def sp_response_values(model: torch.nn.Module, inputs: dict[str, torch.Tensor], prompt_lens: torch.Tensor,
                       width: int, sp: SPGroup, padding_free: bool = False,
                       media: dict[str, object] | None = None) -> torch.Tensor:
    """A critic's drop-in: the value head's output where the logits predicting each response token sit, [B, R]."""
    def per_token(ids, positions, mask_or_cu, needed, media):  # a one-label head: every position is cheap
        return (sp_token_values(model, ids, positions, mask_or_cu, sp, media),)

    return _response_columns(model, inputs, prompt_lens, width, padding_free, media, per_token)[0]


def _response_columns(model: torch.nn.Module, inputs: dict[str, torch.Tensor], prompt_lens: torch.Tensor,
                      width: int, padding_free: bool, media: dict[str, object] | None,
                      per_token: PerToken) -> tuple[torch.Tensor | None, ...]:
    """`per_token` on the padded (or packed) rows, read at each row's response columns: [B, R] each."""
    unsupported = sorted(set(inputs) - set(TEXT_INPUTS))
    if unsupported:
        raise ValueError(f"Ulysses sequence parallelism takes text inputs only; got {unsupported} too "
                         "(pass vision-language inputs as media=..., see split_media)")
    ids, mask, positions = inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"]
    prompt_lens = prompt_lens.to(ids.device)
    # the response tokens prompt_len .. end-1 of a row are predicted at positions prompt_len-1 .. end-2
    if padding_free:
        packed = _pack_rows(model, ids, mask, positions, bool(media))
        if media and PLACEHOLDER_IDS in media:  # packed like input_ids, the padding placeholders found in input_ids
            placeholders = _pack_rows(model, media[PLACEHOLDER_IDS], mask, positions, True, found_in=ids)
            media = {**media, PLACEHOLDER_IDS: placeholders.input_ids}
        cu = packed.cu_seqlens.long()
        needed = _any_in_ranges(cu[: len(ids)] + prompt_lens - 1, cu[1: len(ids) + 1] - 1, packed.input_ids.shape[-1])
        outs = per_token(packed.input_ids, packed.position_ids, packed.cu_seqlens, needed, media)
        # [1, T-1] -> [1, T] so that row b's column t is the value predicting its token t+1, then per row
        per_row = [unpack_to_padded(F.pad(t, (0, 1)), packed.cu_seqlens)[: len(ids)] if t is not None else None
                   for t in outs]
    else:
        outs = per_token(ids, positions, mask, _any_in_ranges(prompt_lens - 1, mask.sum(-1) - 1, ids.shape[-1]), media)
        per_row = [F.pad(t, (0, 1)) if t is not None else None for t in outs]
    # the token at position t is predicted at t-1
    index = prompt_lens[:, None] - 1 + torch.arange(width, device=ids.device)
    return tuple(torch.gather(t, 1, index.clamp(max=t.shape[1] - 1)) if t is not None else None for t in per_row)


def _any_in_ranges(starts: torch.Tensor, ends: torch.Tensor, length: int) -> torch.Tensor:
    """bool [length]: True at the positions inside any [starts[i], ends[i])."""
    positions = torch.arange(length, device=starts.device)
    return ((positions >= starts[:, None]) & (positions < ends[:, None])).any(0)


def _pack_rows(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
               with_media: bool, found_in: torch.Tensor | None = None) -> Packed:
    """The rows' valid tokens end to end, and after them, as one sequence of their own, any masked media
    placeholder (an adapter's padding video: a rank without videos still runs a trainable tower) that the
    model must find among the tokens to place its embedding; `found_in`: the ids to look for those in (default
    `ids`), so that `placeholder_ids` pack to input_ids' layout."""
    lengths = mask.sum(-1).tolist()
    rows = [row[:n] for row, n in zip(ids, lengths)]
    row_positions = [positions[..., b, :n] for b, n in enumerate(lengths)]
    if with_media:
        media_ids = media_token_ids(model)
        extra = (mask == 0) & torch.isin(ids if found_in is None else found_in,
                                         torch.tensor(media_ids, device=ids.device))
        if bool(extra.any()):
            rows.append(ids[extra])
            row_positions.append(positions[..., extra])
    return pack_sequences(rows, row_positions, ids.device)
