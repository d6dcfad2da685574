"""The verdict line of a page: a :class:`~msparse.report.verdicts.Verdict` (or a bare status) as Markdown, and the
sentences an α-sweep page words from its display rows (rows of :func:`msparse.report.tables.display_rows`, accuracies
in percent, one per α, with per-image ``robust_flags``/``clean_flags``).

The rules that decide a verdict are :mod:`msparse.report.verdicts`'s; this module only picks the rows a rule
compares (α = 0 against the page's α) and words the result for the page.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from ..errors import InputError
from .verdicts import GAIN_CLAIM, MAX_CLEAN_DROP_PP, STATUSES, Verdict, gain_claim, no_better_than_base, \
    not_evaluated, one_image_flips

__all__ = ["verdict", "trend", "gain_verdict", "claim_check", "alpha_verdict", "no_better_line"]


def verdict(status, detail: str = "") -> str:
    """The one-line verdict, as Markdown.

    ``status``: a :class:`msparse.report.verdicts.Verdict` (from one of the rules in
    :mod:`msparse.report.verdicts`; ``detail``, if given, is appended), or one of
    :data:`msparse.report.verdicts.STATUSES` with its ``detail`` text. The older status ``"not yet run here"`` is
    read as ``"not evaluated here"``."""
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


def no_better_line(base, new, where: str, *, what: str = "robust") -> str:
    """The page line of :func:`no_better_than_base` on flags [N] (rows), with ``where`` (what was measured) and, when
    one image would change the verdict (:func:`one_image_flips`), a sentence saying so."""
    v = no_better_than_base(base, new, what=what)
    fragile = one_image_flips(lambda b, n, **_: no_better_than_base(b, n, what=what), base, new)
    return verdict(v, where + (f" The verdict is {fragile}." if fragile else ""))
