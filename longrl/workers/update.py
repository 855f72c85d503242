"""One optimisation pass shared by the actor and the critic: epochs x mini-batches x micro-batches.

Each micro-batch's loss is a mean over its own tokens (or sequences). Weighting it by its share
of the whole mini-batch across all ranks makes the sum of micro losses the exact `loss_avg_mode`
mean over the global mini-batch; FSDP averages gradients over the world, hence the factor `world`.

Rows the dispatch split unevenly (Dispatch.SPLIT_SAMPLES: diffusion samples) are grouped into the world's optimizer
steps by their place in the driver's batch (`placed_minibatches`); the padding rows that keep every rank's
collectives in step count no loss units, so their micro-batches add nothing to the gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from longrl.algorithms import RolloutDrift
from longrl.controller.dispatch import PADDING, ROW_INDEX
from longrl.parallel.collectives import all_reduce_scalar, all_reduce_tensor
from longrl.protocol import Batch

MicroLoss = Callable[[Batch], tuple[torch.Tensor, dict[str, float]]]
MicroSplit = Callable[[Batch], list[Batch]]
MiniSplit = Callable[[Batch], list[Batch]]


def loss_units(batch: Batch, loss_avg_mode: str) -> torch.Tensor:
    """What `loss_avg_mode` averages over: valid response tokens ('token'), or sequences (the others); a padding
    row of the dispatch (ROW_INDEX = PADDING) counts neither."""
    real = batch[ROW_INDEX] != PADDING if ROW_INDEX in batch else torch.ones(len(batch), dtype=torch.bool)
    if loss_avg_mode == "token":
        return batch["response_mask"][real].sum().float()
    return real.sum().float()


def padding_only(batch: Batch) -> Batch:
    """One row of `batch` marked as padding: the micro-batch of a rank that holds none of a step's rows (it must
    still run the step's forward and backward, whose parameter gathers and gradient reductions are collectives)."""
    row = batch.index([0])
    row[ROW_INDEX] = torch.tensor([PADDING])
    return row


