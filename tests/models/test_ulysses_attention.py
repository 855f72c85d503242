"""Ulysses attention on the tiny Qwen2 (4 heads, 2 KV heads, head_dim 32, fp32).

A real 2-rank gloo world (one spawn for the module) runs sp=2 and the plain Hugging Face sdpa reference on
every rank; tests compare log-probs (< 1e-5) and gradients of a policy-gradient loss (relative < 1e-4),
padded, padding-free, with 1 KV head (repeated), with gradient checkpointing, and with FSDP2 over the same
2 ranks.
"""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path

import pytest
import torch

from longrl.config import ConfigError
from longrl.models.ulysses_attention import (kv_repeat_factor, sp_forward_logits, sp_response_log_probs,
                                             sp_token_log_probs, ulysses_attention, ulysses_attention_forward)
from longrl.parallel.packing import pack_sequences
from longrl.parallel.ulysses import SPGroup

WORLD = 2
# lengths 8 and 13: the padded width 13 and the packed length 21 are odd, so sp=2 pads both
SEQS = [[3, 14, 15, 92, 65, 35, 89, 79], [32, 38, 46, 26, 43, 38, 32, 79, 50, 28, 84, 19, 71]]
ADVANTAGES = [1.5, -0.5]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _padded() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids (pad 0), mask and positions [2, 13]."""
    width = max(len(s) for s in SEQS)
    ids, mask = torch.zeros(len(SEQS), width, dtype=torch.long), torch.zeros(len(SEQS), width, dtype=torch.long)
    for i, seq in enumerate(SEQS):
        ids[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), 1
    return ids, mask, torch.arange(width).expand(len(SEQS), width)


def _per_sequence(log_probs: torch.Tensor, packed: bool) -> list[torch.Tensor]:
    """Log-probs of tokens 1.. of each sequence, from a padded [B, L-1] or packed [1, T-1] tensor."""
    if not packed:
        return [log_probs[i, : len(s) - 1] for i, s in enumerate(SEQS)]
    starts = [sum(len(s) for s in SEQS[:i]) for i in range(len(SEQS))]
    return [log_probs[0, start: start + len(s) - 1] for start, s in zip(starts, SEQS)]


def _loss(per_seq: list[torch.Tensor]) -> torch.Tensor:
    """Token-mean policy-gradient loss: -sum_i A_i * sum_t logp_it / (number of tokens)."""
    tokens = sum(len(lp) for lp in per_seq)
    return -sum(a * lp.sum() for a, lp in zip(ADVANTAGES, per_seq)) / tokens


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    out = {}
    for name, p in model.named_parameters():
        g = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
        out[name] = g.detach().clone()
    model.zero_grad(set_to_none=True)
    return out


def _summed_over_sp(grads: dict[str, torch.Tensor], sp_size: int) -> dict[str, torch.Tensor]:
    """Without FSDP: the group's gradient of ONE copy of the loss is the sum over ranks / sp (ulysses.py)."""
    import torch.distributed as dist

    for g in grads.values():
        dist.all_reduce(g)
        g /= sp_size
    return grads


def _reference(model: torch.nn.Module) -> dict[str, object]:
    """Plain Hugging Face sdpa forward (its own padding mask) on the padded batch."""
    ids, mask, pos = _padded()
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    log_probs = torch.gather(torch.log_softmax(logits[:, :-1], -1), -1, ids[:, 1:, None]).squeeze(-1)
    per_seq = _per_sequence(log_probs, packed=False)
    _loss(per_seq).backward()
    return {"log_probs": [lp.detach() for lp in per_seq], "grads": _grads(model)}


def _sp_padded_via_logits(model, sp) -> dict[str, object]:
    ids, mask, pos = _padded()
    logits = sp_forward_logits(model, ids, pos, mask, sp)  # gathered [2, 13, V]
    log_probs = torch.gather(torch.log_softmax(logits[:, :-1], -1), -1, ids[:, 1:, None]).squeeze(-1)
    per_seq = _per_sequence(log_probs, packed=False)
    _loss(per_seq).backward()
    return {"log_probs": [lp.detach() for lp in per_seq], "grads": _grads(model)}


