"""Accuracies used while training and for the model card: clean, PGD-k (model selection), APGD-CE (the card),
and the gate attacks of a reverse-attention network."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from .._device import model_device
from ..attacks.pgd import pgd_attack
from ..evaluation.evaluate import evaluate
from ..models.resnet import RAAuxPath

__all__ = ["accuracy", "pgd_accuracy", "apgd_ce_accuracy", "gate_apgd_ce_accuracy", "APGD_CE_IMPLEMENTATION"]

#: how :func:`apgd_ce_accuracy` computes its number (recorded in the model card)
APGD_CE_IMPLEMENTATION = "msparse.evaluation.evaluate.evaluate(attack='apgd-ce') (pyautoattack APGD-CE)"


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500, device=None) -> float:
    """Clean top-1 accuracy in [0, 1] (model in eval mode)."""
    device = device or model_device(model)
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        correct += (model(xb).argmax(1) == yb).sum().item()
    return correct / max(len(x), 1)


def pgd_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255, steps: int = 10,
                 step_size: Optional[float] = None, batch_size: int = 500, device=None, seed: int = 0,
                 amp: bool = False) -> float:
    """Accuracy under L-inf PGD-k with uniform random start (step default 2.5 eps / k, at least 0.0078)."""
    device = device or model_device(model)
    step_size = step_size if step_size is not None else max(0.0078, 2.5 * eps / steps)
    model.eval()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    correct = 0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            xa = pgd_attack(model, xb, yb, eps, steps, step_size, amp=amp)
            with torch.no_grad():
                correct += (model(xa).argmax(1) == yb).sum().item()
    finally:
        torch.random.set_rng_state(state)
    return correct / max(len(x), 1)


def apgd_ce_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255,
                     norm: str = "Linf", seed: int = 0, batch_size: int = 500) -> float:
    """Robust accuracy under AutoAttack's APGD-CE (100 iterations, 1 restart, fixed seed), through
    :func:`msparse.evaluation.evaluate.evaluate` (no store), on the model's device."""
    model.eval()
    res = evaluate(model, x, y, attack="apgd-ce", eps=eps, norm=norm, seed=seed, batch_size=batch_size,
                   n_iter=100, n_restarts=1, store=False, diagnostics=False)
    return float(res.robust_acc)


def gate_apgd_ce_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255,
                          seed: int = 0, batch_size: int = 500) -> dict:
    """Adaptive check of a reverse-attention (ANCRA) network: APGD-CE crafted on each RA block's gate.

    Each RA block gates by the argmax of its auxiliary logits at test time, which gradients do not see;
    APGD-CE (100 iterations) crafted on those logits (``RAAuxPath``) and scored on the model attacks the
    gate itself.  Returns accuracies in [0, 1]: ``direct`` (plain APGD-CE), ``gate_1``, ``gate_2``, ... and
    ``worst`` (an image counts only if it survives every one of them).
    """
    kw = dict(eps=eps, norm="Linf", seed=seed, batch_size=batch_size, n_iter=100, n_restarts=1, store=False,
              diagnostics=False)
    model.eval()
    res = {"direct": evaluate(model, x, y, "apgd-ce", **kw)}
    for b in range(len(model.layer4)):
        res[f"gate_{b + 1}"] = evaluate(model, x, y, "transfer:apgd-ce", source=RAAuxPath(model, b), **kw)
    out = {k: float(r.robust_acc) for k, r in res.items()}
    out["worst"] = float(np.logical_and.reduce([r.robust_flags for r in res.values()]).mean())
    return out
