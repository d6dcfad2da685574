"""Verdict rules (msparse.report.verdicts): every outcome of every rule on constructed per-image flags, the paired
interval and the detectable difference (msparse.evaluation.significance) against published / hand-computed values,
and the book's wrappers (msparse.report.verdict_lines)."""

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest

from msparse.evaluation import significance as S
from msparse.evaluation.significance import mcnemar
from msparse.report import verdict_lines as L, verdicts as V
from msparse.errors import InputError


def table(both, gained, lost, neither):
    """(base, new) flag strings of a paired 2×2 table: right under both, only new, only base, neither."""
    base = "1" * both + "0" * gained + "1" * lost + "0" * neither
    new = "1" * both + "1" * gained + "0" * lost + "0" * neither
    return base, new


def rows(base, new, clean_base=84.0, clean_new=83.5, alpha=0.35):
    """Two rows of an α sweep, as msparse.book.result_row makes them (only the fields the rules read)."""
    return [dict(alpha=0.0, n=len(base), clean=clean_base, robust=100 * base.count("1") / len(base),
                 robust_flags=base),
            dict(alpha=alpha, n=len(new), clean=clean_new, robust=100 * new.count("1") / len(new),
                 robust_flags=new)]


# ------------------------------------------------------------------------------------------------
# the paired difference
def test_paired_interval_matches_the_published_tango_example():
    # Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (Ch. 8), Cavo et al. (2012):
    # 59 both, 6 only first, 16 only second, 80 neither -> -0.0621, Tango score 95% CI -0.1240 to -0.0054
    lo, hi = S.paired_interval(6, 16, 161)
    assert lo == pytest.approx(-0.1240, abs=5e-5) and hi == pytest.approx(-0.0054, abs=5e-5)


def test_paired_difference_counts_p_value_and_bounds():
    base, new = table(59, 6, 16, 80)
    d = V.paired_difference(base, new)
    assert (d.n, d.base, d.new, d.gained, d.lost, d.discordant) == (161, 75, 65, 6, 16, 22)
    assert d.delta == pytest.approx(-10 / 161)
    # exact McNemar by hand: 2 * sum_{i<=6} C(22, i) / 2^22 = 2 * 110056 / 4194304
    assert d.p_value == pytest.approx(2 * 110056 / 2 ** 22) and d.p_value == pytest.approx(0.05248, abs=1e-5)
    assert not d.significant
    assert d.ci == pytest.approx((-0.1240, -0.0054), abs=5e-5)
    # one-sided 95% bounds = the ends of the two-sided 90% interval, inside the 95% one
    assert (d.lower, d.upper) == pytest.approx(S.paired_interval(6, 16, 161, 0.90))
    assert d.ci[0] < d.lower < d.delta < d.upper < d.ci[1]


def test_paired_interval_with_no_change_is_narrow_but_not_degenerate():
    # no discordant image: T(d) = -sqrt(n d / (1 - d)), so the bounds are +-z^2 / (n + z^2)
    z95, z90 = 1.959964, 1.644854
    assert S.paired_interval(0, 0, 100) == pytest.approx((-z95 ** 2 / (100 + z95 ** 2), z95 ** 2 / (100 + z95 ** 2)))
    assert S.paired_interval(0, 0, 100, 0.90)[1] == pytest.approx(z90 ** 2 / (100 + z90 ** 2))  # +2.63 pp
    # every image gained: p~ = (1 - d) / 2, T(d) = sqrt(n (1 - d) / (1 + d)) = z at d = (n - z^2) / (n + z^2)
    assert S.paired_interval(100, 0, 100) == pytest.approx(((100 - z95 ** 2) / (100 + z95 ** 2), 1.0))


def test_one_sided_upper_bound_keeps_its_level_with_few_one_sided_changes():
    # MeanSparse vs its base at small alpha: few images change, mostly one way. Simulated (seeded) n = 500, 1% of
    # images gained, none lost (true +1 pp): the one-sided 95% upper bound must not fall below +1 pp in much more
    # than 5% of runs (it would make "no better than the base" reproduced wrongly). Newcombe's interval: 13%.
    rng = np.random.default_rng(0)
    runs = rng.multinomial(500, [0.40, 0.01, 0.0, 0.59], size=2000)
    bound = {g: S.paired_interval(g, 0, 500, 0.90)[1] for g in set(int(r[1]) for r in runs)}
    misses = sum(bound[int(r[1])] < 0.01 for r in runs) / len(runs)
    assert misses < 0.07


