"""Verdict rules: how a page of the book decides whether a published claim holds on the numbers it computed.

Every verdict line the book shows is a :class:`Verdict` returned by one of the rules below. A verdict has one of
five statuses (:data:`STATUSES`):

``"reproduced"``         the data support the claim at the thresholds below;
``"not reproduced"``     the data contradict it (a significant effect in the other direction, or an effect the
                         claim needs that the data rule out);
``"inconclusive"``       neither: the text says ``inconclusive at n = …; this n detects differences of about X pp
                         or more`` (see :func:`min_detectable_difference`);
``"too few images"``     fewer than :data:`MIN_N` images: no rule is applied;
``"not evaluated here"`` the page could not run the claim at all (:func:`not_evaluated`, e.g. the paper's model
                         weights are not available offline). A page that evaluated a claim never uses it.

The claims come from the MeanSparse paper (Amini, Teymoorianfard, Ma, Houmansadr, arXiv:2406.05927: "MeanSparse
raises robust accuracy at a small clean cost") and from RobustBench's re-evaluation of the paper's models ("APGD
(both versions) with BPDA": under BPDA every MeanSparse entry is *no better* than its base model); the published
numbers are in :mod:`msparse.report.paper`.

**Inputs.** The rules compare two configurations evaluated on the *same* images (a base, usually α = 0, and a new
one). Each side is per-image correctness flags of shape [N]: a ``"0101…"`` string (as stored in the result
records), a sequence of bools or 0/1 ints, a 1-D numpy array or torch tensor, or a row dict of
:func:`msparse.book.result_row` (its ``"robust_flags"`` are used; :func:`gain_claim` also reads its clean accuracy).

**Statistics.** Paired: the exact McNemar test (:func:`msparse.evaluation.significance.mcnemar`) for significance at
:data:`ALPHA_TEST`, and Tango's score interval for a difference of paired proportions (see
:func:`paired_interval`) for the size of the difference. "No better than" is never concluded from a
non-significant test: it needs the one-sided upper 95% bound of the difference below +:data:`EQUIVALENCE_MARGIN_PP`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
import dataclasses
from dataclasses import dataclass
from statistics import NormalDist

from ..errors import InputError
from ..evaluation.significance import mcnemar, wilson

__all__ = ["verdict", "trend", "gain_verdict", "claim_check", "alpha_verdict", "STATUSES", "ALPHA_TEST", "EQUIVALENCE_MARGIN_PP", "MAX_CLEAN_DROP_PP", "MIN_N", "POWER",
           "DEFAULT_DISCORDANT_RATE", "ROBUST_CEILING_PP", "SIGMA_RATIO_TOL", "GAIN_CLAIM", "NO_BETTER_CLAIM",
           "Verdict", "PairedDifference", "paired_difference", "paired_interval", "min_detectable_difference",
           "required_n", "gain_claim", "no_better_than_base", "gain_grows", "robust_below", "sigma_ratio_check",
           "not_evaluated", "best_of", "BEST_CENTRE_CLAIM", "prefix_verdicts", "fragility_note",
           "referee_verdict", "RefereeVerdict", "REFEREE_PHRASES", "one_image_flips", "no_better_line"]

#: the five statuses a verdict can have, in the words the book prints
STATUSES: tuple[str, ...] = ("reproduced", "not reproduced", "inconclusive", "too few images", "not evaluated here")

# ------------------------------------------------------------------------------------------------
# thresholds (named, so that a page's verdict can be traced to them)
# ------------------------------------------------------------------------------------------------
#: level of the two-sided paired test (exact McNemar); one-sided bounds are at 1 − ALPHA_TEST (95%)
ALPHA_TEST = 0.05

#: smallest accuracy difference (percentage points) we treat as a real gain. A "no better than the base" finding
#: is reproduced only if the one-sided upper 95% bound of (new − base) is below +1 pp, and the paper's gain claim
#: is not reproduced when that bound is below +1 pp. +1 pp is about the smallest gain the paper reports at the α
#: the pages check: Table 2 at α = 0.35 gives +0.95 (ELU) to +2.25 pp (SiLU) on APGD; Fig. 3 gives +0.72 to
#: +4.04 pp on AutoAttack; Table 1's test APGD-CE at the authors' α gives +0.66 (WRN-70-16) to +1.54 pp. A bound
#: below +1 pp does not rule out the very smallest of these, which would need thousands of images to resolve.
EQUIVALENCE_MARGIN_PP = 1.0

#: largest clean-accuracy drop (pp, point estimate) the claim "at a small clean cost" allows. The paper's own
#: drops at the α the pages check are at most 1.31 pp (Table 2, ELU at α = 0.35: 81.65 → 80.34).
MAX_CLEAN_DROP_PP = 2.0

#: below this many images no rule is applied ("too few images"): the exact McNemar test needs at least 6 images
#: changing all in one direction to reach p < 0.05, i.e. 30 pp of 20 images, and 95% intervals span tens of pp
MIN_N = 20

#: power at which :func:`min_detectable_difference` states the detectable difference
POWER = 0.8

#: fraction of images whose robust outcome differs between base and new, assumed by
#: :func:`min_detectable_difference` when it is not known. Conservative: a larger rate gives a larger (never an
#: optimistic) detectable difference. In this repository's stored records (α = 0 vs α in (0, 0.5], same attack and
#: images) the rate ranged from 0 to 17% for direct and BPDA attacks, and up to 23% for ANCRA's gate-transfer attacks.
DEFAULT_DISCORDANT_RATE = 0.20

#: "not robust": the robust accuracy stays below this (percent), as for a standard-trained model (:func:`robust_below`)
ROBUST_CEILING_PP = 10.0

#: tolerance of :func:`sigma_ratio_check` on a ratio σ_official / σ_exact
SIGMA_RATIO_TOL = 0.02

GAIN_CLAIM = "the paper's claim (MeanSparse raises robust accuracy at a small clean cost)"
NO_BETTER_CLAIM = "RobustBench's finding (under BPDA, MeanSparse is no better than its base model)"

_Z2 = NormalDist().inv_cdf(1 - ALPHA_TEST / 2)  # two-sided 95%: 1.95996…
_Z1 = NormalDist().inv_cdf(1 - ALPHA_TEST)  # one-sided 95%: 1.64485…


# ================================================================================================
# the verdict
# ================================================================================================
@dataclass(frozen=True)
class Verdict:
    """One verdict line.

    ``status``: one of :data:`STATUSES`; ``claim``: what was checked, in words (e.g. :data:`GAIN_CLAIM`);
    ``detail``: the evidence in plain words with its numbers (no trailing period needed); ``n``: the number of
    images (shown for "inconclusive" and "too few images"); ``difference``: the paired comparison behind it.
    """

    status: str
    claim: str
    detail: str
    n: int | None = None
    difference: PairedDifference | None = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise InputError(f"verdict status must be one of {list(STATUSES)}, got {self.status!r}")

    @property
    def holds(self) -> bool | None:
        """True if reproduced, False if not reproduced, None otherwise (inconclusive, too few, not evaluated)."""
        return {"reproduced": True, "not reproduced": False}.get(self.status)

    def markdown(self) -> str:
        """The one-line page text, e.g. ``**Verdict: inconclusive at n = 100** — <claim>: <detail>.``"""
        at_n = f" at n = {self.n}" if self.n is not None and self.status in ("inconclusive", "too few images") else ""
        text = f"{self.claim}: {self.detail}" if self.claim and self.detail else (self.claim or self.detail)
        if text and text[-1] not in ".!?":
            text += "."
        return f"**Verdict: {self.status}{at_n}**" + (f" — {text}" if text else "")

    def __str__(self) -> str:
        return self.markdown()


def not_evaluated(claim: str, why: str) -> Verdict:
    """The verdict of a page that could not run ``claim`` at all (e.g. the paper's model weights are not
    available offline, or the run used random weights). Never for a claim the page evaluated."""
    return Verdict("not evaluated here", claim, why)


# ================================================================================================
# inputs
# ================================================================================================
def _flags(x, what: str = "flags") -> list[bool]:
    """Per-image flags [N] from a '0101' string, a sequence of bools/0/1, an array/tensor, or a row dict."""
    if isinstance(x, Mapping):
        if "robust_flags" not in x:
            raise InputError(f"{what}: a row dict needs 'robust_flags' (per-image flags), got keys {sorted(x)}")
        x = x["robust_flags"]
    if isinstance(x, str):
        if set(x) - {"0", "1"}:
            raise InputError(f"{what}: a flag string may hold only '0' and '1'")
        return [c == "1" for c in x]
    if hasattr(x, "tolist"):
        x = x.tolist()
    out = []
    for v in x:
        if isinstance(v, bool) or v in (0, 1):
            out.append(bool(v))
        else:
            raise InputError(f"{what}: flags must be booleans or 0/1, got {v!r}")
    return out


def _pair(base, new) -> tuple[list[bool], list[bool]]:
    b, c = _flags(base, "base"), _flags(new, "new")
    if len(b) != len(c):
        raise InputError(f"base and new flags differ in length ({len(b)} vs {len(c)}): a paired comparison needs "
                         "the same images in the same order")
    if not b:
        raise InputError("no images (n = 0): nothing to compare")
    return b, c


# ================================================================================================
# the paired difference
# ================================================================================================
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


@dataclass(frozen=True)
class PairedDifference:
    """new − base on the same ``n`` images. Fractions in [−1, 1]: ``delta``, ``ci`` (two-sided 95%, Tango),
    ``lower``/``upper`` (one-sided 95% bounds); counts ``base``/``new`` (right under each), ``gained`` (right only
    under new), ``lost`` (right only under base); ``p_value``: exact two-sided McNemar."""

    n: int
    base: int
    new: int
    gained: int
    lost: int
    delta: float
    ci: tuple[float, float]
    lower: float
    upper: float
    p_value: float

    @property
    def discordant(self) -> int:
        """Images whose outcome differs between base and new."""
        return self.gained + self.lost

    @property
    def discordant_rate(self) -> float:
        return self.discordant / self.n

    @property
    def significant(self) -> bool:
        """Exact McNemar p < :data:`ALPHA_TEST`."""
        return self.p_value < ALPHA_TEST

    @property
    def delta_pp(self) -> float:
        return 100 * self.delta

    def mde_pp(self, alpha: float = ALPHA_TEST, power: float = POWER) -> float:
        """:func:`min_detectable_difference` at this n and this observed discordant rate (pp)."""
        return min_detectable_difference(self.n, self.discordant_rate, alpha, power)

    def describe(self, what: str = "robust") -> str:
        """Plain words with the numbers, e.g. ``robust 40.0% → 43.0% (+3.0 pp, 95% CI …)``."""
        return (f"{what} {100 * self.base / self.n:.1f}% → {100 * self.new / self.n:.1f}% ({self.delta_pp:+.1f} pp, "
                f"95% CI {100 * self.ci[0]:+.1f} to {100 * self.ci[1]:+.1f} pp; {self.discordant} of {self.n} images "
                f"changed, +{self.gained}/-{self.lost}; exact McNemar p = {self.p_value:.2g})")


def paired_difference(base_flags, new_flags) -> PairedDifference:
    """The paired comparison new − base of two flag vectors [N] on the same images (see the module docstring for
    the accepted shapes). Raises :class:`~msparse.errors.InputError` for n = 0 or unequal lengths."""
    pr = mcnemar(*_pair(base_flags, new_flags))
    ci = paired_interval(pr.gained, pr.lost, pr.n, 1 - ALPHA_TEST)
    lower, upper = paired_interval(pr.gained, pr.lost, pr.n, 1 - 2 * ALPHA_TEST)
    return PairedDifference(pr.n, pr.base, pr.new, pr.gained, pr.lost, pr.delta, ci, lower, upper, pr.p_value)


# ================================================================================================
# how large a difference n images can detect
# ================================================================================================
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


def _mde(n: int, second_moment: float, alpha: float, power: float, max_delta: float = 1.0) -> float:
    """Smallest δ in (0, max_delta] with _n_needed(δ) <= n (fraction); inf if none."""
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
    return 100 * _mde(n, psi, alpha, power)


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


def _inconclusive_text(n: int, mde_pp: float) -> str:
    tail = (f"this n detects differences of about {mde_pp:.1f} pp or more" if math.isfinite(mde_pp)
            else "this n cannot detect any difference")
    return f"inconclusive at n = {n}; {tail}"


def _too_few(claim: str, n: int, detail: str = "") -> Verdict:
    return Verdict("too few images", claim, (detail + " — " if detail else "") +
                   f"too few images to judge (n = {n} < {MIN_N})", n=n)


# ================================================================================================
# rules
# ================================================================================================
def _clean_pct(x, n: int, what: str) -> float:
    """Clean accuracy in percent from a number (already %), flags, or a row dict ('clean_flags' or 'clean')."""
    if isinstance(x, Mapping):
        if "clean_flags" in x:
            x = x["clean_flags"]
        elif "clean" in x:
            x = x["clean"]
        else:
            raise InputError(f"{what}: a row dict needs 'clean' (percent) or 'clean_flags'")
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        if not 0 <= x <= 100 or math.isnan(x):
            raise InputError(f"{what}: a clean accuracy is in percent, in [0, 100], got {x!r}")
        return float(x)
    f = _flags(x, what)
    if len(f) != n:
        raise InputError(f"{what}: {len(f)} clean flags for {n} robust flags (the same images are needed)")
    return 100 * sum(f) / n


def gain_claim(base, new, *, clean_base=None, clean_new=None, claim: str = GAIN_CLAIM,
               max_clean_drop_pp: float = MAX_CLEAN_DROP_PP) -> Verdict:
    """The paper's claim "MeanSparse raises robust accuracy at a small clean cost", on robust flags [N] of the base
    (α = 0) and of MeanSparse (``new``) on the same images.

    ``clean_base``/``clean_new``: clean accuracy in percent, or clean flags [N]; taken from ``base``/``new`` when
    they are row dicts. Rules, in order:

    1. n < :data:`MIN_N` → "too few images".
    2. robust accuracy significantly lower (exact McNemar p < :data:`ALPHA_TEST`, Δ < 0) → "not reproduced".
    3. significantly higher (p < ALPHA_TEST, Δ > 0): "reproduced" if the clean drop (point estimate, base − new)
       is at most ``max_clean_drop_pp`` (:data:`MAX_CLEAN_DROP_PP`) or clean accuracy was not given (the detail
       then says so); "not reproduced" if the clean drop is larger.
    4. not significant, and the one-sided upper 95% bound of the gain is below +:data:`EQUIVALENCE_MARGIN_PP`
       → "not reproduced": the data rule out a gain of that size (see the margin's note on the paper's gains).
    5. otherwise "inconclusive", with the difference this n detects (:func:`min_detectable_difference` at the
       observed discordant rate). The clean cost alone never decides an otherwise inconclusive verdict: it is
       reported only.
    """
    if isinstance(base, Mapping) and clean_base is None and ("clean" in base or "clean_flags" in base):
        clean_base = base
    if isinstance(new, Mapping) and clean_new is None and ("clean" in new or "clean_flags" in new):
        clean_new = new
    d = paired_difference(base, new)
    text = d.describe("robust")
    drop = None
    if clean_base is not None and clean_new is not None:
        cb, cn = _clean_pct(clean_base, d.n, "clean_base"), _clean_pct(clean_new, d.n, "clean_new")
        drop = cb - cn
        text += f"; clean {cb:.1f}% → {cn:.1f}% ({cn - cb:+.1f} pp)"
    too_costly = drop is not None and drop > max_clean_drop_pp + 1e-9
    if d.n < MIN_N:
        return _too_few(claim, d.n, text)
    if d.significant and d.delta < 0:
        return Verdict("not reproduced", claim, text + f" — robust accuracy is significantly lower "
                       f"(p < {ALPHA_TEST:g})", n=d.n, difference=d)
    if d.significant and d.delta > 0:
        if too_costly:
            return Verdict("not reproduced", claim, text + f" — a significant robust gain, but clean accuracy drops "
                           f"by {drop:.1f} pp, more than the {max_clean_drop_pp:g} pp the claim allows",
                           n=d.n, difference=d)
        cost = (f" at a clean cost within {max_clean_drop_pp:g} pp" if drop is not None
                else " (clean accuracy not checked)")
        small = (f"; the gain is below +{EQUIVALENCE_MARGIN_PP:g} pp (one-sided 95% upper bound "
                 f"{100 * d.upper:+.1f} pp)" if d.upper < EQUIVALENCE_MARGIN_PP / 100 else "")
        return Verdict("reproduced", claim, text + f" — a significant robust gain (p < {ALPHA_TEST:g}){cost}{small}",
                       n=d.n, difference=d)
    if d.upper < EQUIVALENCE_MARGIN_PP / 100:
        return Verdict("not reproduced", claim, text + f" — no significant gain, and the data rule out a gain of "
                       f"+{EQUIVALENCE_MARGIN_PP:g} pp or more (one-sided 95% upper bound {100 * d.upper:+.1f} pp)",
                       n=d.n, difference=d)
    note = (f"; clean accuracy drops by {drop:.1f} pp, more than the {max_clean_drop_pp:g} pp the claim allows"
            if too_costly else "")
    return Verdict("inconclusive", claim, text + note + " — " + _inconclusive_text(d.n, d.mde_pp()),
                   n=d.n, difference=d)


def no_better_than_base(base, new, *, claim: str = NO_BETTER_CLAIM, what: str = "robust") -> Verdict:
    """RobustBench's finding "under BPDA, MeanSparse is no better than its base", on robust flags [N] of the base
    and of MeanSparse under the adaptive attack (``new``), same images. Rules, in order:

    1. n < :data:`MIN_N` → "too few images".
    2. MeanSparse significantly better (exact McNemar p < :data:`ALPHA_TEST`, Δ > 0) → "not reproduced".
    3. one-sided upper 95% bound of (new − base) below +:data:`EQUIVALENCE_MARGIN_PP` → "reproduced": a gain of
       that size is ruled out (an equivalence / non-superiority test, never "p ≥ 0.05, so no difference").
    4. otherwise "inconclusive": a gain of +1 pp or more is neither shown nor ruled out at this n.
    """
    d = paired_difference(base, new)
    text = d.describe(what) + f"; one-sided 95% upper bound {100 * d.upper:+.1f} pp"
    if d.n < MIN_N:
        return _too_few(claim, d.n, text)
    if d.significant and d.delta > 0:
        return Verdict("not reproduced", claim, text + f" — MeanSparse is significantly better than the base "
                       f"(p < {ALPHA_TEST:g})", n=d.n, difference=d)
    if d.upper < EQUIVALENCE_MARGIN_PP / 100:
        return Verdict("reproduced", claim, text + f" — below +{EQUIVALENCE_MARGIN_PP:g} pp: a gain over the base "
                       f"of +{EQUIVALENCE_MARGIN_PP:g} pp or more is ruled out", n=d.n, difference=d)
    return Verdict("inconclusive", claim, text + f" — not below +{EQUIVALENCE_MARGIN_PP:g} pp, so a gain is not "
                   "ruled out; " + _inconclusive_text(d.n, d.mde_pp()), n=d.n, difference=d)


def _sign_flip_p(diffs: Sequence[int]) -> float:
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


def gain_grows(series: Sequence[tuple], *, name: str = "ε", claim: str | None = None) -> Verdict:
    """The claim "the gain of MeanSparse over the base grows with ``name``" (the paper's Table 6: the gain grows
    with ε), on ``series``: ``(x, base, new)`` in increasing order of x, base and new flags [N] on the same images
    at every x (e.g. the attack at α = 0 and at α > 0, for each ε).

    The test compares the two ends: per image, d = (new − base at the last x) − (new − base at the first x) in
    {−2, …, 2}; the growth is mean(d). Significance: exact sign-flip test of sum(d) (for d in {−1, 0, 1} it is
    the exact McNemar test); bounds: Wald interval mean ± z·sd/√n for a paired mean. The per-x gains in between
    are reported (and whether they rise monotonically) but not tested. Rules, as :func:`gain_claim`: too few
    images; significant growth → "reproduced"; significant shrinkage → "not reproduced"; one-sided upper 95%
    bound of the growth below +:data:`EQUIVALENCE_MARGIN_PP` → "not reproduced"; otherwise "inconclusive" (the
    detectable difference uses the observed mean of d² in place of the discordant rate).
    """
    claim = claim or f"the paper's claim (MeanSparse's gain over the base grows with {name})"
    if len(series) < 2:
        raise InputError(f"gain_grows needs at least two points, got {len(series)}")
    pairs = [(x, *_pair(b, c)) for x, b, c in series]
    n = len(pairs[0][1])
    if any(len(b) != n for _, b, _ in pairs):
        raise InputError("gain_grows: every point needs flags on the same images (equal lengths)")
    label = (lambda x: f"{name}={x}") if name else str
    gains = [(x, 100 * (sum(c) - sum(b)) / n) for x, b, c in pairs]
    monotone = all(g1 <= g2 + 1e-12 for (_, g1), (_, g2) in zip(gains, gains[1:]))
    (x0, b0, c0), (x1, b1, c1) = pairs[0], pairs[-1]
    d = [(int(v1) - int(u1)) - (int(v0) - int(u0)) for u0, v0, u1, v1 in zip(b0, c0, b1, c1)]
    mean = sum(d) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1)) if n > 1 else 0.0
    lo, hi = mean - _Z2 * sd / math.sqrt(n), mean + _Z2 * sd / math.sqrt(n)
    upper = mean + _Z1 * sd / math.sqrt(n)
    p = _sign_flip_p(d)
    text = ("gain (new − base) by " + ", ".join(f"{label(x)}: {g:+.1f} pp" for x, g in gains) +
            (" (rising monotonically)" if monotone else " (not monotone)") +
            f"; growth from {label(x0)} to {label(x1)}: {100 * mean:+.1f} pp (95% CI {100 * lo:+.1f} to "
            f"{100 * hi:+.1f} pp; one-sided 95% upper bound {100 * upper:+.1f} pp; exact sign-flip p = {p:.2g}; "
            f"n = {n})")
    if n < MIN_N:
        return _too_few(claim, n, text)
    if p < ALPHA_TEST and mean > 0:
        return Verdict("reproduced", claim, text + f" — the gain grows significantly (p < {ALPHA_TEST:g})", n=n)
    if p < ALPHA_TEST and mean < 0:
        return Verdict("not reproduced", claim, text + f" — the gain shrinks significantly (p < {ALPHA_TEST:g})", n=n)
    if upper < EQUIVALENCE_MARGIN_PP / 100:
        return Verdict("not reproduced", claim, text + f" — the data rule out a growth of +{EQUIVALENCE_MARGIN_PP:g} "
                       "pp or more", n=n)
    second = sum(v * v for v in d) / n
    return Verdict("inconclusive", claim, text + " — " +
                   _inconclusive_text(n, 100 * _mde(n, second, ALPHA_TEST, POWER, max_delta=2.0)), n=n)


def _one_sided_wilson(k: int, n: int, level: float) -> tuple[float, float]:
    """One-sided ``level`` lower and upper Wilson bounds of k/n (each the end of a two-sided 2·level−1 interval)."""
    return wilson(k, n, NormalDist().inv_cdf(level))


def robust_below(configs: Mapping, *, ceiling_pp: float = ROBUST_CEILING_PP, claim: str | None = None) -> Verdict:
    """The paper's stated limitation "MeanSparse does not make a standard-trained model robust": the robust
    accuracy of every configuration in ``configs`` (``{label: flags [N] or row dict}``, e.g. one per α) stays
    below ``ceiling_pp`` percent (:data:`ROBUST_CEILING_PP`).

    Bounds: one-sided Wilson bounds at level 1 − :data:`ALPHA_TEST`/k for k configurations (Bonferroni, so the
    verdict holds for all of them together). "reproduced" if every upper bound is below the ceiling; "not
    reproduced" if some lower bound is at or above it; "too few images" below :data:`MIN_N`; otherwise
    "inconclusive", with the distance from the ceiling this n detects (one-sample normal approximation at the
    same level and :data:`POWER`).
    """
    claim = claim or f"the paper's stated limitation (on a standard-trained model, robust accuracy stays below " \
                      f"{ceiling_pp:g}%)"
    if not configs:
        raise InputError("robust_below needs at least one configuration")
    flags = {k: _flags(v, str(k)) for k, v in configs.items()}
    ns = {len(f) for f in flags.values()}
    if 0 in ns:
        raise InputError("no images (n = 0): nothing to judge")
    n = min(ns)
    level = 1 - ALPHA_TEST / len(flags)
    parts, uppers, lowers = [], {}, {}
    for k, f in flags.items():
        lo, hi = _one_sided_wilson(sum(f), len(f), level)
        lowers[k], uppers[k] = 100 * lo, 100 * hi
        parts.append(f"{k}: {100 * sum(f) / len(f):.1f}% (one-sided bounds {100 * lo:.1f} to {100 * hi:.1f}%)")
    text = "robust accuracy " + "; ".join(parts) + f" (n = {n}; bounds at {100 * level:.1f}% each, Bonferroni " \
                                                  f"over {len(flags)})"
    if n < MIN_N:
        return _too_few(claim, n, text)
    if all(u < ceiling_pp for u in uppers.values()):
        return Verdict("reproduced", claim, text + f" — every upper bound is below {ceiling_pp:g}%", n=n)
    over = [k for k, lo in lowers.items() if lo >= ceiling_pp]
    if over:
        return Verdict("not reproduced", claim, text + f" — {', '.join(map(str, over))} is above {ceiling_pp:g}%",
                       n=n)
    c = ceiling_pp / 100
    za, zb = NormalDist().inv_cdf(level), NormalDist().inv_cdf(POWER)
    mde = next((100 * d for d in (k / 10000 for k in range(1, 10001)) if d <= c and
                math.sqrt(n) * d >= za * math.sqrt(c * (1 - c)) + zb * math.sqrt((c - d) * (1 - c + d))), math.inf)
    return Verdict("inconclusive", claim, text + " — " + _inconclusive_text(n, mde) + f" from {ceiling_pp:g}%", n=n)


def sigma_ratio_check(ratio_mixed: float, ratio_sorted: float, *, tol: float = SIGMA_RATIO_TOL,
                      claim: str | None = None) -> Verdict:
    """The official code's statistics (the average of per-batch variances) match the exact σ when batches mix
    classes and under-estimate it when they do not. ``ratio_mixed``/``ratio_sorted``: median over sites of
    σ_official / σ_exact with batches in the stored (class-mixed) order and with class-sorted batches.

    "reproduced" if |ratio_mixed − 1| < ``tol`` (:data:`SIGMA_RATIO_TOL`) and ratio_sorted < ratio_mixed − tol;
    "not reproduced" otherwise. These are computed quantities, not estimates of an accuracy: no test, no n.
    """
    claim = claim or ("the official σ estimate matches the exact σ on class-mixed batches and under-estimates it "
                      "on class-sorted batches")
    for v in (ratio_mixed, ratio_sorted):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise InputError(f"sigma_ratio_check: ratios must be finite and > 0, got {v!r}")
    text = (f"median σ_official/σ_exact = {ratio_mixed:.3f} (class-mixed batches) vs {ratio_sorted:.3f} "
            f"(class-sorted batches); tolerance {tol:g}")
    ok_mixed, ok_sorted = abs(ratio_mixed - 1) < tol, ratio_sorted < ratio_mixed - tol
    if ok_mixed and ok_sorted:
        return Verdict("reproduced", claim, text)
    why = [] if ok_mixed else [f"the class-mixed ratio is not within {tol:g} of 1"]
    why += [] if ok_sorted else [f"class-sorted batches do not lower σ by more than {tol:g}"]
    return Verdict("not reproduced", claim, text + " — " + "; ".join(why))


# ================================================================================================
# page sentences: the verdict line of a page, worded from the rules above (rows: display rows in percent)
# ================================================================================================
BEST_CENTRE_CLAIM = ("the paper's reading of Table 5 (centring the band at the channel mean μ_ch keeps clean "
                     "accuracy best: higher than the zero and the global-mean centre at the same α)")


def best_of(flags: Mapping[str, object], best: str, *, claim: str = BEST_CENTRE_CLAIM, what: str = "clean") -> Verdict:
    """The claim "``best`` scores higher than every other configuration" on per-image flags [N] of each
    configuration (``flags`` = {name: flags}, the same images), by one paired comparison ``best`` − other each.

    Rules, in order: n < :data:`MIN_N` → "too few images"; ``best`` significantly *lower* than any other (exact
    McNemar p < :data:`ALPHA_TEST`) → "not reproduced"; significantly higher than every other → "reproduced";
    otherwise "inconclusive" — a non-significant difference never confirms the ranking — with the difference
    this n detects (the largest of the comparisons that were not significant)."""
    if best not in flags or len(flags) < 2:
        raise InputError(f"best_of: need {best!r} and at least one other configuration, got {sorted(flags)}")
    diffs = {name: paired_difference(f, flags[best]) for name, f in flags.items() if name != best}
    n = next(iter(diffs.values())).n
    text = "; ".join(f"{best} vs {name}: " + d.describe(what) for name, d in diffs.items())
    if n < MIN_N:
        return _too_few(claim, n, text)
    worse = [name for name, d in diffs.items() if d.significant and d.delta < 0]
    if worse:
        return Verdict("not reproduced", claim, text + f" — {best} is significantly lower than {', '.join(worse)} "
                       f"(p < {ALPHA_TEST:g})", n=n)
    open_ = {name: d for name, d in diffs.items() if not (d.significant and d.delta > 0)}
    if not open_:
        return Verdict("reproduced", claim, text + f" — {best} is significantly higher than every other "
                       f"(p < {ALPHA_TEST:g})", n=n)
    mde = max(d.mde_pp() for d in open_.values())
    return Verdict("inconclusive", claim, text + f" — not significant against {', '.join(open_)} (not a "
                   "confirmation); " + _inconclusive_text(n, mde), n=n)


def prefix_verdicts(rule, base, new, ns: Sequence[int], **kw) -> dict[int, Verdict]:
    """``rule(base[:k], new[:k], **kw)`` for each k in ``ns``: the same claim on the first k images (nested
    subsets of the page's images, so no new evaluation), to see whether the verdict depends on n. ``base``/``new``
    are flag vectors [N]; ``clean_base``/``clean_new``, when flag vectors, are cut alike (percentages cannot be)."""
    b, c = _pair(base, new)
    for key in ("clean_base", "clean_new"):
        if key in kw and isinstance(kw[key], (int, float)):
            raise InputError(f"prefix_verdicts: {key} must be per-image flags, not a percentage")
    out = {}
    for k in sorted(set(int(k) for k in ns)):
        if not 0 < k <= len(b):
            raise InputError(f"prefix_verdicts: n = {k} is not in 1..{len(b)}")
        cut = {key: (_flags(v)[:k] if key in ("clean_base", "clean_new") else v) for key, v in kw.items()}
        out[k] = rule(b[:k], c[:k], **cut)
    return out


def fragility_note(verdicts: Mapping[int, Verdict]) -> str:
    """One sentence when a claim's verdict changes with n ({n: Verdict}), e.g. "**Fragile:** the verdict depends on
    n — reproduced at n = 100, inconclusive at n = 200 (…)"; empty when every n gives the same status."""
    if len({v.status for v in verdicts.values()}) <= 1:
        return ""
    parts = ", ".join(f"{v.status} at n = {n}" for n, v in sorted(verdicts.items()))
    mde = [f"n = {n} detects about {v.difference.mde_pp():.1f} pp" for n, v in sorted(verdicts.items())
           if v.difference is not None and math.isfinite(v.difference.mde_pp())]
    return (f"**Fragile:** the verdict depends on n — {parts} (the first n of the same images). It rests on a "
            "handful of images and needs confirming at a larger n" + (f" ({'; '.join(mde)})" if mde else "") + ".")


def verdict(status, detail: str = "") -> str:
    """The one-line verdict, as Markdown.

    ``status``: a :class:`msparse.report.verdicts.Verdict` (from one of the rules in
    :mod:`msparse.report.verdicts`; ``detail``, if given, is appended), or one of
    :data:`msparse.report.verdicts.STATUSES` with its ``detail`` text. The older status ``"not yet run here"`` is
    read as ``"not evaluated here"``."""
    from ..report.verdicts import STATUSES, Verdict

    if isinstance(status, Verdict):
        return status.markdown() + (f" {detail}" if detail else "")
    status = {"not yet run here": "not evaluated here"}.get(status, status)
    if status not in STATUSES:
        raise InputError(f"verdict status must be one of {list(STATUSES)}, got {status!r}")
    return Verdict(status, "", detail).markdown()


def trend(rows: Sequence[Mapping], alpha: float, what: str = "robust") -> str:
    """Plain-words reading of our change at ``alpha`` vs α = 0 (with its paired test)."""
    r = next((r for r in rows if math.isclose(r["alpha"], alpha, abs_tol=1e-9)), None)
    b = next((r for r in rows if r["alpha"] == 0.0), None)
    if r is None or b is None:
        return f"(no α={alpha:g} point)"
    d = r[what] - b[what]
    sig = ""
    if what == "robust" and "p_robust" in r:
        sig = f", paired McNemar p = {r['p_robust']:.2g}" + (" (not significant at this n)" if r["p_robust"] >= 0.05 else "")
    return f"{what} {b[what]:.1f}% → {r[what]:.1f}% at α={alpha:g} ({d:+.1f} pp, n={r['n']}{sig})"


def _sweep_pair(rows: Sequence[Mapping], alpha: float) -> tuple[Mapping | None, Mapping | None]:
    """The α = 0 row and the ``alpha`` row of an α sweep (None where missing)."""
    r = next((r for r in rows if math.isclose(r["alpha"], alpha, abs_tol=1e-9)), None)
    b = next((r for r in rows if r["alpha"] == 0.0), None)
    return b, r


def gain_verdict(rows: Sequence[Mapping], alpha: float, max_clean_drop: float | None = None,
                 claim: str | None = None):
    """:func:`msparse.report.verdicts.gain_claim` on the α = 0 and ``alpha`` rows of an α sweep (their per-image robust
    flags and clean accuracies); "not evaluated here" when the sweep has no such pair."""

    claim = claim or GAIN_CLAIM
    b, r = _sweep_pair(rows, alpha)
    if r is None or b is None:
        return not_evaluated(claim, f"no α={alpha:g} and α=0 pair was evaluated")
    return gain_claim(b, r, claim=claim,
                        max_clean_drop_pp=MAX_CLEAN_DROP_PP if max_clean_drop is None else max_clean_drop)


def claim_check(rows: Sequence[Mapping], alpha: float, max_clean_drop: float = 2.0) -> tuple[bool | None, str]:
    """Does the paper's claim 'MeanSparse at ``alpha`` raises robust accuracy at a small clean cost (a clean drop
    of at most ``max_clean_drop`` pp)' hold in ``rows``? Decided by :func:`msparse.report.verdicts.gain_claim` (paired
    exact McNemar test, Newcombe interval, equivalence margin). Returns ``(True / False / None, explanation)``:
    True = reproduced, False = not reproduced, None = inconclusive, too few images, or no α/α=0 pair."""
    v = gain_verdict(rows, alpha, max_clean_drop)
    return v.holds, v.detail.rstrip(".")


def alpha_verdict(s, rows: Sequence[Mapping], paper_model: str, alpha: float, what: str = "") -> str:
    """The verdict line of an α-sweep page: :func:`msparse.report.verdicts.gain_claim` between α = 0 and ``alpha`` on
    ``s``'s model (the paper's own numbers need ``paper_model``, whose weights are not available offline unless
    ``s`` is that model: the qualitative claim is what is checked). Random weights: "not evaluated here"."""

    claim = "the paper's claim (MeanSparse raises robust accuracy at a small clean cost" + \
            (f"; here: {what}" if what else "") + ")"
    if s.is_random:
        return not_evaluated(claim, "this run used random weights (infrastructure test); no claim can be "
                                      "checked").markdown()
    v = gain_verdict(rows, alpha, claim=claim)
    if v.status == "not evaluated here":
        return v.markdown()
    # the rows' model is named by the page (Table 4 passes one Setup for rows of several models)
    v = dataclasses.replace(v, detail=f"at α={alpha:g} vs α=0, " + v.detail.rstrip(".") +
                            f". The paper's numbers are for {paper_model}, whose weights are not available offline; "
                            "the qualitative claim is checked on the model evaluated here")
    return v.markdown()


# ================================================================================================
# the referee's verdict: a gain that must survive every attack
# ================================================================================================
REFEREE_PHRASES = ("reproduced", "not reproduced", "broken by an adaptive attack", "inconclusive at this n",
                   "unequal budget", "not attacked adaptively")


@dataclass(frozen=True)
class RefereeVerdict:
    """A referee's verdict on "MeanSparse raises robust accuracy" for one model: ``phrase`` (one of
    :data:`REFEREE_PHRASES`), the :func:`gain_claim` verdicts under the official-gradient attack (``direct``) and
    under the per-image worst case over every attack run (``worst``), and the Holm-adjusted p of the worst case."""

    phrase: str
    direct: Verdict
    worst: Verdict
    p_adjusted: float | None = None
    missing: tuple = ()          # (loss, what the base lacks) when the base was attacked more weakly
    fragile: str = ""            # non-empty when one image would change the worst case's verdict

    def reason(self) -> str:
        d, w = self.direct.difference, self.worst.difference
        worst = f"worst case {w.delta_pp:+.1f} pp (p = {w.p_value:.2g}" if w else "worst case: no data ("
        if w and self.p_adjusted is not None:
            worst += f", Holm-adjusted {self.p_adjusted:.2g}"
        worst += ")"
        direct = f"official gradient {d.delta_pp:+.1f} pp (p = {d.p_value:.2g})" if d else "official gradient: no data"
        tail = ""
        if self.phrase == "inconclusive at this n" and w is not None:
            tail = f"; n = {w.n} detects about {w.mde_pp():.1f} pp"
        if self.missing:
            tail += "; the base was attacked more weakly (" + "; ".join(f"{k}: {v}" for k, v in self.missing) + ")"
        if self.fragile:
            tail += f"; {self.fragile}"
        return f"{direct}; {worst}{tail}"


def referee_verdict(direct_base, direct_new, worst_base, worst_new, *, clean_base=None, clean_new=None,
                    p_adjusted: float | None = None, claim: str = GAIN_CLAIM,
                    missing: Mapping[str, str] | None = None, adaptive: bool = True) -> RefereeVerdict:
    """The verdict a referee would sign on ``claim`` for one model, from robust flags [N] on the same images: under
    the official (masked) gradient attack at α = 0 and at α (``direct_*``), and under the per-image worst case over
    all attacks run (``worst_*``). ``p_adjusted``: the worst case's McNemar p after a multiple-comparison
    correction over the page's claims (Holm); None = unadjusted. Rules, in order:

    1. the worst case's :func:`gain_claim` is "reproduced": "reproduced" (the gain survives every attack) if its
       adjusted p < :data:`ALPHA_TEST`, else "inconclusive at this n" (significant only before the correction);
    2. the direct attack's gain_claim is "reproduced" but the worst case's is not → "broken by an adaptive attack"
       (the gain exists only for the attack that sees the zero gradient);
    3. the worst case's gain_claim is "not reproduced" → "not reproduced";
    4. otherwise → "inconclusive at this n" (the text says what n detects). Never concluded from p ≥ 0.05 alone.

    ``missing`` (``{loss: what the base lacks}``, :attr:`msparse.evaluation.evidence.Comparison.missing`): when the
    base received a weaker attack budget than the defence, a verdict against the claim (rules 2 and 3) is refused
    and the phrase is "unequal budget": a weaker attack on the base overstates the base, so the loss could be the
    budget's. A "reproduced" gain stands (a stronger base attack could only lower the base).
    ``adaptive`` False (MeanSparse was attacked through its official gradient only): a "reproduced" becomes "not
    attacked adaptively" — a gain measured only by the attack that sees the masked gradient is no gain that stands.
    The verdict also says when a single image would change the worst case's verdict (:func:`one_image_flips`).
    """
    d = gain_claim(direct_base, direct_new, clean_base=clean_base, clean_new=clean_new, claim=claim)
    w = gain_claim(worst_base, worst_new, clean_base=clean_base, clean_new=clean_new, claim=claim)
    p = w.difference.p_value if (p_adjusted is None and w.difference is not None) else p_adjusted
    if w.status == "reproduced":   # significant unadjusted; after the correction, or inconclusive
        phrase = "reproduced" if p is not None and p < ALPHA_TEST else "inconclusive at this n"
    elif d.status == "reproduced":
        phrase = "broken by an adaptive attack"
    elif w.status == "not reproduced":
        phrase = "not reproduced"
    else:
        phrase = "inconclusive at this n"
    if missing and phrase in ("broken by an adaptive attack", "not reproduced"):
        phrase = "unequal budget"
    if not adaptive and phrase == "reproduced":
        phrase = "not attacked adaptively"
    fragile = one_image_flips(gain_claim, worst_base, worst_new, clean_base=clean_base, clean_new=clean_new,
                              claim=claim)
    return RefereeVerdict(phrase, d, w, p_adjusted, tuple(sorted((missing or {}).items())), fragile)


def one_image_flips(rule, base, new, **kw) -> str:
    """A note when one image decides ``rule``'s verdict on flags [N] (``base``, ``new``): the verdict is recomputed
    with one more and with one fewer image robust under ``new``; "" when neither changes its status, else the
    sentence naming the status it would flip to. Used for verdicts whose bound or p sits at its threshold."""
    for side, key in ((base, "clean_base"), (new, "clean_new")):
        if kw.get(key) is None and isinstance(side, Mapping) and ("clean" in side or "clean_flags" in side):
            kw[key] = side
    b, n = _pair(base, new)
    status = rule(b, n, **kw).status
    flips = []
    for want in (False, True):   # one more robust image (turn a False), one fewer (turn a True)
        i = next((k for k, v in enumerate(n) if v is want), None)
        if i is None:
            continue
        alt = list(n)
        alt[i] = not want
        s = rule(b, alt, **kw).status
        if s != status:
            flips.append(f"{'one more' if want is False else 'one fewer'} robust image would make it {s!r}")
    return ("fragile: " + " and ".join(flips)) if flips else ""


def no_better_line(base, new, where: str, *, what: str = "robust") -> str:
    """The page line of :func:`no_better_than_base` on flags [N] (rows), with ``where`` (what was measured) and, when
    one image would change the verdict (:func:`one_image_flips`), a sentence saying so."""
    v = no_better_than_base(base, new, what=what)
    fragile = one_image_flips(lambda b, n, **_: no_better_than_base(b, n, what=what), base, new)
    return verdict(v, where + (f" The verdict is {fragile}." if fragile else ""))
