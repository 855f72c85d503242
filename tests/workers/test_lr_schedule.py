import pytest
import torch

from longrl.config import OptimConfig
from longrl.workers.actor import build_optimizer


def lrs(cfg: OptimConfig, total_steps: int) -> list[float]:
    optimizer, scheduler = build_optimizer(torch.nn.Linear(2, 2), cfg, total_steps)
    out = []
    for _ in range(total_steps + 1):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_constant_schedule_keeps_lr_after_warmup():
    # warmup 1 step: factor (0+1)/(1+1) = 0.5, then 1.0
    assert lrs(OptimConfig(lr=1.0, lr_warmup_steps=1), 3) == pytest.approx([0.5, 1.0, 1.0, 1.0])


def test_cosine_schedule_decays_to_min_lr_ratio():
    # floor 0.5, 4 steps: 0.5 + 0.5 * 0.5 * (1 + cos(pi * p)) for p = 0, 1/4, 1/2, 3/4, 1
    cfg = OptimConfig(lr=1.0, lr_warmup_steps=0, lr_scheduler_type="cosine", min_lr_ratio=0.5)
    assert lrs(cfg, 4) == pytest.approx([1.0, 0.926777, 0.75, 0.573223, 0.5], abs=1e-6)


def test_cosine_without_min_lr_ratio_decays_to_zero():
    assert lrs(OptimConfig(lr=1.0, lr_warmup_steps=0, lr_scheduler_type="cosine"), 2)[-1] == pytest.approx(0.0)
