"""Dynamic batching: micro-batches packed to a token budget, rows balanced over data-parallel ranks, and the same
log-probs, values and update gradient (token- and seq-mean) as fixed micro-batches on the tiny Qwen2."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from longrl.config import load_config
from longrl.protocol import Batch
from longrl.workers.micro_batches import (balanced_order, in_batch_order, micro_batches, split_to_count,
                                          token_budget_groups)

TEMPERATURE = 0.9
# prompt and response lengths: one long row among short ones (tokens 40, 7, 9, 6, 8, 5)
PROMPTS, RESPONSES = [30, 4, 5, 3, 6, 4], [10, 3, 4, 3, 2, 1]


def test_packed_groups_fill_the_budget_first_fit_longest_first():
    # budget 12, longest first: 10 | 9 | 7 open three groups; 3 fills 9's (12), 2 goes with 10, the last 2 with 7
    groups = token_budget_groups([10, 2, 9, 3, 7, 2], 12, padded=False)
    assert groups == [[0, 1], [2, 3], [4, 5]]
    assert token_budget_groups([13, 1], 12, padded=False) == [[0], [1]]  # a row over the budget goes alone


def test_padded_groups_count_rows_times_their_longest():
    # budget 20, longest first 10, 9, 7, 3, 2, 2: [10, 9] costs 2 x 10 = 20; [7, 3] 14, + 2 -> 21 > 20; [2, 2]
    assert token_budget_groups([10, 2, 9, 3, 7, 2], 20, padded=True) == [[0, 2], [3, 4], [1, 5]]


def test_split_to_count_halves_the_heaviest_group_until_there_are_enough():
    lengths = [10, 2, 9, 3, 7, 2]
    groups = split_to_count([[0, 1, 2, 3, 4, 5]], lengths, 3)
    assert sorted(i for g in groups for i in g) == list(range(6)) and len(groups) == 3 and all(groups)
    # longest first 0, 2, 4, 3, 1, 5 halve alternately: [0, 4, 1] (19 tokens), [2, 3, 5] (14); the heavier again
    assert groups == [[0, 1], [4], [2, 3, 5]]
    with pytest.raises(ValueError, match="cannot make 7 non-empty micro-batches of 6 rows"):
        split_to_count(groups, lengths, 7)


def test_balanced_order_gives_each_rank_about_equal_tokens():
    lengths = [100, 90, 10, 10, 80, 20, 5, 85]
    order = balanced_order(lengths, 2)
    assert sorted(order) == list(range(8))
    loads = [sum(lengths[i] for i in order[:4]), sum(lengths[i] for i in order[4:])]
    # contiguous halves as they come: 210 vs 190; balanced: 100+80+10+10 = 200 and 90+85+20+5 = 200
    assert loads == [200, 200]
    with pytest.raises(ValueError, match="cannot balance 8 rows over 3 data-parallel ranks"):
        balanced_order(lengths, 3)


def test_in_batch_order_undoes_the_grouping():
    rows = [3, 0, 2, 1]
    parts = [torch.tensor([[30.0], [0.0]]), torch.tensor([[20.0], [10.0]])]
    assert in_batch_order(parts, rows, 1).squeeze(-1).tolist() == [0.0, 10.0, 20.0, 30.0]
    # narrowed parts come back zero-padded to the batch's width
    narrow = [torch.tensor([[1.0, 2.0], [3.0, 0.0]]), torch.tensor([[4.0]])]
    assert in_batch_order(narrow, [2, 0, 1], 3).tolist() == [[3.0, 0.0, 0.0], [4.0, 0.0, 0.0], [1.0, 2.0, 0.0]]


def _batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    mask = (torch.arange(max(RESPONSES)) < torch.tensor(RESPONSES)[:, None]).long()
    prompts = [torch.randint(3, 500, (n,), generator=g).tolist() for n in PROMPTS]
    return Batch({"responses": torch.randint(3, 500, mask.shape, generator=g) * mask, "response_mask": mask,
                  "advantages": torch.tensor([1.0, -0.5, 0.75, -1.25, 0.3, 2.0])[:, None] * mask,
                  "values": 0.1 * mask.float(), "returns": torch.tensor([1.0, 0.0, -1.0, 0.5, 2.0, -0.5])[:, None] * mask},
                 {"prompt_ids": prompts})


def test_dynamic_micro_batches_are_fewer_and_hold_every_row_once():
    batch = _batch()
    fixed, _ = micro_batches(batch, 2, dynamic=False, padding_free=True)
    packed, rows = micro_batches(batch, 2, dynamic=True, padding_free=True)
    padded, _ = micro_batches(batch, 2, dynamic=True, padding_free=False)
    # budget 2 x 40 = 80 tokens: packed, all 75 tokens in one forward; padded, [40, 9] (80) then 4 rows of <= 8 (32)
    assert [len(m) for m in fixed] == [2, 2, 2] and [len(m) for m in packed] == [6] and sorted(rows) == list(range(6))
    assert [len(m) for m in padded] == [2, 4]
    # each dynamic micro-batch carries only its longest response's columns: [40, 9] 10, the short rows 3
    assert [m["responses"].shape[1] for m in padded] == [10, 3] and padded[1]["advantages"].shape == (4, 3)


def _actor(tiny_qwen2: Path, dynamic: bool, padding_free: bool, loss_avg_mode: str = "token"):
    from longrl.models.adapter import adapter_for
    from longrl.workers.actor import Actor

    cfg = load_config([f"worker.actor.model.model_path={tiny_qwen2}", "algorithm.disable_kl=true"])
    actor_cfg = dataclasses.replace(cfg.worker.actor, global_batch_size=6, loss_avg_mode=loss_avg_mode,
                                    micro_batch_size_per_device_for_update=2,
                                    micro_batch_size_per_device_for_experience=2, dynamic_batching=dynamic,
                                    padding_free=padding_free)
    adapter = adapter_for("qwen2")
    return Actor(adapter.load(str(tiny_qwen2), torch.float32), adapter, actor_cfg, cfg.algorithm, 0, 1, 10, responses_per_prompt=1)


def _gradients(actor, batch: Batch) -> tuple[dict[str, torch.Tensor], int]:
    """The gradient the optimizer would step with (the step is skipped), and how many forwards the update ran."""
    grads: dict[str, torch.Tensor] = {}
    forwards = []
    hook = actor.model.register_forward_pre_hook(lambda *_: forwards.append(1))
    actor.optimizer.step = lambda: grads.update({n: p.grad.detach().clone()
                                                 for n, p in actor.model.named_parameters() if p.grad is not None})
    actor.update(batch, TEMPERATURE)
    hook.remove()
    return grads, len(forwards)


@pytest.mark.parametrize("padding_free", [False, True])
@pytest.mark.parametrize("loss_avg_mode", ["token", "seq"])
def test_dynamic_batching_gives_the_gradient_of_fixed_micro_batches(tiny_qwen2, loss_avg_mode, padding_free):
    batch = _batch()
    fixed, dynamic = (_actor(tiny_qwen2, d, padding_free, loss_avg_mode) for d in (False, True))
    old = fixed.log_probs(batch, TEMPERATURE)
    torch.testing.assert_close(dynamic.log_probs(batch, TEMPERATURE), old, rtol=1e-5, atol=1e-5)
    batch["old_log_probs"] = old + 0.2 * torch.sin(torch.arange(old.numel()).reshape(old.shape)) * batch["response_mask"]
    grads_fixed, forwards_fixed = _gradients(fixed, batch)
    grads_dynamic, forwards_dynamic = _gradients(dynamic, batch)
    assert (forwards_fixed, forwards_dynamic) == (3, 1 if padding_free else 2)
    assert grads_dynamic.keys() == grads_fixed.keys() and grads_fixed
    for name, g in grads_fixed.items():
        torch.testing.assert_close(grads_dynamic[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_critic_values_and_gradient_are_the_same_with_dynamic_batching(tiny_qwen2):
    from longrl.models.adapter import TextAdapter
    from longrl.workers.critic import Critic, load_value_model

    cfg = load_config([f"worker.actor.model.model_path={tiny_qwen2}"])
    batch = _batch()
    out = {}
    for dynamic in (False, True):
        torch.manual_seed(0)  # the same fresh value head
        model = load_value_model(str(tiny_qwen2), torch.float32)
        critic_cfg = dataclasses.replace(cfg.worker.critic, global_batch_size=6, dynamic_batching=dynamic,
                                         micro_batch_size_per_device_for_update=2,
                                         micro_batch_size_per_device_for_experience=2)
        critic = Critic(model, TextAdapter(), critic_cfg, "token", 0, 1, 10, padding_free=True, responses_per_prompt=1)
        grads = {}
        critic.optimizer.step = lambda: grads.update({n: p.grad.detach().clone()
                                                      for n, p in model.named_parameters() if p.grad is not None})
        out[dynamic] = critic.values(batch), critic.update(batch)["critic/vf_loss"], grads
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-5)
    assert out[True][1] == pytest.approx(out[False][1], rel=1e-5)
    for name, g in out[False][2].items():
        torch.testing.assert_close(out[True][2][name], g, rtol=1e-4, atol=1e-6, msg=name)