def _sp_log_probs(model, sp, packed: bool) -> dict[str, object]:
    if packed:
        pk = pack_sequences(SEQS)
        log_probs, _ = sp_token_log_probs(model, pk.input_ids, pk.position_ids, pk.cu_seqlens, sp)
    else:
        ids, mask, pos = _padded()
        log_probs, _ = sp_token_log_probs(model, ids, pos, mask, sp)
    per_seq = _per_sequence(log_probs, packed)
    _loss(per_seq).backward()
    return {"log_probs": [lp.detach() for lp in per_seq], "grads": _grads(model)}


PROMPT_LENS = [3, 5]  # responses of 8-3 = 5 and 13-5 = 8 tokens
TEMPERATURE = 0.7


def _response_case(model, sp, mode: str) -> dict[str, object]:
    """Response log-probs and entropies [B, R=8] as the actor uses them, and the gradient of a loss on them."""
    ids, mask, pos = _padded()
    width = max(len(s) - p for s, p in zip(SEQS, PROMPT_LENS))
    if mode == "ref":
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float() / TEMPERATURE
        index = torch.tensor(PROMPT_LENS)[:, None] - 1 + torch.arange(width)
        picked = torch.gather(logits, 1, index.clamp(max=ids.shape[1] - 1)[..., None].expand(-1, -1, logits.shape[-1]))
        logp = torch.log_softmax(picked, -1)
        log_probs = torch.gather(logp, -1, torch.gather(ids, 1, (index + 1).clamp(max=ids.shape[1] - 1))[..., None])
        log_probs, entropy = log_probs.squeeze(-1), -(logp.exp() * logp).sum(-1)
    else:
        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
        log_probs, entropy = sp_response_log_probs(model, inputs, torch.tensor(PROMPT_LENS), width, sp, TEMPERATURE,
                                                   padding_free=mode == "packed", with_entropy=True)
    valid = [len(s) - p for s, p in zip(SEQS, PROMPT_LENS)]
    per_seq = [log_probs[b, :n] for b, n in enumerate(valid)]
    (_loss(per_seq) + 0.1 * sum(entropy[b, :n].sum() for b, n in enumerate(valid))).backward()
    return {"log_probs": [lp.detach() for lp in per_seq], "entropy": [entropy[b, :n].detach() for b, n in
                                                                      enumerate(valid)], "grads": _grads(model)}


def _one_kv_head_model() -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=128, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=1, head_dim=32, attn_implementation="sdpa")
    torch.manual_seed(1)  # the same weights on both ranks
    return Qwen2ForCausalLM(cfg)