def test_paired_difference_accepts_every_flag_shape():
    import torch

    base, new = table(3, 2, 1, 4)
    want = V.paired_difference(base, new)
    as_list = [c == "1" for c in base], [int(c) for c in new]
    assert V.paired_difference(*as_list) == want
    assert V.paired_difference(np.array(as_list[0]), torch.tensor(as_list[1])) == want
    assert V.paired_difference({"robust_flags": base}, {"robust_flags": new}) == want


@pytest.mark.parametrize("base, new, message", [
    ("", "", "n = 0"),
    ([], [], "n = 0"),
    ("0101", "010", "differ in length"),
    ("01x1", "0101", "only '0' and '1'"),
    ([0, 2], [0, 1], "booleans or 0/1"),
    ({"robust": 50.0}, "01", "robust_flags"),
])
def test_paired_difference_rejects_bad_input(base, new, message):
    with pytest.raises(ValueError, match=message):
        V.paired_difference(base, new)


def test_paired_interval_rejects_bad_counts():
    with pytest.raises(ValueError, match="n = 0"):
        S.paired_interval(0, 0, 0)
    with pytest.raises(ValueError, match=">= 0"):
        S.paired_interval(1, -1, 10)
    with pytest.raises(ValueError, match="discordant"):
        S.paired_interval(6, 5, 10)


# ------------------------------------------------------------------------------------------------
# the detectable difference
def test_min_detectable_difference_against_hand_computed_values():
    # psi = 0.1, n = 100: 10*d = 1.95996*sqrt(0.1) + 0.84162*sqrt(0.1 - d^2) crosses between d = 0.0875 (left side
    # smaller) and d = 0.088 (left side larger)
    mde = S.min_detectable_difference(100, 0.1)
    assert 8.75 < mde < 8.80
    assert S.required_n(mde, 0.1) == 100 and S.required_n(mde - 0.05, 0.1) > 100
    # psi = 0 (no image changed): a difference d changes at least d of the images, so psi = d:
    # 10*d = 1.95996*sqrt(d) + 0.84162*sqrt(d - d^2) crosses between d = 0.075 and d = 0.08
    assert 7.5 < S.min_detectable_difference(100, 0.0) < 8.0


def test_min_detectable_difference_defaults_scaling_and_limits():
    assert S.min_detectable_difference(100) == S.min_detectable_difference(100, S.DEFAULT_DISCORDANT_RATE)
    # for a fixed discordant rate it shrinks like 1/sqrt(n) (approximately)
    assert S.min_detectable_difference(400, 0.1) == pytest.approx(S.min_detectable_difference(100, 0.1) / 2, rel=0.05)
    assert S.min_detectable_difference(100, 0.2) > S.min_detectable_difference(100, 0.1)
    assert S.min_detectable_difference(100, power=0.9) > S.min_detectable_difference(100, power=0.8)
    # even a 100 pp difference needs n >= 1.96^2: 3 images cannot detect anything, 4 can detect 100 pp
    assert math.isinf(S.min_detectable_difference(3, 0.5))
    assert S.min_detectable_difference(4, 1.0) == pytest.approx(98.0, abs=2.0)


@pytest.mark.parametrize("kw, message", [
    (dict(n=0), "positive integer"), (dict(n=100, discordant_rate=1.5), r"\[0, 1\]"),
    (dict(n=100, alpha=0), "alpha"), (dict(n=100, power=1), "power"),
])
def test_min_detectable_difference_rejects_bad_input(kw, message):
    with pytest.raises(ValueError, match=message):
        S.min_detectable_difference(**kw)


# ------------------------------------------------------------------------------------------------
# gain_claim: the paper's "MeanSparse raises robust accuracy at a small clean cost"
def test_gain_claim_reproduced():
    base, new = table(78, 20, 2, 100)
    v = V.gain_claim(base, new, clean_base=84.0, clean_new=83.0)
    assert v.status == "reproduced" and v.holds is True
    assert "significant robust gain" in v.detail and "clean 84.0% → 83.0%" in v.detail
    assert v.markdown().startswith("**Verdict: reproduced** — " + V.GAIN_CLAIM)


