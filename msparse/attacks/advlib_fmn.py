"""adv-lib's FMN: the Fast Minimum-Norm attack (Pintor et al. 2021, "Fast minimum-norm adversarial attacks
through adaptive norm constraints"), computed by adv-lib 0.2.8 (``adv_lib.attacks.fmn``), which shares no
code with AutoAttack/pyautoattack.

FMN looks for the *smallest* perturbation (in ``cfg.norm``: L∞ or L2) that misclassifies, for ``cfg.n_iter``
steps (adv-lib's defaults otherwise: α from 1 to 0.01, γ from 0.05 to 0.001, cosine annealing, no warm
start); it has no random start, so ``cfg.n_restarts`` has no effect. It knows nothing of ε: a threat model
with budget ε takes its result as follows —

* FMN's perturbation within ε: returned as is;
* FMN's perturbation larger than ε (or none found, FMN then returns the clean image): the **projection onto
  the ε-ball** is returned (L∞: clipped; L2: scaled towards the clean image), i.e. the point of the ball in
  FMN's direction; the evaluation then classifies it like any other point. It is not FMN's own output and
  seldom adversarial (FMN found nothing smaller), but it spends the whole budget in the direction FMN found
  towards the boundary, where the clean image (the other option) spends none.

FMN uses no random numbers; it still runs under ``fork_rng`` + ``torch.manual_seed(seed)`` like
:mod:`~msparse.attacks.advlib_apgd`, so a future adv-lib that draws any cannot make it depend on the caller's
RNG.
"""
from __future__ import annotations

import torch
from torch import nn

from .._compat import import_torchvision
from ..errors import InputError
from .advlib_apgd import check_norm, project_ball, seeded
from .registry import AttackMethod, register_attack

__all__ = ["AdvLibFMN", "advlib_fmn"]


def advlib_fmn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "Linf",
               n_iter: int = 100, seed: int = 0) -> torch.Tensor:
    """adv-lib's untargeted FMN of ``n_iter`` steps, its result projected onto the ε-ball; images [B, C, H, W]
    within ε of ``x`` and in [0, 1]."""
    p = check_norm(norm, "advlib-fmn")
    if int(n_iter) < 1:
        raise InputError(f"advlib-fmn: n_iter must be >= 1, got {n_iter}")
    import_torchvision()   # adv-lib imports it: a mismatched pair is named, not a bare RuntimeError
    from adv_lib.attacks.fast_minimum_norm import fmn

    x = x.detach()

    def go():
        with torch.enable_grad():
            return fmn(model, x, y, norm=p, steps=int(n_iter))

    return project_ball(seeded(go, seed, x.device), x, float(eps), norm)


@register_attack
class AdvLibFMN(AttackMethod):
    """Registry attack ``advlib-fmn``: adv-lib's FMN (:func:`advlib_fmn`) for ``cfg.norm`` with ``cfg.n_iter``
    steps, its result projected onto the ``cfg.eps`` ball (``cfg.n_restarts`` has no effect: FMN has no random
    start)."""
    name = "advlib-fmn"
    library = "adv-lib"
    summary = "Fast Minimum-Norm attack (adv-lib), its minimal perturbation projected onto the eps-ball"

    @classmethod
    def cost(cls, cfg, params) -> float:
        return float(cfg.n_iter)                 # one forward+backward per step

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return advlib_fmn(self.model, x, y, eps=float(c.eps), norm=c.norm, n_iter=int(c.n_iter), seed=int(c.seed))
