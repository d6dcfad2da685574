"""``square``: the Square attack, score-based and gradient-free (Andriushchenko et al. 2020), AutoAttack's last
attack, with ``cfg.n_queries`` queries; computed by ``pyautoattack``."""
from __future__ import annotations

from .registry import register_attack
from ._pyautoattack import AutoAttackComponent

__all__ = ["Square"]


@register_attack
class Square(AutoAttackComponent):
    name = "square"
    component = "square"
    needs_grad = False
    summary = "Square attack: random square updates, forward passes only (AutoAttack)"
    loss_label = "Square (margin)"

    @classmethod
    def cost(cls, cfg, params) -> float:
        return cfg.n_queries / 3

    def perturb(self, x, y):
        self.aa.square.seed = self.aa.get_seed()
        return self.aa.square.perturb(x, y)