def placed_minibatches(batch: Batch, rows_per_step: int) -> list[Batch]:
    """This rank's part of each of the world's optimizer steps, for rows the dispatch placed by SPLIT_SAMPLES:
    step k takes the driver batch's rows [k x rows_per_step, (k+1) x rows_per_step), wherever they were placed, so
    the steps are those of one rank holding every row. A rank holding none of a step's rows gets a padding row.
    A collective (the number of steps)."""
    index = batch[ROW_INDEX]
    step = torch.where(index == PADDING, -1, index // rows_per_step)
    steps = int(all_reduce_scalar(float(step.max()) + 1, "max"))
    parts = []
    for k in range(steps):
        rows = torch.nonzero(step == k).flatten().tolist()
        parts.append(batch.index(rows) if rows else padding_only(batch))
    return parts


def even_micro_batches(mini: Batch, size: int) -> list[Batch]:
    """`mini`'s real rows in micro-batches of at most `size`, plus padding micro-batches until every rank runs as
    many as the rank with the most (the forwards' parameter gathers are collectives). A collective."""
    real = mini.index(torch.nonzero(mini[ROW_INDEX] != PADDING).flatten().tolist())
    parts = real.split(size) if len(real) else []
    count = int(all_reduce_scalar(float(len(parts)), "max"))
    return parts + [padding_only(mini)] * (count - len(parts))


def on_policy_drift(batch: Batch, steps: int, epochs: int) -> RolloutDrift | None:
    """For an update whose batch has no `old_log_probs` (on-policy, config.skips_old_log_probs: its own forward,
    detached, is pi_old): check that it takes a single optimizer step (`steps` mini-batches per epoch), and return
    the RolloutDrift its micro losses fill from that forward (None with old_log_probs, whose pass reported the
    drift, or without rollout log-probs)."""
    if "old_log_probs" in batch:
        return None
    if epochs != 1 or steps > 1:
        raise ValueError(f"the batch has no old_log_probs, but ppo_epochs={epochs} over {steps} mini-batches of its "
                         f"{len(batch)} rows takes more than one optimizer step, so the policy moves before the later "
                         f"ones: compute old_log_probs first")
    return RolloutDrift() if "rollout_log_probs" in batch else None


def world_drift_metrics(drift: RolloutDrift | None) -> dict[str, float]:
    """The rollout/* metrics of `drift` summed over all ranks (every rank reports the world's figures)."""
    if drift is None:
        return {}
    drift.sums = {k: all_reduce_scalar(v) for k, v in drift.sums.items()}
    drift.max = all_reduce_scalar(drift.max, "max")
    return drift.metrics()


def minibatch_updates(model: torch.nn.Module, optimizer: torch.optim.Optimizer, lr_scheduler, minis: list[Batch], *,
                      micro_split: MicroSplit, epochs: int, loss_avg_mode: str, max_grad_norm: float,
                      micro_loss: MicroLoss, schedule_per_call: bool = False) -> dict[str, float]:
    """`epochs` passes over this rank's mini-batches `minis` (`batch.split(mini_size)`, or `placed_minibatches`),
    one optimizer step each, each mini-batch in the micro-batches `micro_split` makes of it (any grouping of its
    rows: the weighting stays exact); mean stats, except `skipped_steps`: how many optimizer steps a non-finite
    gradient skipped.

    The LR schedule advances once per optimizer step taken, or with `schedule_per_call` once per call that
    took any step: the RL actor and critic, whose schedule counts RL steps as in EasyR1 (its workers step the
    scheduler once per update_actor), so lr_warmup_steps and the cosine length mean RL steps there and here."""
    model.train()
    history: dict[str, list[float]] = {}
    for _ in range(epochs):
        for mini in minis:
            lr = lr_scheduler.get_last_lr()[0]  # the rate this step uses
            stats = _optimizer_step(model, optimizer, None if schedule_per_call else lr_scheduler, mini, micro_split,
                                    loss_avg_mode, max_grad_norm, micro_loss)
            for key, value in {**stats, "lr": lr}.items():
                history.setdefault(key, []).append(value)
    skipped = history.get("skipped_steps", [])
    if schedule_per_call and sum(skipped) < len(skipped):  # a call that took a step advances the schedule
        lr_scheduler.step()
    return {k: sum(v) / (1 if k == "skipped_steps" else len(v)) for k, v in history.items()}


def _optimizer_step(model, optimizer, lr_scheduler, mini: Batch, micro_split: MicroSplit, loss_avg_mode: str,
                    max_grad_norm: float, micro_loss: MicroLoss) -> dict[str, float]:
    world = dist.get_world_size() if dist.is_initialized() else 1
    units = all_reduce_tensor(loss_units(mini, loss_avg_mode))
    stats: dict[str, float] = {}
    micro_batches = micro_split(mini)
    for i, micro in enumerate(micro_batches):
        share = float(loss_units(micro, loss_avg_mode) / units)
        if isinstance(model, FSDPModule):  # reduce-scatter gradients only once per mini-batch
            model.set_requires_gradient_sync(i == len(micro_batches) - 1)
        loss, micro_stats = micro_loss(micro)
        (loss * share * world).backward()
        for key, value in micro_stats.items():
            stats[key] = stats.get(key, 0.0) + value * share
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    grad_norm = float(grad_norm.full_tensor() if isinstance(grad_norm, DTensor) else grad_norm)
    # A non-finite norm (from a non-finite loss or gradient) skips the step instead of poisoning the weights;
    # the norm is global (FSDP reduces it over ranks), so every rank skips alike.
    finite = math.isfinite(grad_norm)
    if finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    # each rank's stats are its shares of the global mini-batch: their sum over ranks is the mean
    stats = {k: all_reduce_scalar(v) for k, v in stats.items()}
    stats.update(grad_norm=grad_norm, skipped_steps=float(not finite))
    if finite and lr_scheduler is not None:  # the LR schedule counts the steps taken, not the ones skipped
        lr_scheduler.step()
    return stats