def test_gain_claim_without_clean_says_so():
    base, new = table(78, 20, 2, 100)
    v = V.gain_claim(base, new)
    assert v.status == "reproduced" and "clean accuracy not checked" in v.detail


def test_gain_claim_not_reproduced_when_the_clean_cost_is_too_large():
    base, new = table(78, 20, 2, 100)
    v = V.gain_claim(base, new, clean_base=84.0, clean_new=80.0)
    assert v.status == "not reproduced" and "clean accuracy drops by 4.0 pp" in v.detail
    # the threshold is MAX_CLEAN_DROP_PP, or the caller's
    assert V.gain_claim(base, new, clean_base=84.0, clean_new=82.0).status == "reproduced"
    assert V.gain_claim(base, new, clean_base=84.0, clean_new=80.0, max_clean_drop_pp=5).status == "reproduced"


def test_gain_claim_reads_clean_flags_of_the_same_images():
    base, new = table(78, 20, 2, 100)
    clean_b, clean_n = "1" * 170 + "0" * 30, "1" * 160 + "0" * 40  # 85% -> 80%
    v = V.gain_claim(base, new, clean_base=clean_b, clean_new=clean_n)
    assert v.status == "not reproduced" and "clean 85.0% → 80.0%" in v.detail
    with pytest.raises(ValueError, match="same images"):
        V.gain_claim(base, new, clean_base="1" * 10, clean_new=clean_n)
    with pytest.raises(ValueError, match="percent"):
        V.gain_claim(base, new, clean_base=120.0, clean_new=80.0)


def test_gain_claim_not_reproduced_when_significantly_lower():
    base, new = table(78, 2, 20, 100)
    v = V.gain_claim(base, new, clean_base=84.0, clean_new=84.0)
    assert v.status == "not reproduced" and "significantly lower" in v.detail


def test_gain_claim_not_reproduced_when_a_gain_of_the_margin_is_ruled_out():
    base, new = table(800, 10, 10, 1180)  # n = 2000, no net change, 1% of images change
    v = V.gain_claim(base, new)
    assert v.difference.p_value >= S.ALPHA_TEST
    assert v.difference.upper < V.EQUIVALENCE_MARGIN_PP / 100
    assert v.status == "not reproduced" and "rule out a gain of +1 pp or more" in v.detail


def test_gain_claim_inconclusive_says_n_and_the_detectable_difference():
    base, new = table(38, 5, 2, 55)  # n = 100, +3 pp, p = 0.45
    v = V.gain_claim(base, new, clean_base=84.0, clean_new=83.0)
    mde = S.min_detectable_difference(100, 0.07)
    assert v.status == "inconclusive" and v.holds is None and v.n == 100
    assert f"inconclusive at n = 100; this n detects differences of about {mde:.1f} pp or more" in v.detail
    assert v.markdown().startswith("**Verdict: inconclusive at n = 100** — ")


def test_gain_claim_inconclusive_reports_a_large_clean_drop_without_deciding_on_it():
    base, new = table(38, 5, 2, 55)
    v = V.gain_claim(base, new, clean_base=84.0, clean_new=79.0)
    assert v.status == "inconclusive" and "drops by 5.0 pp, more than the 2 pp" in v.detail


def test_gain_claim_significant_gain_below_the_margin_is_reproduced_and_says_it_is_small():
    base, new = table(8000, 200, 100, 11700)  # n = 20000, +0.5 pp, p << 0.05, upper bound < 1 pp
    v = V.gain_claim(base, new)
    assert v.status == "reproduced" and "the gain is below +1 pp" in v.detail


def test_gain_claim_too_few_images():
    base, new = table(3, 6, 0, 3)  # n = 12: 6 of 12 images gained, p = 0.03, but n < MIN_N
    v = V.gain_claim(base, new)
    assert v.status == "too few images" and v.n == 12
    assert v.markdown().startswith("**Verdict: too few images at n = 12** — ") and f"n = 12 < {V.MIN_N}" in v.detail


# ------------------------------------------------------------------------------------------------
# no_better_than_base: RobustBench's "under BPDA, MeanSparse is no better than its base"
def test_no_better_reproduced_only_when_the_upper_bound_is_below_the_margin():
    base, new = table(175, 5, 25, 295)  # n = 500, -4 pp
    v = V.no_better_than_base(base, new)
    assert v.status == "reproduced" and v.difference.upper < 0.01
    assert "a gain over the base of +1 pp or more is ruled out" in v.detail


