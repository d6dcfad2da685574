"""Verdict rules: how a page of the book decides whether a published claim holds on the numbers it computed.

This module owns the :class:`Verdict`, its thresholds and the significance-based claim rules (a paired difference
in, a status out). The page sentences built from a page's display rows are :mod:`msparse.report.verdict_lines`'s,
the referee's verdict over several attacks is :mod:`msparse.report.referee`'s, and the statistics themselves
(intervals, tests, detectable differences) are :mod:`msparse.evaluation.significance`'s.

Every verdict line the book shows is a :class:`Verdict` returned by one of the rules below. A verdict has one of
five statuses (:data:`STATUSES`):

``"reproduced"``         the data support the claim at the thresholds below;
``"not reproduced"``     the data contradict it (a significant effect in the other direction, or an effect the
                         claim needs that the data rule out);
``"inconclusive"``       neither: the text says ``inconclusive at n = …; this n detects differences of about X pp
                         or more`` (see :func:`~msparse.evaluation.significance.min_detectable_difference`);
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
:func:`msparse.report.tables.result_row` (its ``"robust_flags"`` are used; :func:`gain_claim` also reads its clean accuracy).

**Statistics** (:mod:`msparse.evaluation.significance`). Paired: the exact McNemar test (:func:`mcnemar`) for
significance at :data:`ALPHA_TEST`, and Tango's score interval for a difference of paired proportions (see
:func:`paired_interval`) for the size of the difference. "No better than" is never concluded from a
non-significant test: it needs the one-sided upper 95% bound of the difference below +:data:`EQUIVALENCE_MARGIN_PP`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from ..errors import InputError
from ..evaluation.significance import (ALPHA_TEST, POWER, detectable_difference, mcnemar, min_detectable_difference,
                                       paired_interval, sign_flip_p, wilson)

__all__ = ["STATUSES", "EQUIVALENCE_MARGIN_PP", "MAX_CLEAN_DROP_PP", "MIN_N", "ROBUST_CEILING_PP", "SIGMA_RATIO_TOL",
           "GAIN_CLAIM", "NO_BETTER_CLAIM", "BEST_CENTRE_CLAIM", "Verdict", "not_evaluated", "PairedDifference",
           "paired_difference", "gain_claim", "no_better_than_base", "gain_grows", "robust_below",
           "sigma_ratio_check", "best_of", "prefix_verdicts", "fragility_note", "one_image_flips"]

#: the five statuses a verdict can have, in the words the book prints
STATUSES: tuple[str, ...] = ("reproduced", "not reproduced", "inconclusive", "too few images", "not evaluated here")

# ------------------------------------------------------------------------------------------------
# thresholds (named, so that a page's verdict can be traced to them)
# ------------------------------------------------------------------------------------------------
# the level of every test (ALPHA_TEST, 0.05) and the power of every detectable difference (POWER, 0.8) are
# msparse.evaluation.significance's

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
# the paired difference (the statistics are msparse.evaluation.significance's)
# ================================================================================================
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
    p = sign_flip_p(d)
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
                   _inconclusive_text(n, 100 * detectable_difference(n, second, ALPHA_TEST, POWER, max_delta=2.0)), n=n)


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


# ================================================================================================
# does the verdict rest on a handful of images?
# ================================================================================================
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

