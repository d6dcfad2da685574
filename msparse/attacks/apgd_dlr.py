"""``apgd-dlr``: APGD on the difference-of-logits-ratio loss (Croce & Hein 2020), the second attack of the
paper's appendix ``apgd`` sequence; computed by ``pyautoattack``."""
from __future__ import annotations

from .registry import register_attack
from ._pyautoattack import AutoAttackComponent

__all__ = ["APGDDLR"]


@register_attack
class APGDDLR(AutoAttackComponent):
    name = "apgd-dlr"
    component = "apgd-dlr"
    summary = "APGD on the DLR loss (AutoAttack)"
    loss_label = "DLR"

    @classmethod
    def cost(cls, cfg, params) -> float:
        return float(cfg.n_iter)

    def perturb(self, x, y):
        apgd = self.aa.apgd
        apgd.loss = "dlr"
        apgd.seed = self.aa.get_seed()
        return apgd.perturb(x, y)
