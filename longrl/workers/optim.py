"""Optimizers beyond torch's: AdamW with its moment estimates stored in bf16 (optim.strategy=adamw_bf16).

torch's AdamW keeps exp_avg and exp_avg_sq in the parameters' dtype, 8 bytes per fp32 parameter. EasyR1's
`adamw_bf16` halves that: the moments are stored in bf16 and the update is computed in fp32, so master
weights stay fp32 and only the moments lose precision (8 bits of mantissa, plenty for running averages).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class AdamWBF16State(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, bias-corrected moments) whose moment state is bf16."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 1e-2, eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = None if closure is None else torch.enable_grad()(closure)()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.bfloat16)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.bfloat16)
                state["step"] += 1
                step = state["step"].item()
                grad = p.grad.float()
                exp_avg = state["exp_avg"].float().mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq = state["exp_avg_sq"].float().mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                state["exp_avg"].copy_(exp_avg)
                state["exp_avg_sq"].copy_(exp_avg_sq)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                denom = (exp_avg_sq / (1 - beta2 ** step)).sqrt_().add_(group["eps"])
                p.addcdiv_(exp_avg.to(p.dtype), denom.to(p.dtype), value=-group["lr"] / (1 - beta1 ** step))
        return loss


OPTIMIZERS = {"adamw": torch.optim.AdamW, "adamw_bf16": AdamWBF16State}
