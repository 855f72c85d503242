"""Ulysses collectives on a real 2-rank gloo world (one spawn for the module), plus single-process checks."""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path

import pytest
import torch

from longrl.config import ConfigError
from longrl.parallel.ulysses import (SPGroup, balanced_order, gather_sequence, init_sp_groups, inverse_order,
                                     padded_length, shard_sequence)

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from longrl.parallel.ulysses import all_to_all_heads_to_seq, all_to_all_seq_to_heads

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        res: dict[str, object] = {}
        solo = init_sp_groups(1)
        sp = init_sp_groups(2)
        res["groups"] = (solo.rank, solo.size, sp.rank, sp.size)
        try:
            init_sp_groups(3)
        except ConfigError as e:
            res["bad_size_error"] = str(e)

        # global x[0, h, l, 0] = 10 h + l with H=4 heads, L=6 tokens; this rank holds tokens 3r..3r+2
        full = (10 * torch.arange(4)[:, None] + torch.arange(6)[None, :]).float()[None, :, :, None]
        x = full[:, :, 3 * rank: 3 * rank + 3].clone().requires_grad_(True)
        y = all_to_all_seq_to_heads(x, sp)
        res["heads"] = y.detach()
        res["round_trip"] = all_to_all_heads_to_seq(y, sp).detach()
        (y * (rank + 1)).sum().backward()
        res["a2a_grad"] = x.grad

        # rank r holds [[10r, 10r+1]]; the gathered row is cut to 3 tokens
        t = torch.tensor([[10.0 * rank, 10.0 * rank + 1]], requires_grad=True)
        g = gather_sequence(t, sp, dim=1, original_len=3)
        res["gathered"] = g.detach()
        weights = torch.tensor([[1.0, 2.0, 3.0]]) * (1 if rank == 0 else 10)
        (g * weights).sum().backward()
        res["gather_grad"] = t.grad

        # M-RoPE position ids [3, B=1, L=5]: row k is 100 k + l
        pos = (100 * torch.arange(3)[:, None, None] + torch.arange(5)).long()
        res["mrope_shard"] = shard_sequence(pos, sp, dim=-1)
        res["mrope_round_trip"] = gather_sequence(shard_sequence(pos, sp, dim=-1), sp, dim=-1, original_len=5)
        torch.save(res, Path(out_dir) / f"rank_{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ulysses")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank_{r}.pt") for r in range(WORLD)]


def test_sp_groups_are_consecutive_ranks_of_the_world(ranks):
    # sp=1: every rank is its own group (rank 0 of 1); sp=2: ranks 0,1 form one group
    assert [r["groups"] for r in ranks] == [(0, 1, 0, 2), (0, 1, 1, 2)]


def test_sp_size_that_does_not_divide_the_world_names_both_and_the_choices(ranks):
    assert ranks[0]["bad_size_error"] == ("worker.actor.ulysses_size=3 must divide the world size 2; "
                                          "choose one of [1, 2]")


def test_seq_to_heads_gives_each_rank_whole_sequence_of_its_heads(ranks):
    # x[h, l] = 10 h + l; rank 0 gets heads 0,1 and rank 1 heads 2,3, each over all 6 tokens
    expected = [[[0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15]], [[20, 21, 22, 23, 24, 25], [30, 31, 32, 33, 34, 35]]]
    for rank, res in enumerate(ranks):
        assert res["heads"].squeeze(-1)[0].tolist() == expected[rank]


def test_heads_to_seq_undoes_seq_to_heads(ranks):
    for rank, res in enumerate(ranks):
        tokens = list(range(3 * rank, 3 * rank + 3))
        assert res["round_trip"].squeeze(-1)[0].tolist() == [[10 * h + t for t in tokens] for h in range(4)]


def test_all_to_all_gradient_returns_to_the_rank_that_owns_the_token(ranks):
    # rank r's loss is (r+1) * sum of its heads: d/dx = 1 for heads 0,1 (rank 0), 2 for heads 2,3 (rank 1),
    # on every token, whichever rank holds the token
    for res in ranks:
        assert res["a2a_grad"].squeeze(-1)[0].tolist() == [[1.0] * 3, [1.0] * 3, [2.0] * 3, [2.0] * 3]


