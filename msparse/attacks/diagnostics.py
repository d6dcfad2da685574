"""Gradient-masking diagnostics: the input gradient through the model's current backward path, and how often
it is exactly zero (MeanSparse's band has zero gradient under the exact backward)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UnknownNameError

__all__ = ["input_gradient", "zero_gradient_fraction"]


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   loss: str = "ce") -> torch.Tensor:
    """Gradient [N, C, H, W] of the per-example loss ("ce" or "dlr") with respect to the input,
    through the model's current backward path."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if loss == "ce":
            val = F.cross_entropy(logits, y, reduction="sum")
        elif loss == "dlr":
            srt, _ = logits.sort(dim=1)
            u = torch.arange(len(x), device=x.device)
            top_other = torch.where(srt[:, -1] == logits[u, y], srt[:, -2], srt[:, -1])
            val = (-(logits[u, y] - top_other) / (srt[:, -1] - srt[:, -3] + 1e-12)).sum()
        else:
            raise UnknownNameError(f"loss must be 'ce' or 'dlr', got {loss!r}")
        (g,) = torch.autograd.grad(val, [x])
    return g.detach()


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                           loss: str = "ce") -> float:
    """Fraction of examples whose input gradient is exactly zero (AutoAttack's zero-gradient flag,
    computed for CE as well; AutoAttack itself checks only DLR)."""
    g = input_gradient(model, x, y, loss)
    return float((g.flatten(1).abs().sum(1) == 0).float().mean().item()) if len(x) else math.nan
