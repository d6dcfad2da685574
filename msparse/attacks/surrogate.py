"""The smooth-surrogate gradient: exact MeanSparse forward, backward through a differentiable relaxation of the band.

MeanSparse replaces an entry by its centre c when |x − c| < α·σ (paper Eq. 2). The official gradient of that
step is 0 inside the band and 1 outside; BPDA takes 1 everywhere. Neither sees the jump of size ≈ α·σ at the
band's edge, which is exactly what an attacker can use: pushing an entry across the edge changes the output
discontinuously. The surrogate used here relaxes the band indicator with a sigmoid of temperature τ (in units
of the channel's σ, so it is scale-free):

    m(x) = sigmoid((α·σ − |x − c|) / (τ·σ))            soft "inside the band" indicator
    f(x) = (1 − m(x))·x + m(x)·c                        the relaxed operator
    f'(x) = (1 − m) + |x − c|·m·(1 − m) / (τ·σ)         the backward used here (≥ 0)

The forward stays exact (the model that is attacked is the model that is evaluated); only the backward pass is
f'. As τ → 0, f' tends to the official gradient plus a spike at the band's edge; for large τ it tends to a
smooth blend. The attack runs its preset once per temperature in :data:`TAUS` (annealed from smooth to sharp),
each stage on the points still robust, so a point is robust only if it survives every temperature.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..core.placement import operators

__all__ = ["TAUS", "surrogate_backward"]

#: temperatures (× σ of the channel), annealed from smooth to sharp; recorded in the attack's key.
TAUS: tuple[float, ...] = (0.3, 0.1, 0.03)


class _SmoothBand(torch.autograd.Function):
    """Forward: the operator's exact output. Backward: ``grad · f'(x)`` of the sigmoid relaxation."""

    @staticmethod
    def forward(ctx, x, out, centre, threshold, width):
        ctx.save_for_backward(x, centre, threshold, width)
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        x, centre, threshold, width = ctx.saved_tensors
        dist = (x - centre).abs()
        m = torch.sigmoid((threshold - dist) / width)
        slope = (1 - m) + dist * m * (1 - m) / width
        return grad * slope, None, None, None, None


@contextlib.contextmanager
def surrogate_backward(model: nn.Module, tau: float) -> Iterator[nn.Module]:
    """Temporarily give every active MeanSparse site of ``model`` the surrogate backward of temperature ``tau``
    (× σ). The forward output is unchanged bit for bit; hooks are removed on exit, also when the body raises.
    Sites with α = 0 are the identity and keep their (exact) gradient."""
    tau = float(tau)
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau!r}")
    handles = []

    def hook(op, args, out):
        x = args[0]
        if out is x or not (torch.is_grad_enabled() and x.requires_grad):
            return None
        blocked, centre = op.band(x)          # the operator's own centre, broadcast to x's layout
        del blocked
        sigma = torch.sqrt(op.var).view(centre.shape).to(x.dtype)
        threshold = (op.alpha * torch.sqrt(op.var)).view(centre.shape).to(x.dtype)
        width = (tau * sigma).clamp_min(torch.finfo(x.dtype).tiny)
        return _SmoothBand.apply(x, out.detach(), centre.to(x.dtype), threshold, width)

    try:
        for op in operators(model):
            handles.append(op.register_forward_hook(hook))
        yield model
    finally:
        for h in handles:
            h.remove()
