"""The training-time attacks: L-inf PGD and its one-step and TRADES variants (the inner maximisation of
adversarial training; evaluation uses AutoAttack, :mod:`msparse.attacks.autoattack`).

PGD-AT (Madry et al.): PGD-10 with uniform random start, step 0.0078 (the MeanSparse paper's appendix A.1);
FGSM-RS (Wong et al. 2020): one step from a uniform random start; TRADES (Zhang et al. 2019): maximise the KL
divergence to the clean prediction from x + 0.001 N(0, I).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UnknownNameError

__all__ = ["pgd_attack", "fgsm_rs_attack", "trades_attack", "autocast"]


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled``, else nothing."""
    if enabled:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
               step_size: float, *, random_start: str = "uniform", targeted: bool = False,
               loss_fn: Optional[Callable] = None, forward: Optional[Callable] = None,
               amp: bool = False) -> torch.Tensor:
    """L-inf PGD; returns x_adv (same shape as x), detached, in [0, 1] and within eps of x.

    Maximises ``loss_fn(forward(x_adv), y)`` (default CE of ``model(x_adv)``; minimises it when
    ``targeted``); ``random_start`` is "uniform" (in the eps-ball), "normal" (0.001 N(0, I), TRADES/ANCRA
    style) or "none".  The model's mode is not changed (callers put it in eval mode).
    """
    loss_fn = loss_fn or (lambda logits, t: F.cross_entropy(logits, t))
    forward = forward or model
    x = x.detach()
    if random_start == "uniform":
        x_adv = x + torch.empty_like(x).uniform_(-eps, eps)
    elif random_start == "normal":
        x_adv = x + 0.001 * torch.randn_like(x)
    elif random_start == "none":
        x_adv = x.clone()
    else:
        raise UnknownNameError(f"random_start must be uniform, normal or none, got {random_start!r}")
    x_adv = _project(x_adv, x, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad(), autocast(x.device, amp):
            loss = loss_fn(forward(x_adv), y)
            grad, = torch.autograd.grad(loss.float(), x_adv)
        sign = -1.0 if targeted else 1.0
        x_adv = _project(x_adv.detach() + sign * step_size * grad.sign(), x, eps)
    return x_adv.detach()


def fgsm_rs_attack(model, x, y, eps: float, step_size: float, amp: bool = False) -> torch.Tensor:
    """FGSM with uniform random start (Wong et al. 2020): one PGD step of ``step_size``."""
    return pgd_attack(model, x, y, eps, 1, step_size, random_start="uniform", amp=amp)


def trades_attack(model, x, eps: float, steps: int, step_size: float, amp: bool = False) -> torch.Tensor:
    """TRADES inner maximisation: maximise KL(f(x') || f(x)) from x + 0.001 N(0, I)."""
    with torch.no_grad(), autocast(x.device, amp):
        p_nat = F.softmax(model(x).float(), dim=1)
    kl = lambda logits, p: F.kl_div(F.log_softmax(logits.float(), 1), p, reduction="sum")  # noqa: E731
    return pgd_attack(model, x, p_nat, eps, steps, step_size, random_start="normal", loss_fn=kl, amp=amp)