def test_no_better_is_not_reproduced_from_a_non_significant_test_with_a_wide_interval():
    base, new = table(36, 4, 6, 54)  # n = 100, -2 pp, p = 0.75: the old rule said "reproduced"
    v = V.no_better_than_base(base, new)
    assert v.difference.p_value >= S.ALPHA_TEST and v.difference.upper > V.EQUIVALENCE_MARGIN_PP / 100
    assert v.status == "inconclusive"
    mde = S.min_detectable_difference(100, 0.10)
    assert f"inconclusive at n = 100; this n detects differences of about {mde:.1f} pp or more" in v.detail


def test_no_better_with_no_image_changing_depends_on_n():
    # nothing changes: at n = 100 the upper bound is still +2.6 pp (inconclusive); at n = 2000 it is +0.14 pp
    v100 = V.no_better_than_base(*table(50, 0, 0, 50))
    assert v100.status == "inconclusive" and v100.difference.upper == pytest.approx(0.0263, abs=5e-4)
    assert V.no_better_than_base(*table(1000, 0, 0, 1000)).status == "reproduced"


def test_no_better_not_reproduced_when_significantly_better():
    v = V.no_better_than_base(*table(60, 30, 5, 105))
    assert v.status == "not reproduced" and "significantly better" in v.detail


def test_no_better_too_few_images():
    v = V.no_better_than_base(*table(5, 0, 6, 4))
    assert v.status == "too few images" and v.n == 15


# ------------------------------------------------------------------------------------------------
# gain_grows: Table 6's "the gain grows with ε"
def test_sign_flip_p_against_hand_computed_values():
    assert S.sign_flip_p([1] * 6) == pytest.approx(2 / 64)
    assert S.sign_flip_p([2, 1]) == pytest.approx(0.5)  # S in {3, 1, -1, -3}
    assert S.sign_flip_p([2, 1, 1]) == pytest.approx(2 / 8)  # |S| = 4 only for all-plus or all-minus
    assert S.sign_flip_p([2] * 5) == pytest.approx(2 / 32)
    assert S.sign_flip_p([2, -1]) == 1.0 and S.sign_flip_p([0, 0]) == 1.0
    assert S.sign_flip_p([1, 1, 1, 1, -1]) == pytest.approx(12 / 32)


def test_sign_flip_p_equals_exact_mcnemar_for_plus_minus_one():
    rng = random.Random(0)
    for _ in range(20):
        b = [rng.random() < 0.5 for _ in range(60)]
        c = [rng.random() < 0.5 for _ in range(60)]
        assert S.sign_flip_p([int(v) - int(u) for u, v in zip(b, c)]) == pytest.approx(mcnemar(b, c).p_value)


def _eps_series(n, gains_hi):
    """ε=1: MeanSparse changes nothing; ε=16: base 30 right, ``gains_hi`` = (gained, lost) images."""
    lo = "1" * 50 + "0" * (n - 50)
    g, l = gains_hi
    base_hi, new_hi = table(30 - l, g, l, n - 30 - g)
    return [(1, lo, lo), (16, base_hi, new_hi)]


def test_gain_grows_reproduced():
    v = V.gain_grows(_eps_series(100, (15, 0)))
    assert v.status == "reproduced" and "ε=1: +0.0 pp, ε=16: +15.0 pp" in v.detail
    assert "rising monotonically" in v.detail


def test_gain_grows_not_reproduced_when_the_gain_shrinks():
    v = V.gain_grows(_eps_series(100, (0, 15)))
    assert v.status == "not reproduced" and "shrinks" in v.detail


def test_gain_grows_not_reproduced_when_growth_is_ruled_out():
    flat = "1" * 700 + "0" * 1300
    v = V.gain_grows([(1, flat, flat), (8, flat, flat), (16, flat, flat)])
    assert v.status == "not reproduced" and "rule out a growth of +1 pp or more" in v.detail


