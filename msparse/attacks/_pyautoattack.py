"""AutoAttack's own attack objects as registry attacks: the common base of ``apgd-ce``, ``apgd-dlr``, ``apgd-t``,
``fab-t`` and ``square``.

Each component is taken from a ``pyautoattack.AutoAttack(version='custom')`` object and configured exactly as
``AutoAttack(version='standard')`` configures it for the L∞ and L2 threat models (Croce & Hein 2020; the
package's ``AutoAttack._set_version``): APGD-CE/DLR with ``cfg.n_restarts`` restarts, APGD-T and FAB-T with one
restart and ``cfg.n_target_classes`` target classes (never more than the model has minus one), Square with
``cfg.n_queries`` queries; ``cfg.n_iter`` replaces the 100 iterations of APGD and FAB with APGD's derived
checkpoints recomputed. Standard and custom differ only for L1 (not offered here), so the ``aa`` sequence of
:mod:`msparse.attacks.base` runs the same objects as AutoAttack's standard version. Seeds: every perturbation
sets the component's seed to ``cfg.seed`` first, as ``AutoAttack.run_standard_evaluation`` does.
"""
from __future__ import annotations

from typing import ClassVar

import pyautoattack
import torch

from .registry import AttackMethod

__all__ = ["AutoAttackComponent", "set_apgd_iters"]


def set_apgd_iters(apgd, n_iter: int) -> None:
    """Set APGD's iteration count and the checkpoints ``APGDAttack.__init__`` derives from it."""
    apgd.n_iter = n_iter
    apgd.n_iter_orig = n_iter
    apgd.n_iter_2 = max(int(0.22 * n_iter), 1)
    apgd.n_iter_min = max(int(0.06 * n_iter), 1)
    apgd.size_decr = max(int(0.03 * n_iter), 1)


class AutoAttackComponent(AttackMethod):
    """Base of the AutoAttack components: builds the configured ``pyautoattack.AutoAttack`` once per instance
    (``self.aa``); subclasses name the component (:attr:`component`) and set its per-run attributes in
    :meth:`perturb`."""
    library: ClassVar[str] = "pyautoattack"
    #: AutoAttack's name of the component (its ``attacks_to_run`` entry)
    component: ClassVar[str]

    def __init__(self, model, cfg, *, device, n_classes=None, params=None):
        super().__init__(model, cfg, device=device, n_classes=n_classes, params=params)
        aa = pyautoattack.AutoAttack(model, attacks=[self.component], version="custom", device=str(self.device),
                                     eps=float(cfg.eps), norm=cfg.norm, seed=int(cfg.seed))
        aa.apgd.n_restarts = int(cfg.n_restarts)
        aa.apgd_targeted.n_restarts = 1
        aa.fab.n_restarts = 1
        aa.fab.n_target_classes = int(cfg.n_target_classes)
        aa.apgd_targeted.n_target_classes = int(cfg.n_target_classes)
        aa.square.n_queries = int(cfg.n_queries)
        if cfg.n_iter != 100:
            set_apgd_iters(aa.apgd, int(cfg.n_iter))
            set_apgd_iters(aa.apgd_targeted, int(cfg.n_iter))
            aa.fab.n_iter = int(cfg.n_iter)
        if self.n_classes is not None:   # never ask for more target classes than exist
            aa.apgd_targeted.n_target_classes = min(aa.apgd_targeted.n_target_classes, self.n_classes - 1)
            aa.fab.n_target_classes = min(aa.fab.n_target_classes, self.n_classes - 1)
        aa.verbose = False
        self.aa = aa

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
