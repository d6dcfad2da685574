"""Significance: the 95% Wilson interval of an accuracy and the exact McNemar test of two configurations on the
same images (every number in the book carries one or the other)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import InputError

__all__ = ["wilson", "mcnemar", "Paired", "binom_two_sided", "holm"]

_Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (95% by default). n = 0 gives (0, 1)."""
    if n < 0 or k < 0 or k > n:
        raise InputError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    den = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / den
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial test p-value of k successes in n trials with p = 1/2."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2.0 * tail / 2.0 ** n) if 2 * k != n else 1.0


@dataclass(frozen=True)
class Paired:
    """Paired comparison of two per-example correctness vectors on the same images.

    ``gained`` = examples correct only under the new configuration, ``lost`` = correct only under the
    base; the exact McNemar test is the two-sided binomial test of ``gained`` among ``gained + lost``.
    """
    n: int
    base: int          # correct under the base
    new: int           # correct under the new configuration
    gained: int        # new right, base wrong
    lost: int          # base right, new wrong
    p_value: float

    @property
    def delta(self) -> float:
        """Accuracy difference new - base (fraction)."""
        return (self.new - self.base) / self.n if self.n else 0.0

    def __str__(self) -> str:
        return (f"{100 * self.delta:+.2f} pp (n={self.n}, +{self.gained}/-{self.lost} discordant, "
                f"McNemar exact p={self.p_value:.3g})")


def mcnemar(base_flags: Sequence[bool], new_flags: Sequence[bool]) -> Paired:
    """Exact McNemar test between two boolean vectors [N] (base vs new) on the same examples."""
    b = [bool(v) for v in base_flags]
    c = [bool(v) for v in new_flags]
    if len(b) != len(c):
        raise InputError(f"mcnemar: flag vectors differ in length ({len(b)} vs {len(c)}); "
                         "paired tests need the same images")
    gained = sum(1 for u, v in zip(b, c) if v and not u)
    lost = sum(1 for u, v in zip(b, c) if u and not v)
    return Paired(n=len(b), base=sum(b), new=sum(c), gained=gained, lost=lost,
                  p_value=binom_two_sided(gained, gained + lost))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values, in the input order: the family-wise error rate over all the
    hypotheses is at most a when every hypothesis with adjusted p < a is rejected. Sorted ascending, the i-th
    smallest p (0-based) is multiplied by (m − i), made non-decreasing, and capped at 1."""
    ps = [float(p) for p in p_values]
    if any(not 0 <= p <= 1 for p in ps):
        raise InputError(f"holm: p-values must be in [0, 1], got {ps}")
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out