def test_gain_grows_inconclusive_and_too_few():
    v = V.gain_grows(_eps_series(100, (4, 1)))
    assert v.status == "inconclusive" and "sign-flip p = 0.38" in v.detail
    assert "inconclusive at n = 100; this n detects differences of about" in v.detail
    zero = "0" * 100
    v = V.gain_grows([(1, zero, "1" * 5 + "0" * 95), (2, zero, zero), (3, zero, "1" * 6 + "0" * 94)])
    assert v.n == 100 and "+5.0 pp, ε=2: +0.0 pp, ε=3: +6.0 pp (not monotone)" in v.detail
    small = "1" * 5 + "0" * 5
    assert V.gain_grows([(1, small, small), (2, small, small)]).status == "too few images"


def test_gain_grows_rejects_bad_series():
    with pytest.raises(ValueError, match="two points"):
        V.gain_grows([(1, "01", "01")])
    with pytest.raises(ValueError, match="same images"):
        V.gain_grows([(1, "01", "01"), (2, "011", "011")])


# ------------------------------------------------------------------------------------------------
# robust_below (standard training) and sigma_ratio_check (statistics)
def test_robust_below():
    zero = "0" * 64
    assert V.robust_below({0.0: zero, 0.25: zero, 0.5: zero}).status == "reproduced"
    v = V.robust_below({0.0: zero, 0.5: "1" * 40 + "0" * 24})
    assert v.status == "not reproduced" and "0.5 is above 10%" in v.detail
    v = V.robust_below({0.0: zero, 0.5: "1" * 5 + "0" * 59})  # 7.8%: the interval straddles 10%
    assert v.status == "inconclusive" and "inconclusive at n = 64; this n detects differences of about" in v.detail
    assert V.robust_below({0.0: "0" * 10}).status == "too few images"


def test_sigma_ratio_check():
    assert V.sigma_ratio_check(0.995, 0.90).status == "reproduced"
    assert V.sigma_ratio_check(0.95, 0.90).status == "not reproduced"
    assert "class-sorted batches do not lower" in V.sigma_ratio_check(1.0, 0.99).detail
    with pytest.raises(ValueError):
        V.sigma_ratio_check(float("nan"), 0.9)


# ------------------------------------------------------------------------------------------------
# the Verdict object and not_evaluated
def test_verdict_status_is_checked_and_rendered():
    with pytest.raises(ValueError, match="status"):
        V.Verdict("partly", "c", "d")
    v = V.not_evaluated("the paper's Table 1 numbers", "the paper's model weights are not available offline")
    assert v.status == "not evaluated here" and v.holds is None
    assert v.markdown() == ("**Verdict: not evaluated here** — the paper's Table 1 numbers: the paper's model weights "
                            "are not available offline.")


# ------------------------------------------------------------------------------------------------
# the book's wrappers keep their signatures and use the rules
def test_book_verdict_accepts_statuses_verdicts_and_the_legacy_status():
    assert L.verdict("reproduced", "x") == "**Verdict: reproduced** — x."
    assert L.verdict("not yet run here", "random weights.") == "**Verdict: not evaluated here** — random weights."
    v = V.not_evaluated("c", "d")
    assert L.verdict(v) == v.markdown()
    with pytest.raises(ValueError, match="status"):
        L.verdict("maybe", "x")


def test_claim_check_uses_gain_claim():
    r = rows(*table(38, 5, 2, 55))
    holds, text = L.claim_check(r, 0.35)
    assert holds is None and "inconclusive at n = 100; this n detects differences of about" in text
    holds, text = L.claim_check(rows(*table(78, 20, 2, 100)), 0.35)
    assert holds is True and "significant robust gain" in text
    holds, text = L.claim_check(rows(*table(78, 20, 2, 100), clean_new=81.0), 0.35)
    assert holds is False and "clean accuracy drops by 3.0 pp" in text
    assert L.claim_check(rows(*table(78, 20, 2, 100), clean_new=81.0), 0.35, max_clean_drop=5.0)[0] is True
    holds, text = L.claim_check(r, 0.2)
    assert holds is None and "no α=0.2 and α=0 pair" in text


