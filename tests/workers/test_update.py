"""minibatch_updates: a step whose gradient is not finite is skipped, counted, and leaves the LR schedule alone."""

import math

import pytest
import torch

from longrl.protocol import Batch
from longrl.workers.update import minibatch_updates


def _run(poison: list[float]):
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

    stats = minibatch_updates(model, optimizer, scheduler, batch, mini_size=2, micro_split=lambda mini: mini.split(2), epochs=1,
                              loss_avg_mode="seq", max_grad_norm=10.0, micro_loss=micro_loss)
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
