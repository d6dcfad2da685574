"""``apgd-t``: targeted APGD on the DLR loss against the ``cfg.n_target_classes`` most likely other classes
(Croce & Hein 2020), AutoAttack's second attack; computed by ``pyautoattack``."""
from __future__ import annotations

from .registry import register_attack
from ._pyautoattack import AutoAttackComponent

__all__ = ["APGDT"]


@register_attack
class APGDT(AutoAttackComponent):
    name = "apgd-t"
    component = "apgd-t"
    summary = "targeted APGD on the DLR loss, one run per target class (AutoAttack)"
    loss_label = "targeted DLR"

    @classmethod
    def cost(cls, cfg, params) -> float:
        return float(cfg.n_target_classes * cfg.n_iter)

    def perturb(self, x, y):
        self.aa.apgd_targeted.seed = self.aa.get_seed()
        return self.aa.apgd_targeted.perturb(x, y)
