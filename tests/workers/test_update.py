"""minibatch_updates: a step whose gradient is not finite is skipped (on every rank alike), counted, and leaves the
LR schedule alone."""

import math

import pytest
import torch

from longrl.protocol import Batch
from longrl.workers.update import minibatch_updates


def _run(poison: list[float], schedule_per_call: bool = False):
    """SGD(lr=0.1) on w.x, w = [1, 2], schedule lr * 1/(k+1) after k steps; two mini-batches of 2 rows."""
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1 / (k + 1))
    batch = Batch({"x": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]),
                   "scale": torch.tensor(poison)})

    def micro_loss(micro: Batch):
        loss = (model(micro["x"]).squeeze(-1) * micro["scale"]).mean()
        return loss, {"loss": loss.item()}

    stats = minibatch_updates(model, optimizer, scheduler, batch.split(2), micro_split=lambda mini: mini.split(2),
                              epochs=1, loss_avg_mode="seq", max_grad_norm=10.0, micro_loss=micro_loss,
                              schedule_per_call=schedule_per_call)
    return model.weight.detach()[0].tolist(), scheduler, stats


def test_a_non_finite_gradient_skips_the_step_counts_it_and_does_not_advance_the_schedule():
    weights, scheduler, stats = _run([1.0, 1.0, math.nan, 1.0])
    # step 1: loss = (w0 + w1)/2, grad = [0.5, 0.5], lr 0.1 -> w = [0.95, 1.95]; step 2 (nan) skipped
    assert weights == pytest.approx([0.95, 1.95], abs=1e-6)
    assert stats["skipped_steps"] == 1.0
    assert scheduler.last_epoch == 1 and scheduler.get_last_lr() == [0.05]  # one step taken: 0.1 * 1/2


def test_finite_steps_report_zero_skipped_and_advance_the_schedule_each():
    weights, scheduler, stats = _run([1.0, 1.0, 1.0, 1.0])
    # step 2 at lr 0.05: w = [0.95 - 0.025, 1.95 - 0.025]
    assert weights == pytest.approx([0.925, 1.925], abs=1e-6)
    assert stats["skipped_steps"] == 0.0 and scheduler.last_epoch == 2


def test_an_infinite_loss_is_skipped_like_a_nan():
    weights, _, stats = _run([math.inf, 1.0, 1.0, 1.0])
    # step 1 skipped; step 2 at the unadvanced lr 0.1: w = [0.95, 1.95]
    assert weights == pytest.approx([0.95, 1.95], abs=1e-6) and stats["skipped_steps"] == 1.0


def _rank(rank: int, port: int, out_dir: str) -> None:
    """One rank of a 2-process FSDP2 world (gloo): rank 1's loss is NaN in the second of three mini-batches."""
    import datetime
    import os

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
    try:
        model = torch.nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            model.weight.copy_(torch.arange(8.0).reshape(2, 4) / 8)
        fully_shard(model, mesh=init_device_mesh("cpu", (2,)))  # each rank holds one row of the weight
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1 / (k + 1))
        poison = [1.0, math.nan if rank == 1 else 1.0, 1.0]  # one scale per mini-batch of 2 rows
        batch = Batch({"x": torch.eye(4)[[0, 1, 2, 3, 0, 1]] + rank, "scale": torch.tensor(poison).repeat_interleave(2)})

        def micro_loss(micro: Batch):
            loss = (model(micro["x"]).sum(-1) * micro["scale"]).mean()
            return loss, {"loss": loss.item()}

        stats = minibatch_updates(model, optimizer, scheduler, batch.split(2), epochs=1, loss_avg_mode="seq",
                                  micro_split=lambda mini: mini.split(1), max_grad_norm=10.0, micro_loss=micro_loss)
        weight = model.weight.full_tensor() if isinstance(model.weight, DTensor) else model.weight
        torch.save({"stats": stats, "weight": weight.detach().clone(), "last_epoch": scheduler.last_epoch,
                    "lr": scheduler.get_last_lr()[0]}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_a_nan_on_one_of_two_fsdp_ranks_skips_the_step_on_both_alike(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(port, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for out in ranks:
        # rank 0's own loss was finite, but the norm is global: NaN on both, so both skip the same step
        assert out["stats"]["skipped_steps"] == 1.0 and math.isnan(out["stats"]["grad_norm"])
        assert out["last_epoch"] == 2 and out["lr"] == pytest.approx(0.1 / 3)  # two steps taken, not three
    assert torch.equal(ranks[0]["weight"], ranks[1]["weight"]) and torch.isfinite(ranks[0]["weight"]).all()
    # one process taking the two finite mini-batches (rows 0 and 1 of both ranks, each time) gets the same weights
    model = torch.nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.arange(8.0).reshape(2, 4) / 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1 / (k + 1))
    x = torch.cat([torch.eye(4)[[0, 1]] + r for r in range(2)])
    for _ in range(2):
        model(x).sum(-1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    assert torch.allclose(ranks[0]["weight"], model.weight.detach(), atol=1e-6)


def test_the_rl_schedule_advances_once_per_call_as_easyr1s_once_per_update():
    weights, scheduler, stats = _run([1.0, 1.0, 1.0, 1.0], schedule_per_call=True)
    # both optimizer steps at lr 0.1: w = [1 - 0.05 - 0.05, 2 - 0.05 - 0.05]; then one schedule step
    assert weights == pytest.approx([0.9, 1.9], abs=1e-6)
    assert scheduler.last_epoch == 1 and stats["lr"] == pytest.approx(0.1)
    _, scheduler, _ = _run([math.nan, math.nan, math.nan, math.nan], schedule_per_call=True)
    assert scheduler.last_epoch == 0  # no step taken: the schedule stays


UNEVEN_X = torch.tensor([[1.0, 0, 0, 1], [0, 2, 0, 0], [1, 1, 0, 0], [0, 0, 3, 1], [2, 0, 1, 0]])
UNEVEN_MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 1, 1]])


