"""Significance: the statistics behind every number and verdict of the book.

* one accuracy: the 95% Wilson interval (:func:`wilson`);
* two configurations on the same images: the exact McNemar test (:func:`mcnemar`), Tango's score interval for
  the difference of paired proportions (:func:`paired_interval`), and the exact sign-flip test of a paired
  difference in {−2, …, 2} (:func:`sign_flip_p`);
* several tests at once: Holm's step-down adjustment (:func:`holm`);
* how many images a paired test needs: Connor's (1987) approximation, as the smallest difference n images detect
  (:func:`min_detectable_difference`, :func:`detectable_difference`) and its inverse (:func:`required_n`);
* the levels they use by default: :data:`ALPHA_TEST`, :data:`POWER`, :data:`DEFAULT_DISCORDANT_RATE`.

The rules that turn these numbers into a verdict are :mod:`msparse.report.verdicts`'s."""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

from ..errors import InputError

__all__ = ["wilson", "mcnemar", "Paired", "binom_two_sided", "holm", "paired_interval", "sign_flip_p",
           "min_detectable_difference", "detectable_difference", "required_n", "ALPHA_TEST", "POWER",
           "DEFAULT_DISCORDANT_RATE"]

_Z95 = 1.959963984540054

#: level of the two-sided paired test (exact McNemar); one-sided bounds are at 1 − ALPHA_TEST (95%)
ALPHA_TEST = 0.05

#: power at which :func:`min_detectable_difference` states the detectable difference
POWER = 0.8

#: fraction of images whose robust outcome differs between base and new, assumed by
#: :func:`min_detectable_difference` when it is not known. Conservative: a larger rate gives a larger (never an
#: optimistic) detectable difference. In this repository's stored records (α = 0 vs α in (0, 0.5], same attack and
#: images) the rate ranged from 0 to 17% for direct and BPDA attacks, and up to 23% for ANCRA's gate-transfer attacks.
DEFAULT_DISCORDANT_RATE = 0.20


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