def test_gather_sequence_joins_in_rank_order_and_cuts_the_padding(ranks):
    for res in ranks:
        assert res["gathered"].tolist() == [[0.0, 1.0, 10.0]]


def test_gather_sequence_gradient_sums_every_ranks_loss(ranks):
    # d(sum of losses)/d(full) = [1,2,3] + [10,20,30] = [11,22,33]; the cut 4th token gets 0
    assert ranks[0]["gather_grad"].tolist() == [[11.0, 22.0]]
    assert ranks[1]["gather_grad"].tolist() == [[33.0, 0.0]]


def test_mrope_position_ids_shard_along_the_last_dim(ranks):
    # 5 positions padded to 6 with 0; rank 0 keeps l = 0,1,2 and rank 1 l = 3,4 + the pad, in all 3 rows
    assert ranks[0]["mrope_shard"][:, 0].tolist() == [[0, 1, 2], [100, 101, 102], [200, 201, 202]]
    assert ranks[1]["mrope_shard"][:, 0].tolist() == [[3, 4, 0], [103, 104, 0], [203, 204, 0]]
    pos = (100 * torch.arange(3)[:, None, None] + torch.arange(5)).long()
    for res in ranks:
        assert torch.equal(res["mrope_round_trip"], pos)


# ---- single process -----------------------------------------------------------------------------------------------


def test_padded_length_rounds_up_to_a_multiple_of_sp():
    assert [padded_length(n, 2) for n in (1, 2, 5, 6)] == [2, 2, 6, 6]
    assert padded_length(7, 4) == 8


def test_shard_sequence_pads_with_pad_value_and_takes_this_ranks_slice():
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    # 5 tokens -> 6 with pad 9 -> rank 1 of 2 keeps tokens 3..5 = [4, 5, 9]
    assert shard_sequence(ids, SPGroup(1, 2, None), dim=1, pad_value=9).tolist() == [[4, 5, 9]]
    # embeddings [B, L, E] along dim 1: rank 0 of 2 keeps the first 3 (padded) rows
    emb = torch.arange(10.0).reshape(1, 5, 2)
    assert shard_sequence(emb, SPGroup(0, 2, None), dim=1).tolist() == [[[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]]


def test_balanced_order_deals_the_weighted_positions_evenly_and_keeps_each_slice_in_sequence_order():
    # 11 positions, media at 1..7 (a contiguous cut of the 12 padded positions into 3 would give 3, 4, 0)
    weights = torch.tensor([0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    order = balanced_order(weights, 3)
    assert sorted(order.tolist()) == list(range(12))
    ids = torch.arange(11)[None]
    slices = [shard_sequence(ids, SPGroup(r, 3, None), dim=1, pad_value=-1, order=order)[0].tolist()
              for r in range(3)]
    assert [sum(1 <= i <= 7 for i in s) for s in slices] == [3, 2, 2]
    assert all(s == sorted(s, key=lambda i: 99 if i < 0 else i) for s in slices) and all(len(s) == 4 for s in slices)
    assert torch.equal(order[inverse_order(order)], torch.arange(12))
    # heavier positions (media in more rows) are dealt first
    assert shard_sequence(torch.arange(4)[None], SPGroup(1, 2, None), order=balanced_order(
        torch.tensor([2, 2, 1, 0]), 2)).tolist() == [[1, 3]]


def test_sp_of_one_leaves_tensors_unchanged():
    sp = SPGroup(0, 1, None)
    t = torch.arange(5.0)[None]
    assert shard_sequence(t, sp) is t
    assert gather_sequence(t, sp, original_len=3).tolist() == [[0.0, 1.0, 2.0]]


def test_init_sp_groups_without_a_world_allows_only_size_one():
    assert init_sp_groups(1) == SPGroup(0, 1, None)
    with pytest.raises(ConfigError, match="ulysses_size=2 needs torch.distributed"):
        init_sp_groups(2)
