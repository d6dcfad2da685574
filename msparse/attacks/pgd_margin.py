"""Evaluation PGD: projected gradient descent with a margin (or CE) loss and random restarts (our own code).

Madry et al. (2018, "Towards deep learning models resistant to adversarial attacks", §5) PGD with a uniform
random start, evaluated with the margin loss of Carlini & Wagner (2017, "Towards evaluating the robustness of
neural networks", f₆ with κ = 0)

    L(x) = max_{j≠y} z_j(x) − z_y(x)      (an image is broken when L > 0),

the loss Tramèr et al. (2020, "On adaptive attacks to adversarial example defenses") recommend over CE for
adaptive evaluations, or with cross-entropy (``loss=ce``). Every step is an ascent step of fixed size
``step·ε/n_iter`` (Madry et al.'s "2.5·ε/k" rule with the default ``step = 2.5``): L∞ along the sign of the
gradient, L2 along the L2-normalised gradient, then projected onto the ε-ball and the [0, 1] box.

The gradient is plain autograd of ``model(x)``: whatever backward is active when the attack runs (the
identity backward of ``bpda:``, the relaxation of ``surrogate:``, both set by the runner) is what it follows.

Per image the attack stops at the first misclassified iterate (the random start counts) and keeps it; a
restart attacks only the images every earlier restart left standing, so more restarts never leave more
images standing. Random starts come from a local ``torch.Generator`` seeded from ``(seed, restart)`` and
drawn for the whole batch, so the result depends only on the batch and the seed (not the global RNG, and
restart r is the same whichever images earlier restarts broke).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, UnknownNameError
from .registry import AttackMethod, register_attack

__all__ = ["PGD", "margin_loss", "pgd_restarts", "LOSSES", "PARAMS"]

#: the loss names ``loss=`` accepts
LOSSES = ("margin", "ce")
#: declared fixed parameters (enter the record key): loss, and the step size per iteration as a multiple of ε/n_iter
PARAMS = {"loss": "margin", "step": 2.5}


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per image: the largest logit of a class other than ``y`` minus the logit of ``y`` (> 0 iff misclassified,
    ties aside)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return other - true


def _loss_fn(name: str):
    if name == "margin":
        return margin_loss
    if name == "ce":
        return lambda logits, y: F.cross_entropy(logits, y, reduction="none")
    raise UnknownNameError(f"pgd: unknown loss {name!r}; choose from {', '.join(LOSSES)} (e.g. pgd[loss=ce])")


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.ndim - 1)))


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    d = x_adv - x
    if norm == "Linf":
        d = d.clamp(-eps, eps)
    else:
        d = d * (eps / _flat_norm(d).clamp_min(1e-12)).clamp(max=1.0)
    # clamping to the box never moves a coordinate farther from x (x is in the box), so the point stays in the ball
    return (x + d).clamp(0.0, 1.0)


def _random_start(shape, norm: str, eps: float, gen: torch.Generator) -> torch.Tensor:
    """A perturbation drawn uniformly from the ε-ball (on the CPU, from ``gen``)."""
    if norm == "Linf":
        return (2 * torch.rand(shape, generator=gen) - 1) * eps
    d = torch.randn(shape, generator=gen)
    dim = math.prod(shape[1:])
    radius = eps * torch.rand((shape[0],), generator=gen).pow(1.0 / dim)
    return d / _flat_norm(d).clamp_min(1e-12) * radius.view(-1, *([1] * (len(shape) - 1)))


def _generator(seed: int, restart: int) -> torch.Generator:
    # within the generator's 64-bit range for any seed
    return torch.Generator(device="cpu").manual_seed((int(seed) * 1_000_003 + int(restart)) % (1 << 63))


def _one_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor, *, eps: float, norm: str,
             n_iter: int, step_size: float, loss_fn) -> tuple[torch.Tensor, torch.Tensor]:
    """One PGD run from ``start``: (points, fooled). A fooled image keeps its first misclassified iterate,
    the others their last iterate."""
    out = start.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    act = torch.arange(len(x), device=x.device)
    x_adv = start
    for t in range(n_iter + 1):
        xa = x_adv.detach().requires_grad_(t < n_iter)
        with torch.enable_grad() if t < n_iter else torch.no_grad():
            logits = model(xa).float()
        ya = y[act]
        hit = logits.argmax(1) != ya
        out[act] = xa.detach()
        fooled[act] = hit
        if t == n_iter:
            break
        keep = ~hit
        if not keep.any():
            break
        loss = loss_fn(logits, ya)[keep].sum()
        g, = torch.autograd.grad(loss, xa)
        g, xk, act = g[keep], xa.detach()[keep], act[keep]
        if norm == "Linf":
            xk = xk + step_size * g.sign()
        else:
            xk = xk + step_size * g / _flat_norm(g).clamp_min(1e-12)
        x_adv = _project(xk, x[act], eps, norm)
    return out, fooled


def pgd_restarts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "Linf",
                 n_iter: int = 100, n_restarts: int = 1, loss: str = PARAMS["loss"], step: float = PARAMS["step"],
                 seed: int = 0) -> torch.Tensor:
    """PGD of ``n_iter`` steps of size ``step·eps/n_iter`` from a random start in the ``norm`` ε-ball, ``n_restarts``
    times; returns adversarial images [B, C, H, W] in [0, 1] within ε of ``x`` (per image the first misclassified
    point found, else the last iterate of the last restart). The model's mode is not changed."""
    if norm not in ("Linf", "L2"):
        raise InputError(f"pgd: norm must be Linf or L2, got {norm!r}")
    if not (eps > 0):
        raise InputError(f"pgd: eps must be > 0, got {eps}")
    if int(n_iter) < 1 or int(n_restarts) < 1:
        raise InputError(f"pgd: n_iter and n_restarts must be >= 1, got {n_iter} and {n_restarts}")
    if not (float(step) > 0):
        raise InputError(f"pgd: step must be > 0 (a multiple of eps/n_iter), got {step}")
    loss_fn = _loss_fn(loss)
    x = x.detach()
    step_size = float(step) * float(eps) / int(n_iter)
    out = x.clone()
    standing = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for r in range(int(n_restarts)):
        noise = _random_start(tuple(x.shape), norm, float(eps), _generator(seed, r)).to(x.device, x.dtype)
        idx = standing.nonzero().flatten()
        if idx.numel() == 0:
            break
        xs = x[idx]
        start = _project(xs + noise[idx], xs, float(eps), norm)
        pts, fooled = _one_run(model, xs, y[idx], start, eps=float(eps), norm=norm, n_iter=int(n_iter),
                               step_size=step_size, loss_fn=loss_fn)
        out[idx] = pts
        standing[idx] = ~fooled
    return out


