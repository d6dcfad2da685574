"""The attack-strength page's BPDA convergence over loss and budget (msparse.experiments.strength.bpda_*): the
step rule (each budget against the largest weaker one, exact McNemar and the interval's half-width), the strongest
run, the table and the sentence on synthetic rows; and that the committed records serve the page's grid without
computing anything."""
from pathlib import Path

import pytest

from msparse.errors import InputError
from msparse.experiments import strength
from msparse.experiments.sweeps import _robust_from

COMMITTED = Path(__file__).resolve().parent.parent / "results"
N = 100


def _row(alpha, k_robust, broken_first=0):
    """A display row on N images: the first ``broken_first`` images broken, then ``k_robust`` robust, the rest
    broken (so a row with the same ``broken_first`` and fewer robust images breaks a superset)."""
    flags = "0" * broken_first + "1" * k_robust + "0" * (N - broken_first - k_robust)
    return {"alpha": alpha, "n": N, "robust_flags": flags, **_robust_from([c == "1" for c in flags])}


def _grid(last_restarts_drop: int, last_iter_drop: int = 0) -> strength.BpdaGrid:
    """The book's APGD-CE (42 / 46 robust), PGD-CE and PGD-margin at the default budgets; the margin loss is the
    strongest, and its last doublings lower robust accuracy at α = 0.25 by the given numbers of images."""
    runs = {("apgd-ce", 20, 1): [_row(0.0, 42), _row(0.25, 46)]}
    for it, r in strength.BPDA_BUDGETS:
        runs[("pgd[loss=ce]", it, r)] = [_row(0.0, 43), _row(0.25, 45)]
    margin = {(20, 1): (41, 40), (100, 1): (40, 39), (100, 2): (39, 38),
              (200, 2): (39, 38 - last_iter_drop), (100, 4): (38, 38 - last_restarts_drop)}
    for (it, r), (k0, k1) in margin.items():
        runs[("pgd", it, r)] = [_row(0.0, k0), _row(0.25, k1)]
    return strength.BpdaGrid("msparse/x", 0.25, ("apgd-ce", 20, 1), runs)


def test_each_budget_is_set_against_the_largest_weaker_budget_of_its_attack():
    steps = strength.bpda_steps(_grid(0))
    margin = {(st["budget"], st["alpha"]): st for st in steps if st["attack"] == "pgd"}
    assert {b: margin[(b, 0.25)]["weaker"] for b in [(100, 1), (100, 2), (200, 2), (100, 4)]} == {
        (100, 1): (20, 1), (100, 2): (100, 1), (200, 2): (100, 2), (100, 4): (100, 2)}
    assert (20, 1) not in {b for b, _ in margin}                         # the weakest has nothing to be set against
    assert [b for (b, a), st in margin.items() if st["final"] and a == 0.25] == [(200, 2), (100, 4)]
    assert not any(st["attack"] == "apgd-ce" for st in steps)           # the book's attack has one budget only
    st = margin[((100, 4), 0.0)]                                         # 39 -> 38 robust, nested
    assert st["change"] == pytest.approx(-1.0) and (st["broken"], st["kept"]) == (1, 0) and st["p"] == 1.0
    assert not st["lowers"]


def test_a_drop_within_the_half_width_that_mcnemar_finds_significant_still_lowers():
    # 8 images broken only by 4 restarts: 8 pp is within the half-width (~9.5 pp) but McNemar p = 2/2**8 < 0.05
    st = next(s for s in strength.bpda_steps(_grid(8)) if s["attack"] == "pgd" and s["budget"] == (100, 4)
              and s["alpha"] == 0.25)
    assert -st["change"] < st["half_width"] and st["p"] == pytest.approx(2 / 2 ** 8) and st["lowers"]
    # 4 images: neither beyond the half-width nor significant (p = 0.125)
    st = next(s for s in strength.bpda_steps(_grid(4)) if s["attack"] == "pgd" and s["budget"] == (100, 4)
              and s["alpha"] == 0.25)
    assert st["p"] == pytest.approx(0.125) and not st["lowers"]


def test_the_strongest_run_is_the_lowest_robust_accuracy_cheapest_on_ties():
    g = _grid(0)
    # at α = 0.25 margin (100,2), (200,2) and (100,4) all leave 38: the cheapest wins
    assert strength.bpda_strongest(g, 1) == ("pgd", 100, 2)
    assert strength.bpda_strongest(g, 0) == ("pgd", 100, 4)
    assert strength.bpda_strongest(_grid(3), 1) == ("pgd", 100, 4)


def test_the_sentence_says_converged_or_not_from_the_measured_steps():
    ok = strength.bpda_sentence(_grid(0))
    assert "**bpda:pgd (margin loss) at 100 × 2**" in ok and "38/100 images robust" in ok
    assert "46/100 under the book's bpda:apgd-ce (20 iterations)" in ok
    assert "**converged**" in ok and "not converged" not in ok
    bad = strength.bpda_sentence(_grid(8))
    assert "**bpda:pgd (margin loss) at 100 × 4**" in bad and "30/100 images robust" in bad
    assert "**not converged**" in bad and "(100 × 4)" in bad and "8 images broken only by the stronger" in bad
    assert bad != ok
    # more iterations that lower it beyond the half-width also count
    assert "**not converged**" in strength.bpda_sentence(_grid(0, last_iter_drop=12))


