"""The referee's verdict on "MeanSparse raises robust accuracy" for one model: a gain that must survive every
attack. :func:`referee_verdict` combines :func:`~msparse.report.verdicts.gain_claim` under the official-gradient
attack and under the per-image worst case over every attack run (with Holm's adjustment over a page's claims, an
equal attack budget on both sides, and an adaptive attack at all) into one of :data:`REFEREE_PHRASES`, and
:meth:`RefereeVerdict.reason` words the numbers behind it (used by :mod:`msparse.experiments.works` and
:mod:`msparse.experiments.table1`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..evaluation.significance import ALPHA_TEST
from .verdicts import GAIN_CLAIM, Verdict, gain_claim, one_image_flips

__all__ = ["REFEREE_PHRASES", "RefereeVerdict", "referee_verdict"]


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
    extra: tuple = ()            # (loss, what the defence lacks) when the defence was attacked more weakly
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
        if self.extra and self.phrase == "unequal budget" and not self.missing:
            tail += "; its base was attacked harder, so the gain could be the budget's"
        if self.fragile:
            tail += f"; {self.fragile}"
        return f"{direct}; {worst}{tail}"


def referee_verdict(direct_base, direct_new, worst_base, worst_new, *, clean_base=None, clean_new=None,
                    p_adjusted: float | None = None, claim: str = GAIN_CLAIM,
                    missing: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None,
                    adaptive: bool = True) -> RefereeVerdict:
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
    ``extra`` (``{loss: what the defence lacks}``, :attr:`~msparse.evaluation.evidence.Comparison.extra`): the
    converse; a "reproduced" gain is refused ("unequal budget": the base's lower accuracy could be its stronger
    attack's), while a verdict against the claim stands (a stronger attack on the defence could only lower it).
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
    if extra and phrase == "reproduced":
        phrase = "unequal budget"
    if not adaptive and phrase == "reproduced":
        phrase = "not attacked adaptively"
    fragile = one_image_flips(gain_claim, worst_base, worst_new, clean_base=clean_base, clean_new=clean_new,
                              claim=claim)
    return RefereeVerdict(phrase, d, w, p_adjusted, tuple(sorted((missing or {}).items())),
                          tuple(sorted((extra or {}).items())), fragile)
