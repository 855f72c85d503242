"""longrl/workers/sft_worker.py: the SFT loss sees response tokens only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from longrl.models.adapter import TextAdapter
from longrl.protocol import Batch
from longrl.workers.sft_worker import sft_loss

PAD = 0


def two_rows() -> Batch:
    # row 0: 3 prompt + 2 response tokens; row 1: 5 prompt + 4 response tokens (row 0 padded to width 4)
    responses = torch.tensor([[7, 8, PAD, PAD], [9, 10, 11, 12]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    return Batch({"responses": responses, "response_mask": mask},
                 {"prompt_ids": [[3, 4, 5], [13, 14, 15, 16, 17]]})


def load(path) -> torch.nn.Module:
    torch.manual_seed(0)
    return TextAdapter().load(path, torch.float32).eval()


def test_loss_is_the_mean_nll_of_response_tokens_only(tiny_qwen2):
    model = load(tiny_qwen2)
    loss, stats = sft_loss(model, TextAdapter(), two_rows(), PAD)
    # by hand: each row alone, logits at positions p-1 .. p+r-2 predict the r response tokens;
    # (2 + 4) response tokens in all, prompt and pad positions left out
    total = torch.tensor(0.0)
    for prompt, response in (([3, 4, 5], [7, 8]), ([13, 14, 15, 16, 17], [9, 10, 11, 12])):
        logits = model(torch.tensor([prompt + response])).logits[0]
        p, r = len(prompt), len(response)
        total += F.cross_entropy(logits[p - 1: p + r - 1], torch.tensor(response), reduction="sum")
    assert torch.allclose(loss, total / 6, atol=1e-5)
    assert stats == {"sft_loss": loss.item()}


def test_prompt_and_padding_positions_get_no_gradient(tiny_qwen2):
    model = load(tiny_qwen2)
    captured = {}

    def keep_hidden(module, args, output):  # the final hidden states feed only the LM head at their own position
        output.retain_grad()
        captured["hidden"] = output

    model.model.norm.register_forward_hook(keep_hidden)
    loss, _ = sft_loss(model, TextAdapter(), two_rows(), PAD)
    loss.backward()
    grad = captured["hidden"].grad.abs().sum(-1)  # [2, L]: rows of prompt + response, right-padded to 9
    # row 0 (3 prompt + 2 response tokens): positions 0, 1 predict prompt tokens -> no gradient; 2, 3 predict
    # the 2 response tokens; 4.. lie past the row. Row 1 (5 + 4): 0-3 no, 4-7 yes, 8 predicts nothing.
    assert torch.equal(grad > 0, torch.tensor([[0, 0, 1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1, 0]]).bool())


def test_a_row_with_an_empty_response_mask_changes_nothing(tiny_qwen2):
    model = load(tiny_qwen2)
    batch = two_rows()
    alone = sft_loss(model, TextAdapter(), batch.index([1]), PAD)[0]
    batch["response_mask"] = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]])  # e.g. a row whose video failed
    assert torch.allclose(sft_loss(model, TextAdapter(), batch, PAD)[0], alone, atol=1e-6)