# ------------------------------------------------------------------------------------------------
# two configurations on the same images: the difference and its interval
# ------------------------------------------------------------------------------------------------
def paired_interval(gained: int, lost: int, n: int, confidence: float = 1 - ALPHA_TEST) -> tuple[float, float]:
    """Two-sided ``confidence`` interval for p_new − p_base on ``n`` paired images, as fractions.

    ``gained``: images right only under new; ``lost``: right only under base (the discordant counts; the
    concordant images enter only through n). Method: Tango's asymptotic score interval for a difference of paired
    proportions (Tango 1998, Statistics in Medicine 17:891): the set of δ whose score statistic
    T(δ) = (gained − lost − nδ) / √(n·(2·p̃(δ) + δ(1 − δ))), with p̃(δ) the restricted maximum-likelihood estimate of
    the "lost" probability, satisfies |T(δ)| < z. At δ = 0 T is the McNemar statistic, so the interval excludes 0
    essentially when the McNemar test rejects; with no discordant image at all it is ±z²/(n + z²), not a point.
    Chosen over Newcombe's square-and-add interval because, in simulations with few and one-sided discordant
    images (MeanSparse vs its base at small α), Newcombe's upper bound fell below the true difference in up to 13%
    of runs at a nominal 5%, Tango's in at most about 6%. A one-sided (1 − a) bound is the matching end of the
    two-sided (1 − 2a) interval.
    """
    counts = (gained, lost, n)
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
        raise InputError(f"paired_interval: counts must be integers >= 0, got {counts}")
    if n == 0:
        raise InputError("paired_interval: no images (n = 0)")
    if gained + lost > n:
        raise InputError(f"paired_interval: {gained} + {lost} discordant images out of n = {n}")
    if not 0 < confidence < 1:
        raise InputError(f"paired_interval: confidence must be in (0, 1), got {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    b, c = gained, lost

    def score(d: float) -> float:  # decreasing in d
        a2, b2, c2 = 2 * n, -b - c + (2 * n - b + c) * d, -c * d * (1 - d)
        p21 = (math.sqrt(max(b2 * b2 - 4 * a2 * c2, 0.0)) - b2) / (2 * a2)
        num, var = b - c - n * d, n * (2 * p21 + d * (1 - d))
        if var <= 0:
            return 0.0 if num == 0 else math.copysign(math.inf, num)
        return num / math.sqrt(var)

    def solve(target: float) -> float:  # the d where score(d) = target
        lo, hi = -1.0, 1.0
        for _ in range(100):
            mid = (lo + hi) / 2
            if score(mid) > target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    lower = -1.0 if b - c == -n else solve(z)
    upper = 1.0 if b - c == n else solve(-z)
    return lower, upper


def sign_flip_p(diffs: Sequence[int]) -> float:
    """Exact two-sided sign-flip (permutation) p-value of sum(diffs) for per-image differences in {−2, …, 2}:
    P(|S| >= |s|) when every non-zero difference gets an independent random sign."""
    k1 = sum(1 for v in diffs if abs(v) == 1)
    k2 = sum(1 for v in diffs if abs(v) == 2)
    s = abs(sum(diffs))
    if s == 0:
        return 1.0

    def counts(k):  # C(k, b) for b = 0..k, exact integers
        out = [1]
        for b in range(k):
            out.append(out[-1] * (k - b) // (b + 1))
        return out

    c1, c2 = counts(k1), counts(k2)
    cum = [0]
    for v in c1:
        cum.append(cum[-1] + v)  # cum[b] = #{B1 < b} (weighted)
    total = 0
    for b2, w in enumerate(c2):
        t = 2 * (2 * b2 - k2)  # S = (2·B1 − k1) + t
        hi_b = math.ceil((s + k1 - t) / 2)  # S >= s  ⇔  B1 >= hi_b
        lo_b = math.floor((k1 - t - s) / 2)  # S <= −s ⇔  B1 <= lo_b
        upper = cum[-1] - cum[min(max(hi_b, 0), k1 + 1)]
        lower = cum[min(max(lo_b + 1, 0), k1 + 1)]
        total += w * (upper + lower)
    return min(1.0, total / 2 ** (k1 + k2))


# ------------------------------------------------------------------------------------------------
# how large a difference n images can detect
# ------------------------------------------------------------------------------------------------
def _check_levels(alpha: float, power: float) -> None:
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
    if not 0 < power < 1:
        raise InputError(f"power must be in (0, 1), got {power}")


def _n_needed(delta: float, second_moment: float, alpha: float, power: float) -> float:
    """Connor's (1987) sample size for a paired test of mean difference ``delta`` (fraction) whose per-image
    difference has second moment ``second_moment`` (= the discordant rate for 0/±1 differences), floored at
    ``delta`` because a mean difference δ needs at least a fraction δ of images to change."""
    m = max(second_moment, delta)
    za, zb = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    return (za * math.sqrt(m) + zb * math.sqrt(max(m - delta * delta, 0.0))) ** 2 / (delta * delta)


def detectable_difference(n: int, second_moment: float, alpha: float = ALPHA_TEST, power: float = POWER,
                          max_delta: float = 1.0) -> float:
    """Smallest mean paired difference δ in (0, ``max_delta``] (a fraction) that ``n`` images detect, for per-image
    differences of second moment ``second_moment`` (Connor's approximation, as :func:`min_detectable_difference`;
    ``max_delta`` = 2 for differences in {−2, …, 2}); ``math.inf`` if none."""
    steps = 2000
    prev = 0.0
    for k in range(1, steps + 1):
        d = max_delta * k / steps
        if _n_needed(d, second_moment, alpha, power) <= n:
            lo, hi = prev, d
            for _ in range(60):
                mid = (lo + hi) / 2
                if mid > 0 and _n_needed(mid, second_moment, alpha, power) <= n:
                    hi = mid
                else:
                    lo = mid
            return hi
        prev = d
    return math.inf


def min_detectable_difference(n: int, discordant_rate: float | None = None, alpha: float = ALPHA_TEST,
                              power: float = POWER) -> float:
    """The smallest paired accuracy difference (in pp) that ``n`` images detect with probability ``power`` in a
    two-sided paired (McNemar) test at level ``alpha``.

    Approximation: Connor's (1987, Biometrics 43:207) normal-approximation sample size for McNemar's test,
    n = [z_{1−α/2}·√ψ + z_{power}·√(ψ − δ²)]² / δ², solved for δ; ψ is the fraction of images whose outcome differs
    (the discordant rate), taken as max(``discordant_rate``, δ) since a true difference δ changes at least a
    fraction δ of the images. ``discordant_rate=None`` uses :data:`DEFAULT_DISCORDANT_RATE` (conservative). Returns
    ``math.inf`` when no difference up to 100 pp is detectable (n below about 4).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"min_detectable_difference: n must be a positive integer, got {n!r}")
    psi = DEFAULT_DISCORDANT_RATE if discordant_rate is None else discordant_rate
    if not 0 <= psi <= 1:
        raise InputError(f"discordant_rate must be in [0, 1], got {discordant_rate}")
    _check_levels(alpha, power)
    return 100 * detectable_difference(n, psi, alpha, power)


def required_n(delta_pp: float, discordant_rate: float | None = None, alpha: float = ALPHA_TEST,
               power: float = POWER) -> int:
    """Images needed to detect a paired difference of ``delta_pp`` (the inverse of
    :func:`min_detectable_difference`, same approximation and default)."""
    if not 0 < delta_pp <= 100:
        raise InputError(f"required_n: delta_pp must be in (0, 100], got {delta_pp}")
    psi = DEFAULT_DISCORDANT_RATE if discordant_rate is None else discordant_rate
    if not 0 <= psi <= 1:
        raise InputError(f"discordant_rate must be in [0, 1], got {discordant_rate}")
    _check_levels(alpha, power)
    return math.ceil(_n_needed(delta_pp / 100, psi, alpha, power) - 1e-9)

