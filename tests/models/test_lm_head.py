"""The chunked LM head: exact against the full [B, K, V] computation, forward and backward, and its peak
vocabulary-sized tensor is one chunk's."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from longrl.models.adapter import TextAdapter
from longrl.models.lm_head import chunked_token_stats
from longrl.models.ulysses_attention import split_media, sp_response_log_probs
from longrl.parallel.ulysses import SPGroup
from longrl.protocol import Batch

NO_SP = SPGroup(0, 1, None)


def _full_stats(hidden, weight, labels, temperature):
    logits = (hidden @ weight.T) / temperature
    logp = torch.log_softmax(logits, -1)
    return torch.gather(logp, -1, labels[..., None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


def test_chunked_log_probs_and_entropy_equal_the_full_ones_forward_and_backward():
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (3, 7))
    upstream = torch.randn(3, 7, 2, dtype=torch.float64)  # any loss of both outputs

    lp, ent = _full_stats(hidden, weight, labels, 0.7)
    (torch.stack([lp, ent], -1) * upstream).sum().backward()
    full_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    stats = chunked_token_stats(hidden, weight, None, labels, 0.7, with_entropy=True, chunk=3)  # chunks 3 + 3 + 1
    assert stats.shape == (3, 7, 2)
    torch.testing.assert_close(stats[..., 0], lp, rtol=0, atol=1e-12)
    torch.testing.assert_close(stats[..., 1], ent, rtol=0, atol=1e-12)
    (stats * upstream).sum().backward()
    torch.testing.assert_close(hidden.grad, full_grads[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(weight.grad, full_grads[1], rtol=0, atol=1e-12)


class _LargestVocabTensor(TorchDispatchMode):
    """The most elements of any logits-like tensor an op produced, forward and backward: last dim the vocabulary,
    and not the head's weight or its gradient ([V, H] or [H, V])."""

    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.vocab, self.hidden, self.largest = vocab, hidden, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == self.vocab \
                    and t.numel() != self.vocab * self.hidden:
                self.largest = max(self.largest, t.numel())
        return out


def test_policy_log_probs_never_hold_more_than_one_chunk_of_logits(tiny_qwen2):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    vocab = model.config.vocab_size
    responses = torch.randint(0, vocab, (2, 12))
    batch = Batch({"responses": responses, "response_mask": torch.ones_like(responses)},
                  {"prompt_ids": [[5, 6, 7], [8, 9, 10, 11]]})
    inputs, prompt_lens = TextAdapter().model_inputs(model, batch, model.config.pad_token_id, torch.device("cpu"))
    rows, media = split_media(inputs)

    def run(chunk):
        model.zero_grad()
        with _LargestVocabTensor(vocab, model.config.hidden_size) as probe:
            lp, ent = sp_response_log_probs(model, rows, prompt_lens, 12, NO_SP, 0.9, with_entropy=True,
                                            media=media, chunk=chunk)
            (lp.sum() + ent.sum()).backward()
        return lp.detach(), ent.detach(), model.lm_head.weight.grad.clone(), probe.largest

    lp_full, ent_full, grad_full, largest_full = run(chunk=10_000)
    lp, ent, grad, largest = run(chunk=4)
    # the head runs on the positions that predict a response token of some row: row 0 (prompt 3, 12 tokens)
    # 2..13, row 1 (prompt 4) 3..14, so 2..14: 13 positions of both rows
    assert largest_full == 2 * 13 * vocab
    assert largest == 2 * 4 * vocab
    torch.testing.assert_close(lp, lp_full, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent, ent_full, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad, grad_full, rtol=0, atol=1e-5)
