"""adv-lib's APGD: Auto-PGD computed by a second, independent implementation (``adv-lib`` 0.2.8).

Croce & Hein (2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks") APGD, as re-implemented by Jérôme Rony's adv-lib (``adv_lib.attacks.auto_pgd.apgd``), which shares
no code with AutoAttack/pyautoattack: it checks that an APGD result is not an artefact of one code base.
The mapping: ε = ``cfg.eps``, norm ``Linf`` → ``float('inf')`` and ``L2`` → 2, ``n_iter`` and ``n_restarts``
as given (a restart attacks only the images earlier runs did not break), loss = the declared ``loss``
(``ce``, default, the book's APGD-CE; or ``dlr``, the difference-of-logits ratio). Everything else is
adv-lib's default (ρ = 0.75, one EOT sample, no large reps, ``best_loss=False``: keep a misclassified iterate,
not the highest-loss one).

adv-lib draws its random starts from the global RNG: the attack runs inside ``torch.random.fork_rng`` with
``torch.manual_seed(seed)``, so it is deterministic under ``seed`` and leaves the caller's RNG untouched.
adv-lib returns, per image, the last misclassified iterate it found, else the clean image (note: a random
start that is already misclassified but never followed by a misclassified iterate is not returned). The
returned point is projected onto the ε-ball once more to remove floating-point excess of adv-lib's L2
projection (a no-op up to rounding).
"""
from __future__ import annotations

import torch
from torch import nn

from .._compat import import_torchvision
from ..errors import InputError, UnknownNameError
from .registry import AttackMethod, register_attack

__all__ = ["AdvLibAPGD", "advlib_apgd", "PARAMS", "LOSSES", "project_ball", "seeded"]

#: adv-lib's loss names
LOSSES = ("ce", "dlr")
#: declared fixed parameters (enter the record key)
PARAMS = {"loss": "ce"}
_NORMS = {"Linf": float("inf"), "L2": 2}


def project_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """``x_adv`` projected onto the ``norm`` ε-ball around ``x`` (L∞: clipped; L2: scaled towards ``x``), then
    onto the [0, 1] box."""
    d = (x_adv - x).detach()
    if norm == "Linf":
        d = d.clamp(-eps, eps)
    else:
        n = d.flatten(1).norm(p=2, dim=1).clamp_min(1e-12).view(-1, *([1] * (d.ndim - 1)))
        d = d * (eps / n).clamp(max=1.0)
    return (x + d).clamp(0.0, 1.0)


def seeded(fn, seed: int, device: torch.device):
    """Run ``fn()`` with the global RNG (CPU and ``device``'s CUDA RNG) seeded by ``seed``, then restore it."""
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        return fn()


def check_norm(norm: str, who: str) -> float:
    if norm not in _NORMS:
        raise InputError(f"{who}: norm must be Linf or L2, got {norm!r}")
    return _NORMS[norm]


def advlib_apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "Linf",
                n_iter: int = 100, n_restarts: int = 1, loss: str = PARAMS["loss"], seed: int = 0) -> torch.Tensor:
    """adv-lib's untargeted APGD; adversarial images [B, C, H, W] within ε of ``x`` and in [0, 1]."""
    p = check_norm(norm, "advlib-apgd")
    if loss not in LOSSES:
        raise UnknownNameError(f"advlib-apgd: unknown loss {loss!r}; choose from {', '.join(LOSSES)} "
                               "(e.g. advlib-apgd[loss=dlr])")
    if int(n_iter) < 1 or int(n_restarts) < 1:
        raise InputError(f"advlib-apgd: n_iter and n_restarts must be >= 1, got {n_iter} and {n_restarts}")
    import_torchvision()   # adv-lib imports it: a mismatched pair is named, not a bare RuntimeError
    from adv_lib.attacks.auto_pgd import apgd

    x = x.detach()

    def go():
        with torch.enable_grad():
            return apgd(model, x, y, eps=float(eps), norm=p, n_iter=int(n_iter), n_restarts=int(n_restarts),
                        loss_function=loss)

    return project_ball(seeded(go, seed, x.device), x, float(eps), norm)


@register_attack
class AdvLibAPGD(AttackMethod):
    """Registry attack ``advlib-apgd``: adv-lib's APGD (:func:`advlib_apgd`) with ``cfg.eps``, ``cfg.norm``,
    ``cfg.n_iter``, ``cfg.n_restarts``, ``cfg.seed``; parameter ``loss`` (ce or dlr)."""
    name = "advlib-apgd"
    params = dict(PARAMS)
    library = "adv-lib"
    summary = "APGD (CE or DLR loss) as implemented by adv-lib, independent of AutoAttack's code"

    @classmethod
    def cost(cls, cfg, params) -> float:
        # per restart: the gradient at the random start and one per iteration (adv-lib does not stop early
        # within a run; a restart runs only on the images still standing)
        return float(cfg.n_restarts) * (float(cfg.n_iter) + 1)

    def __init__(self, model, cfg, *, device, n_classes=None, params=None):
        super().__init__(model, cfg, device=device, n_classes=n_classes, params=params)
        loss = self.params["loss"]
        if loss not in LOSSES:
            raise UnknownNameError(f"advlib-apgd: unknown loss {loss!r}; choose from {', '.join(LOSSES)} "
                                   "(e.g. advlib-apgd[loss=dlr])")
        if loss == "dlr" and self.n_classes is not None and self.n_classes < 3:
            raise InputError(f"advlib-apgd: the DLR loss needs at least 3 classes, the model has {self.n_classes}; "
                             "use advlib-apgd[loss=ce]")

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return advlib_apgd(self.model, x, y, eps=float(c.eps), norm=c.norm, n_iter=int(c.n_iter),
                           n_restarts=int(c.n_restarts), loss=self.params["loss"], seed=int(c.seed))
