import pytest
import torch

from longrl.workers.optim import AdamWBF16State


def test_first_step_moves_each_weight_by_lr_against_its_gradient_sign_after_decay():
    # step 1: m_hat = g, v_hat = g^2, so the update is -lr * g / (|g| + eps) = -lr * sign(g), after p *= 1 - lr*wd
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    p.grad = torch.tensor([0.3, -4.0, 2.0])
    AdamWBF16State([p], lr=0.1, weight_decay=0.5).step()
    decayed = torch.tensor([1.0, -2.0, 0.5]) * (1 - 0.1 * 0.5)
    assert p.detach() == pytest.approx((decayed - 0.1 * torch.tensor([1.0, -1.0, 1.0])).tolist(), abs=1e-6)


def test_moments_are_stored_in_bf16_and_track_torch_adamw():
    torch.manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(64))
    ref = torch.nn.Parameter(ours.detach().clone())
    opt = AdamWBF16State([ours], lr=1e-2, weight_decay=1e-2)
    ref_opt = torch.optim.AdamW([ref], lr=1e-2, weight_decay=1e-2)
    for _ in range(5):
        grad = torch.randn(64)
        ours.grad, ref.grad = grad.clone(), grad.clone()
        opt.step()
        ref_opt.step()
    state = opt.state[ours]
    assert state["exp_avg"].dtype == torch.bfloat16 and state["exp_avg_sq"].dtype == torch.bfloat16
    assert ours.dtype == torch.float32
    # 5 steps of lr 1e-2 move weights ~5e-2; bf16 moments (3 significant digits) keep them within 1e-3 of fp32
    assert (ours - ref).abs().max().item() < 1e-3 and (ours - ref).abs().max().item() > 0


def test_adamw_bf16_is_what_optim_strategy_selects():
    from longrl.config import OptimConfig
    from longrl.workers.actor import build_optimizer

    optimizer, _ = build_optimizer(torch.nn.Linear(2, 2), OptimConfig(strategy="adamw_bf16"), 10)
    assert isinstance(optimizer, AdamWBF16State)
    assert isinstance(build_optimizer(torch.nn.Linear(2, 2), OptimConfig(), 10)[0], torch.optim.AdamW)
