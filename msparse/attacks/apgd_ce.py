"""``apgd-ce``: APGD on the cross-entropy loss (Croce & Hein 2020), AutoAttack's first attack and the MeanSparse
paper's Table 1 attack (100 iterations, ``cfg.n_restarts`` restarts); computed by ``pyautoattack``."""
from __future__ import annotations

from .registry import register_attack
from ._pyautoattack import AutoAttackComponent

__all__ = ["APGDCE"]


@register_attack
class APGDCE(AutoAttackComponent):
    name = "apgd-ce"
    component = "apgd-ce"
    summary = "APGD on the cross-entropy loss (AutoAttack)"
    loss_label = "CE"

    @classmethod
    def cost(cls, cfg, params) -> float:
        return float(cfg.n_iter)

    def perturb(self, x, y):
        apgd = self.aa.apgd
        apgd.loss = "ce"
        apgd.seed = self.aa.get_seed()
        return apgd.perturb(x, y)