def test_the_sentence_compares_the_defence_and_its_base_under_the_same_attack():
    text = strength.bpda_sentence(_grid(0))
    # the strongest at α = 0.25 is margin 100 × 2: 39 robust at α = 0, 38 at α = 0.25 -> -1 pp
    assert "changes robust accuracy by -1.0 pp" in text
    # pooled per image: 38 at both α (every row breaks a superset of the weaker ones here)
    assert "with every run pooled image by image (38/100 robust at α = 0, 38/100 at α = 0.25), by ±0.0 pp" in text


def test_the_table_has_every_run_the_steps_and_the_pooled_worst_case():
    t = strength.bpda_table(_grid(8))
    assert len(t) == 1 + 2 * len(strength.BPDA_BUDGETS) + 1
    ref = t.loc[("bpda:apgd-ce — the book's", "20 × 1")]
    assert ref["robust α=0 % (images)"] == "42.0 (42/100)" and ref["robust α=0.25 % (images)"] == "46.0 (46/100)"
    assert ref["vs"] == "—"
    r = t.loc[("bpda:pgd (margin loss)", "100 × 4")]
    assert r["vs"] == "100 × 2" and r["Δ α=0.25 (pp)"] == "-8.0" and r["still lowers"] == "α = 0.25"
    assert t.loc[("bpda:pgd (margin loss)", "200 × 2")]["still lowers"] == "no"
    assert t.loc[("bpda:pgd[loss=ce]", "100 × 1")]["robust α=0.25 % (images)"] == "45.0 (45/100)"
    assert t.loc[("every run above, per image", "—")]["robust α=0.25 % (images)"] == "30.0 (30/100)"


@pytest.mark.parametrize("budgets, match", [([[20, 1], [20, 1]], "listed twice"), ([[20, 0]], "integers >= 1"),
                                            ([[20]], "two integers"), ([], "empty")])
def test_bad_budgets_are_refused_before_anything_runs(budgets, match):
    with pytest.raises(InputError, match=match):
        strength.bpda_convergence(None, 0.25, budgets=budgets)


def test_the_grid_runs_each_canonical_attack_at_each_budget_at_alpha_zero_and_alpha(monkeypatch):
    calls = []

    def fake(s, alphas, *, attack, n_iter, n_restarts=1, **kw):
        calls.append((attack, n_iter, n_restarts, tuple(alphas), kw["label"]))
        return [_row(a, 40) for a in alphas]

    monkeypatch.setattr(strength, "evaluate_alphas", fake)
    s = type("S", (), {"model_name": "msparse/x"})()
    g = strength.bpda_convergence(s, 0.25, attacks=["pgd[loss=ce]", "pgd[loss=margin]"], budgets=[[20, 1], [100, 2]])
    assert calls == [("bpda:apgd-ce", 20, 1, (0.0, 0.25), "strength"),
                     ("bpda:pgd[loss=ce]", 20, 1, (0.0, 0.25), "strength"),
                     ("bpda:pgd[loss=ce]", 100, 2, (0.0, 0.25), "strength"),
                     ("bpda:pgd", 20, 1, (0.0, 0.25), "strength"), ("bpda:pgd", 100, 2, (0.0, 0.25), "strength")]
    assert list(g.runs) == [("apgd-ce", 20, 1), ("pgd[loss=ce]", 20, 1), ("pgd[loss=ce]", 100, 2), ("pgd", 20, 1),
                            ("pgd", 100, 2)]
    assert g.reference == ("apgd-ce", 20, 1) and len(g.rows) == 10


def test_the_grid_needs_an_alpha_above_zero():
    with pytest.raises(InputError, match="α > 0"):
        strength.bpda_convergence(None, 0.0)


@pytest.mark.slow
def test_the_committed_records_serve_the_pages_grid(no_compute, rows_match_records):
    from msparse.experiments import pages
    from msparse.experiments.setup import setup

    p = pages.page("attack_strength").params()
    model, alpha, attack, n_iter, n, _ = next(c for c in p.checks if c[0] in p.bpda_models)
    s = setup(model, n_examples=n, n_train=p.n_train, data_source=p.data_source, results_dir=str(COMMITTED))
    attacks = [f"pgd[loss={loss}]" for loss in p.bpda_losses]          # as the page's runner and notebook build them
    g = strength.bpda_convergence(s, alpha, reference=attack, reference_iter=n_iter, attacks=attacks,
                                  budgets=p.bpda_budgets, eps=p.eps, progress=False)
    assert len(g.runs) == 1 + len(attacks) * len(p.bpda_budgets)
    assert all(r["cached"] for r in g.rows) and all(r["n"] == n for r in g.rows)
    rows_match_records(g.rows)
    assert {r["attack"] for r in g.rows if r["alpha"] > 0} == {"bpda:apgd-ce", "bpda:pgd[loss=ce]", "bpda:pgd"}
    t = strength.bpda_table(g)
    assert len(t) == len(g.runs) + 1
    text = strength.bpda_sentence(g)
    key = strength.bpda_strongest(g, 1)
    k = g.runs[key][1]["robust_flags"].count("1")
    assert f"{k}/{n} images robust" in text and ("**converged**" in text or "**not converged**" in text)
