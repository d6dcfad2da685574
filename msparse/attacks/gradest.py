"""A gradient-estimation attack: antithetic Gaussian sampling of the smoothed margin loss, signed steps.

The template Tramèr et al. (2020, "On adaptive attacks to adversarial example defenses", §5.10) used against
k-Winners-Take-All, the closest published defence to MeanSparse: the model's gradient is useless (piecewise
constant or masked), so the gradient of the *Gaussian-smoothed* loss is estimated from forward passes only,

    ĝ = 1/(2·k·s) · Σ_i [L(x + s·u_i) − L(x − s·u_i)] · u_i,      u_i ~ N(0, I)  (k antithetic pairs)

with the margin loss L = z_y − max_{j≠y} z_j (an image is broken when L < 0), and an L∞ step
x ← Π_ε(x − η_t·sign(ĝ)) with a cosine-decayed step size. No gradient of the model is used, so the operator's
backward mode is irrelevant. Every image stops as soon as it is misclassified; deterministic given ``seed``.

Registered as the attack ``gradest`` (:class:`GradEst`): gradient-free (``bpda:``/``surrogate:`` refuse it), L∞
only, its :data:`PARAMS` are its declared parameters (in every record key; ``gradest[pairs=64]`` overrides one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .registry import AttackMethod, register_attack

__all__ = ["GradientEstimation", "GradEst", "PARAMS"]

#: the attack's fixed parameters (recorded in every record's key): antithetic pairs per step, the smoothing
#: scale s and the first and last step sizes, each as a fraction of ε.
PARAMS = {"pairs": 32, "smoothing": 0.25, "step_first": 0.25, "step_last": 0.02}


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - other


@dataclass
class GradientEstimation:
    """L∞ attack of budget ``eps`` with ``n_iter`` estimated-gradient steps (each ``2·pairs`` forward passes)."""
    model: nn.Module
    eps: float
    n_iter: int = 100
    seed: int = 0
    pairs: int = PARAMS["pairs"]
    smoothing: float = PARAMS["smoothing"]
    step_first: float = PARAMS["step_first"]
    step_last: float = PARAMS["step_last"]
    chunk: int = 2048            # images × samples per forward pass
    group: int = 64              # images attacked together (bounds memory: group × 2·pairs images)

    def queries(self) -> int:
        """Forward passes per image at most (the initial one included)."""
        return 1 + self.n_iter * (2 * self.pairs + 1)

    @torch.no_grad()
    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = [_margin(self.model(x[i:i + self.chunk]), y[i:i + self.chunk]) for i in range(0, len(x), self.chunk)]
        return torch.cat(out)

    @torch.no_grad()
    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial images [N, C, H, W] in [0, 1] within ε of ``x`` (``x`` itself where nothing was found).
        Images are attacked in groups of ``group``, each group with its own generator seeded from
        ``seed`` and the group's position, so the result depends only on the batch, not on memory."""
        out = [self._perturb_group(x[i:i + self.group], y[i:i + self.group], i // self.group)
               for i in range(0, len(x), self.group)]
        return torch.cat(out) if out else x.detach().clone()

    def _perturb_group(self, x: torch.Tensor, y: torch.Tensor, g: int) -> torch.Tensor:
        # kept within the generator's 64-bit range for any seed (identical for every seed below about 9e12)
        gen = torch.Generator(device="cpu").manual_seed((int(self.seed) * 1_000_003 + g) % (1 << 63))
        x0, x_adv = x.detach(), x.detach().clone()
        active = self._loss(x_adv, y) >= 0            # still correctly classified
        s = self.smoothing * self.eps
        shape = x.shape[1:]
        for t in range(self.n_iter):
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            xa, ya = x_adv[idx], y[idx]
            u = torch.randn((len(idx), self.pairs, *shape), generator=gen).to(x.device, x.dtype)
            pts = torch.cat([xa[:, None] + s * u, xa[:, None] - s * u], 1).clamp(0, 1)
            losses = self._loss(pts.flatten(0, 1), ya.repeat_interleave(2 * self.pairs)).view(len(idx), 2, self.pairs)
            diff = (losses[:, 0] - losses[:, 1]).view(len(idx), self.pairs, *([1] * len(shape)))
            grad = (diff * u).sum(1)
            frac = 0.5 * (1 + math.cos(math.pi * t / max(self.n_iter - 1, 1)))
            eta = self.eps * (self.step_last + (self.step_first - self.step_last) * frac)
            step = xa - eta * grad.sign()
            step = torch.min(torch.max(step, x0[idx] - self.eps), x0[idx] + self.eps).clamp(0, 1)
            x_adv[idx] = step
            active[idx] = self._loss(step, ya) >= 0
        return x_adv


@register_attack
class GradEst(AttackMethod):
    """The registry's ``gradest``: :class:`GradientEstimation` with ``cfg.eps``, ``cfg.n_iter``, ``cfg.seed`` and the
    resolved parameters."""
    name = "gradest"
    needs_grad = False
    params = dict(PARAMS)
    norms = ("Linf",)
    library = "msparse"
    summary = "gradient estimation on the margin loss (antithetic Gaussian sampling, sign steps)"
    loss_label = "margin (estimated gradient)"

    @classmethod
    def cost(cls, cfg, params) -> float:
        """Forward passes only: ``1 + n_iter·(2·pairs + 1)``, each a third of a forward+backward pass."""
        return (1 + int(cfg.n_iter) * (2 * int(params["pairs"]) + 1)) / 3

    def __init__(self, model, cfg, *, device, n_classes=None, params=None):
        super().__init__(model, cfg, device=device, n_classes=n_classes, params=params)
        self.attack = GradientEstimation(model, eps=float(cfg.eps), n_iter=int(cfg.n_iter), seed=int(cfg.seed),
                                         **self.params)

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.attack.perturb(x, y)
