"""``fab-t``: targeted FAB, the minimal-perturbation attack (Croce & Hein 2020, "Minimally distorted adversarial
examples with a fast adaptive boundary attack"), AutoAttack's third attack; computed by ``pyautoattack``."""
from __future__ import annotations

from .registry import register_attack
from ._pyautoattack import AutoAttackComponent

__all__ = ["FABT"]


@register_attack
class FABT(AutoAttackComponent):
    name = "fab-t"
    component = "fab-t"
    summary = "targeted FAB, one run per target class (AutoAttack)"
    loss_label = "FAB-T"

    @classmethod
    def cost(cls, cfg, params) -> float:
        return float(cfg.n_target_classes * cfg.n_iter)

    def perturb(self, x, y):
        fab = self.aa.fab
        fab.targeted = True
        fab.n_restarts = 1
        fab.seed = self.aa.get_seed()
        return fab.perturb(x, y)