def _uneven_model() -> torch.nn.Module:
    model = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -0.25, 0.75, 1.0]]))
    return model


def _uneven_update(minis: list[Batch], micro_split, loss_avg_mode: str, model: torch.nn.Module) -> dict[str, float]:
    """Three SGD steps of a loss quadratic in the weights (so a step's rows and their weighting all matter)."""
    from longrl.algorithms import aggregate_loss

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1.0)

    def micro_loss(micro: Batch):
        loss_mat = model(micro["x"]) ** 2 * torch.tensor([1.0, 2.0, 3.0])  # [b, 3]
        loss = aggregate_loss(loss_mat, micro["response_mask"], loss_avg_mode)
        return loss, {"loss": loss.item()}

    return minibatch_updates(model, optimizer, scheduler, minis, micro_split=micro_split, epochs=1,
                             loss_avg_mode=loss_avg_mode, max_grad_norm=1e9, micro_loss=micro_loss)


def _uneven_rank(rank: int, port: int, out_dir: str, loss_avg_mode: str) -> None:
    """One rank of 2 (gloo, FSDP2) updating on its share of 5 rows placed by Dispatch.SPLIT_SAMPLES."""
    import datetime
    import os

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from longrl.controller.dispatch import PADDING, ROW_INDEX, split_for_ranks
    from longrl.workers.update import even_micro_batches, placed_minibatches

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
    try:
        parts, pad = split_for_ranks(Batch({"x": UNEVEN_X, "response_mask": UNEVEN_MASK}), 2, 1, tag=True)
        minis = placed_minibatches(parts[rank], 2)  # 2 rows per optimizer step: rows 0-1, 2-3, 4
        placed = [m[ROW_INDEX].tolist() for m in minis]
        model = _uneven_model()
        fully_shard(model, mesh=init_device_mesh("cpu", (2,)))
        stats = _uneven_update(minis, lambda mini: even_micro_batches(mini, 1), loss_avg_mode, model)
        torch.save({"pad": pad, "placed": placed, "stats": stats, "padding": PADDING,
                    "weight": model.weight.full_tensor().detach().clone()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("loss_avg_mode", ["seq", "token"])
def test_rows_placed_unevenly_over_two_ranks_train_as_one_process_holding_them_all(tmp_path, loss_avg_mode):
    # Long-RL's diffusion steps: 2 x 5 samples on 8 ranks; here 5 rows on 2 ranks (3 + 2 and a padding copy),
    # steps of 2 rows that straddle the ranks or lie on one (the other runs padding), 1-row micro-batches
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_uneven_rank, args=(port, str(tmp_path), loss_avg_mode), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    pad = ranks[0]["padding"]
    assert ranks[0]["pad"] == 1
    assert ranks[0]["placed"] == [[0, 1], [2], [pad]] and ranks[1]["placed"] == [[pad], [3], [4]]
    single = _uneven_model()
    stats = _uneven_update(Batch({"x": UNEVEN_X, "response_mask": UNEVEN_MASK}).split(2), lambda mini: mini.split(1),
                           loss_avg_mode, single)
    for out in ranks:
        assert torch.allclose(out["weight"], single.weight.detach(), atol=1e-6, rtol=0), (out["weight"], single.weight)
        assert out["stats"]["loss"] == pytest.approx(stats["loss"], abs=1e-6)
        assert out["stats"]["grad_norm"] == pytest.approx(stats["grad_norm"], abs=1e-6)