@register_attack
class PGD(AttackMethod):
    """Registry attack ``pgd``: :func:`pgd_restarts` with ``cfg.n_iter`` steps, ``cfg.n_restarts`` restarts and
    ``cfg.seed``; parameters ``loss`` (margin or ce) and ``step`` (step size = step·ε/n_iter)."""
    name = "pgd"
    params = dict(PARAMS)
    library = "msparse"
    summary = "PGD with random start and restarts, margin (or CE) loss, fixed step step·ε/n_iter (ours)"

    @classmethod
    def cost(cls, cfg, params) -> float:
        # per restart: n_iter forward+backward passes and the forward of the last iterate (an upper bound: a
        # broken image stops, and a restart runs only on the images still standing)
        return float(cfg.n_restarts) * (float(cfg.n_iter) + 1 / 3)

    def __init__(self, model, cfg, *, device, n_classes=None, params=None):
        super().__init__(model, cfg, device=device, n_classes=n_classes, params=params)
        _loss_fn(self.params["loss"])            # an unknown loss fails when the attack is built, not mid-run
        if not self.params["step"] > 0:
            raise InputError(f"pgd: step must be > 0 (a multiple of eps/n_iter), got {self.params['step']}")

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return pgd_restarts(self.model, x, y, eps=float(c.eps), norm=c.norm, n_iter=int(c.n_iter),
                            n_restarts=int(c.n_restarts), loss=self.params["loss"], step=float(self.params["step"]),
                            seed=int(c.seed))
