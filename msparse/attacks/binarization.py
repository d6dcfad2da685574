"""The binarization test: is an attack strong enough against *this* defence? (Zimmermann et al., NeurIPS 2022,
"Increasing confidence in adversarial robustness evaluations".)

For each test image x, a binary task is built on the defended model's own features (the input of its last
``nn.Linear``, MeanSparse sites active) in which an adversarial example is known to exist: ``n_inner`` points
drawn uniformly from the L∞ ball of radius ``inner``·ε around x (x included) are labelled 0, one point on the
ball's boundary (x + ε·s, s a random sign pattern, clipped to [0, 1]) is labelled 1, and a new linear head is
fitted on the frozen features (logistic regression, the boundary point weighted as much as all inner points
together). The sample is *valid* when the head classifies every inner point as 0 and the boundary point as 1.
The attack under test is then run against the binarized model (features → new head) from x with budget ε; it
*passes* when it finds a point classified 1. A strong attack passes on (nearly) every valid sample; a low pass
rate means the evaluation's robust accuracy cannot be trusted, whatever the attack reports.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import StateError
from .autoattack import run_attack
from .base import AttackConfig, parse_attack

__all__ = ["binarization_test", "Binarization", "last_linear"]


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` (its classifier head), whose input is the feature the test builds on."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise StateError("the binarization test needs a model whose classifier is an nn.Linear; none was found")
    return linears[-1]


class _Binarized(nn.Module):
    """The defended model's features (input of its last Linear) followed by a two-class head."""

    def __init__(self, model: nn.Module, head: nn.Linear):
        super().__init__()
        self.model, self.head, self._last = model, head, last_linear(model)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        box = {}
        h = self._last.register_forward_hook(lambda m, a, o: box.__setitem__("f", a[0]))
        try:
            self.model(x)
        finally:
            h.remove()
        return box["f"].flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class Binarization:
    """Outcome over the tested images: ``valid`` (a separable binary task was built), ``passed`` (the attack found
    the planted adversarial region), and per-image flags (``None`` where the sample was invalid)."""
    attack: str
    n: int
    valid: int
    passed: int
    flags: list = field(default_factory=list)

    @property
    def pass_rate(self) -> float:
        return self.passed / self.valid if self.valid else float("nan")


def _fit_head(feats: torch.Tensor, labels: torch.Tensor, steps: int = 300) -> nn.Linear:
    head = nn.Linear(feats.shape[1], 2)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    weight = torch.tensor([1.0, float((labels == 0).sum())])
    mu, sd = feats.mean(0), feats.std(0).clamp_min(1e-6)
    z = (feats - mu) / sd
    opt = torch.optim.LBFGS(head.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(z), labels, weight=weight) + 1e-4 * head.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():   # fold the standardisation into the head
        w = head.weight / sd
        b = head.bias - (w * mu).sum(1)
        out = nn.Linear(feats.shape[1], 2)
        out.weight.copy_(w)
        out.bias.copy_(b)
    return out


def binarization_test(model: nn.Module, x: torch.Tensor, attack: str = "apgd-ce", *, eps: float = 8 / 255,
                      n_iter: int = 100, n_inner: int = 63, inner: float = 0.5, seed: int = 0) -> Binarization:
    """Run the binarization test of ``attack`` (one component: ``apgd-ce``, ``bpda:apgd-ce``,
    ``surrogate:apgd-ce``, ``square``, ...; L∞, budget ``eps``, ``n_iter`` iterations) on images x [N, C, H, W]
    in [0, 1] through ``model`` as it is (its α and backward modes). Deterministic given ``seed``."""
    (component,) = parse_attack(attack)
    model.eval()
    gen = torch.Generator().manual_seed(int(seed))
    cfg = AttackConfig(eps=float(eps), seed=int(seed), n_iter=int(n_iter), n_queries=max(int(n_iter) * 10, 100))
    flags, valid, passed = [], 0, 0
    for i in range(len(x)):
        xi = x[i:i + 1]
        noise = (torch.rand((n_inner - 1, *xi.shape[1:]), generator=gen) * 2 - 1) * inner * eps
        inner_pts = torch.cat([xi, (xi + noise).clamp(0, 1)])
        sign = torch.randint(0, 2, xi.shape, generator=gen).float() * 2 - 1
        boundary = (xi + eps * sign).clamp(0, 1)
        pts = torch.cat([inner_pts, boundary])
        labels = torch.cat([torch.zeros(n_inner, dtype=torch.long), torch.ones(1, dtype=torch.long)])
        probe = _Binarized(model, nn.Linear(1, 2))
        with torch.no_grad():
            feats = probe.features(pts)
        head = _fit_head(feats, labels)
        binar = _Binarized(model, head).eval()
        with torch.no_grad():
            ok = bool((binar(pts).argmax(1) == labels).all())
        if not ok:
            flags.append(None)
            continue
        valid += 1
        out = run_attack(binar, xi, torch.zeros(1, dtype=torch.long), component, cfg, batch_size=1, n_classes=2)
        hit = bool(out.broken_by[0] >= 0) if component.mode != "transfer" else bool(~out.robust[0])
        passed += hit
        flags.append(hit)
    return Binarization(attack, len(x), valid, passed, flags)