def test_alpha_verdict_reports_the_rule_not_not_yet_run_here():
    s = SimpleNamespace(is_random=False, model_name="msparse/resnet18-gelu-w8-pgdat")
    text = L.alpha_verdict(s, rows(*table(38, 5, 2, 55)), "ResNet-18 GELU (PGD-AT)", 0.35, "APGD rises with alpha")
    assert text.startswith("**Verdict: inconclusive at n = 100** — ")
    assert "not yet run here" not in text and "APGD rises with alpha" in text
    assert "at α=0.35 vs α=0, robust 40.0% → 43.0%" in text and "ResNet-18 GELU (PGD-AT)" in text
    assert L.alpha_verdict(s, rows(*table(78, 20, 2, 100)), "M", 0.35).startswith("**Verdict: reproduced** — ")
    rnd = SimpleNamespace(is_random=True, model_name="random:resnet18-gelu-w16")
    assert L.alpha_verdict(rnd, [], "M", 0.35).startswith("**Verdict: not evaluated here** — ")


# ------------------------------------------------------------------------------------------------
# Table 5: which centre is best; verdicts that depend on n
def _flags_with(k_right: int, n: int) -> str:
    return "1" * k_right + "0" * (n - k_right)


def test_best_of_needs_a_significant_win_over_every_other_configuration():
    from msparse.report.verdicts import best_of

    n = 200
    best, weak = _flags_with(150, n), _flags_with(100, n)     # 50 images only the best gets right: p << 0.05
    v = best_of({"mean": best, "zero": weak, "global": weak}, "mean")
    assert v.status == "reproduced" and "mean vs zero" in v.detail and "mean vs global" in v.detail
    v = best_of({"mean": best, "zero": weak, "global": _flags_with(148, n)}, "mean")
    assert v.status == "inconclusive" and "global" in v.detail and "not a confirmation" in v.detail
    assert "this n detects differences of about" in v.detail
    v = best_of({"mean": weak, "zero": best}, "mean")
    assert v.status == "not reproduced" and "significantly lower than zero" in v.detail
    assert best_of({"mean": "1" * 10, "zero": "0" * 10}, "mean").status == "too few images"
    with pytest.raises(InputError):
        best_of({"zero": best}, "mean")


def test_prefix_verdicts_and_the_fragility_note_say_when_a_verdict_depends_on_n():
    from msparse.report.verdicts import fragility_note, gain_claim, prefix_verdicts

    # the first 100 images: 20 gained, 0 lost (significant); images 101-200: 0 gained, 20 lost (cancels out)
    base = "0" * 20 + "1" * 80 + "1" * 20 + "0" * 80
    new = "1" * 20 + "1" * 80 + "0" * 20 + "0" * 80
    clean = "1" * 200
    vs = prefix_verdicts(gain_claim, base, new, [100, 200], clean_base=clean, clean_new=clean)
    assert vs[100].status == "reproduced" and vs[100].n == 100
    assert vs[200].status != "reproduced" and vs[200].n == 200
    note = fragility_note(vs)
    assert note.startswith("**Fragile:**") and "reproduced at n = 100" in note and f"{vs[200].status} at n = 200" in note
    assert "needs confirming at a larger n" in note and "n = 200 detects about" in note
    same = prefix_verdicts(gain_claim, base[:100], new[:100], [50, 100], clean_base=clean[:100], clean_new=clean[:100])
    assert {v.status for v in same.values()} == {"reproduced"} and fragility_note(same) == ""
    with pytest.raises(InputError):
        prefix_verdicts(gain_claim, base, new, [300])
    with pytest.raises(InputError):
        prefix_verdicts(gain_claim, base, new, [100], clean_base=90.0, clean_new=clean)


def test_no_better_line_says_when_one_image_would_flip_it():
    from msparse.report.verdict_lines import no_better_line
    from msparse.report.verdicts import no_better_than_base, one_image_flips

    base = [True] * 367 + [False] * 633
    far = [True] * 300 + [False] * 700
    assert "fragile" not in no_better_line(base, far, "Measured here.")
    # a pair whose upper bound sits at the +1 pp margin: +k gained, k - 2 lost out of 1000
    for k in range(5, 40):
        new = base[:]
        for i in range(k):
            new[400 + i] = True                 # gained
        for i in range(k - 2):
            new[i] = False                      # lost
        note = one_image_flips(lambda b, n, **_: no_better_than_base(b, n), base, new)
        if note:
            line = no_better_line(base, new, "Measured here.")
            assert line.startswith("**Verdict: ") and f"The verdict is {note}." in line
            break
    else:
        raise AssertionError("no pair at the margin found")