def _fsdp(model: torch.nn.Module) -> torch.nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _load(model_dir: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")


def _worker(rank: int, port: int, model_dir: str, out_dir: str) -> None:
    import torch.distributed as dist

    from longrl.parallel.ulysses import init_sp_groups

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        sp = init_sp_groups(2)
        model = _load(model_dir)
        res: dict[str, object] = {"ref": _reference(model)}
        padded = _sp_padded_via_logits(model, sp)
        res["padded"] = {**padded, "grads": _summed_over_sp(padded["grads"], sp.size)}
        packed = _sp_log_probs(model, sp, packed=True)
        res["packed"] = {**packed, "grads": _summed_over_sp(packed["grads"], sp.size)}
        res["attn_after"] = model.config._attn_implementation
        res["response_ref"] = _response_case(model, sp, "ref")
        for mode in ("padded", "packed"):
            case = _response_case(model, sp, mode)
            res[f"response_{mode}"] = {**case, "grads": _summed_over_sp(case["grads"], sp.size)}

        # gradient checkpointing recomputes attention during backward: backward runs inside the block
        checkpointed = _load(model_dir)
        checkpointed.gradient_checkpointing_enable()
        checkpointed.train()
        with ulysses_attention(checkpointed, sp):
            gc = _sp_log_probs(checkpointed, sp, packed=True)
        res["checkpointed"] = {**gc, "grads": _summed_over_sp(gc["grads"], sp.size)}
        try:  # outside the block the recomputation would run plain sdpa on the slice: torch refuses it
            _sp_log_probs(checkpointed, sp, packed=True)
        except torch.utils.checkpoint.CheckpointError as e:
            res["checkpoint_error"] = str(e)

        kv1 = _one_kv_head_model()
        res["kv1_ref"] = _reference(kv1)
        kv1_sp = _sp_log_probs(kv1, sp, packed=False)
        res["kv1"] = {**kv1_sp, "grads": _summed_over_sp(kv1_sp["grads"], sp.size)}

        # FSDP averages gradients over the world, which turns the sum over the SP group into one copy's gradient
        res["fsdp"] = _sp_log_probs(_fsdp(_load(model_dir)), sp, packed=True)
        torch.save(res, Path(out_dir) / f"rank_{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tiny_qwen2, tmp_path_factory) -> list[dict]:
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ulysses_attention")
    mp.spawn(_worker, args=(_free_port(), str(tiny_qwen2), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank_{r}.pt") for r in range(WORLD)]


def _assert_log_probs_equal(got: dict, ref: dict) -> None:
    for lp, lp_ref in zip(got["log_probs"], ref["log_probs"], strict=True):
        torch.testing.assert_close(lp, lp_ref, atol=1e-5, rtol=0)


def _assert_grads_equal(got: dict, ref: dict) -> None:
    assert sorted(got["grads"]) == sorted(ref["grads"])
    for name, g_ref in ref["grads"].items():
        error = (got["grads"][name] - g_ref).norm() / g_ref.norm()
        assert error < 1e-4, f"{name}: relative gradient error {error:.2e}"


@pytest.mark.parametrize("case", ["padded", "packed", "fsdp", "checkpointed"])
def test_sp2_log_probs_equal_plain_sdpa(ranks, case):
    for res in ranks:
        _assert_log_probs_equal(res[case], res["ref"])


@pytest.mark.parametrize("case", ["padded", "packed", "fsdp", "checkpointed"])
def test_sp2_gradients_equal_plain_sdpa(ranks, case):
    for res in ranks:
        _assert_grads_equal(res[case], res["ref"])


@pytest.mark.parametrize("mode", ["padded", "packed"])
def test_sp2_response_log_probs_entropies_and_gradients_equal_the_actors_plain_path(ranks, mode):
    for res in ranks:
        got, ref = res[f"response_{mode}"], res["response_ref"]
        _assert_log_probs_equal(got, ref)
        for ent, ent_ref in zip(got["entropy"], ref["entropy"], strict=True):
            torch.testing.assert_close(ent, ent_ref, atol=1e-5, rtol=0)
        _assert_grads_equal(got, ref)


def test_one_kv_head_is_repeated_over_two_ranks_and_stays_exact(ranks):
    for res in ranks:
        _assert_log_probs_equal(res["kv1"], res["kv1_ref"])
        _assert_grads_equal(res["kv1"], res["kv1_ref"])


def test_backward_outside_the_block_with_gradient_checkpointing_fails_loudly(ranks):
    for res in ranks:
        # torch compares what the recomputation saves with what the forward saved (count or shapes differ)
        assert res["checkpoint_error"].startswith("torch.utils.checkpoint:")


def test_attention_implementation_is_restored_after_the_sp_forward(ranks):
    assert [res["attn_after"] for res in ranks] == ["sdpa", "sdpa"]


# ---- single process ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_qwen2):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32, attn_implementation="sdpa")


@pytest.mark.parametrize("packed", [False, True])
def test_sp1_hook_equals_plain_sdpa(model, packed):
    with torch.no_grad():
        ids, mask, pos = _padded()
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        ref = _per_sequence(torch.gather(torch.log_softmax(logits[:, :-1], -1), -1, ids[:, 1:, None])[..., 0], False)
        got = _sp_log_probs_no_grad(model, packed)
    for lp, lp_ref in zip(got, ref):
        torch.testing.assert_close(lp, lp_ref, atol=1e-5, rtol=0)


def _sp_log_probs_no_grad(model, packed: bool) -> list[torch.Tensor]:
    sp = SPGroup(0, 1, None)
    if packed:
        pk = pack_sequences(SEQS)
        return _per_sequence(sp_token_log_probs(model, pk.input_ids, pk.position_ids, pk.cu_seqlens, sp)[0], True)
    ids, mask, pos = _padded()
    return _per_sequence(sp_token_log_probs(model, ids, pos, mask, sp)[0], False)


def test_entropy_of_uniform_logits_is_log_vocab(model):
    # with every weight of the lm_head zero all logits are 0: entropy = log V, log p = -log V
    ids, mask, pos = _padded()
    vocab = model.config.vocab_size
    head = model.lm_head.weight.detach().clone()
    try:
        with torch.no_grad():
            model.lm_head.weight.zero_()
            log_probs, entropy = sp_token_log_probs(model, ids, pos, mask, SPGroup(0, 1, None), with_entropy=True)
    finally:
        with torch.no_grad():
            model.lm_head.weight.copy_(head)
    assert entropy.shape == log_probs.shape == (2, 12)
    torch.testing.assert_close(entropy, torch.full((2, 12), float(torch.log(torch.tensor(float(vocab))))))
    torch.testing.assert_close(log_probs, -entropy)


@pytest.mark.parametrize(("heads", "kv_heads", "sp", "repeat"), [
    (4, 2, 2, 1),   # 2 KV heads split 1 per rank
    (4, 1, 2, 2),   # 1 KV head -> 2 copies, 1 per rank
    (8, 2, 4, 2),   # 2 -> 4 copies, 1 per rank
    (28, 4, 7, 7),  # Qwen2.5-7B on 7 ranks: 4*7 = 28 KV heads, 4 per rank
    (28, 4, 4, 1),
])
def test_kv_repeat_factor_is_the_smallest_that_splits_kv_heads_evenly(heads, kv_heads, sp, repeat):
    assert kv_repeat_factor(heads, kv_heads, sp) == repeat


def test_heads_not_divisible_by_sp_is_a_config_error_naming_both():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    three_heads = Qwen2ForCausalLM(Qwen2Config(vocab_size=16, hidden_size=96, intermediate_size=32,
                                               num_hidden_layers=1, num_attention_heads=3,
                                               num_key_value_heads=1, head_dim=32, attn_implementation="sdpa"))
    with pytest.raises(ConfigError, match=r"ulysses_size=2 must divide the model's num_attention_heads=3 .*"
                                          r"choose ulysses_size from \[1, 3\]"):
        with ulysses_attention(three_heads, SPGroup(0, 2, None)):
            pass
    assert three_heads.config._attn_implementation == "sdpa"


def test_config_is_restored_when_the_block_raises(model):
    with pytest.raises(KeyError):
        with ulysses_attention(model, SPGroup(0, 1, None)):
            assert model.config._attn_implementation == "longrl_ulysses"
            raise KeyError("boom")
    assert model.config._attn_implementation == "sdpa"


def test_hook_outside_the_block_explains_how_to_use_it():
    q = torch.zeros(1, 4, 2, 32)
    with pytest.raises(RuntimeError, match="only inside `with ulysses_attention"):
        ulysses_attention_forward(torch.nn.Module(), q, q, q, None)


def test_left_padded_mask_is_refused(model):
    ids, _, pos = _padded()
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    with pytest.raises(ValueError, match="must be right-padded"):
        sp_forward_logits(model, ids[:, :3], pos[:, :3], left, SPGroup(0, 1, None))


def test_response_log_probs_refuse_media_inputs(model):
    ids, mask, pos = _padded()
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "pixel_values_videos": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"text inputs only; got \['pixel_values_videos'\]"):
        sp_response_log_probs(model, inputs, torch.tensor(PROMPT_LENS), 8, SPGroup(0, 1, None))


def test_cu_seqlens_that_do_not_cover_the_row_are_refused(model):
    pk = pack_sequences(SEQS)
    with pytest.raises(ValueError, match=r"must start at 0 and end at the packed length 21"):
        sp_forward_logits(model, pk.input_ids, pk.position_ids, torch.tensor([0, 8, 20]), SPGroup(0, 1, None))
