"""The 'Does MeanSparse work?' chapter's logic on synthetic rows: the held-out choice of α, the convergence rule,
the chapter table and its worst case (no attack is run here)."""
import pytest

from msparse.errors import InputError, UnknownNameError
from msparse.experiments import strength, works
from msparse.experiments.sweeps import worst_case


def _row(alpha, flags, **kw):
    n, k = len(flags), flags.count("1")
    return {"alpha": alpha, "n": n, "robust_flags": flags, "robust": 100 * k / n, "robust_lo": 100 * k / n - 5,
            "robust_hi": 100 * k / n + 5, "clean": 80.0, "attack": kw.pop("attack", "apgd"), **kw}


def test_held_out_chooses_on_one_half_and_reports_on_the_other():
    # α = 0.2 is best on the first half only; α = 0.1 helps a little on both halves
    base = "0" * 10 + "0" * 10
    a1 = "1" + "0" * 9 + "1" + "0" * 9
    a2 = "1111" + "0" * 6 + "0" * 10
    h = strength.held_out([_row(0.0, base), _row(0.1, a1), _row(0.2, a2)])
    assert h.test_alpha == 0.2 and h.test_gain == pytest.approx(20.0)
    first, second = h.folds
    assert first["alpha"] == 0.2 and first["gain"] == pytest.approx(0.0)     # chosen on 0..9, reported on 10..19
    assert second["alpha"] == 0.1 and second["gain"] == pytest.approx(10.0)  # chosen on 10..19, reported on 0..9
    assert h.held_out_gain == pytest.approx(5.0) and h.inflation == pytest.approx(15.0)
    table = strength.held_out_table(h)
    assert len(table) == 5


def test_held_out_needs_alpha_zero():
    with pytest.raises(InputError, match="α = 0"):
        strength.held_out([_row(0.1, "0101"), _row(0.2, "0111")])


def _strength(changes):
    ref = [_row(0.0, "1" * 40 + "0" * 60), _row(0.25, "1" * 45 + "0" * 55)]
    conv = {"20 iterations, 1 restart": ref}
    for label, (d0, d1) in changes.items():
        conv[label] = [_row(0.0, "1" * (40 + d0) + "0" * (60 - d0)), _row(0.25, "1" * (45 + d1) + "0" * (55 - d1))]
    return strength.Strength(setup=None, alpha=0.25, attack="apgd-ce", n_iter=20, convergence=conv, seeds={},
                             binarization={})


def test_convergence_rule_uses_the_interval_half_width():
    ok = _strength({"40 iterations, 1 restart": (-2, -3)})       # half-width here is 5 pp
    assert strength.convergence_sentence(ok).startswith("**Converged**")
    assert list(strength.convergence_table(ok)["converged"]) == ["—", "—", "yes", "yes"]
    bad = _strength({"20 iterations, 5 restarts": (0, -8)})
    text = strength.convergence_sentence(bad)
    assert text.startswith("**Not converged**") and "8.0 pp" in text and "α = 0.25" in text


def test_chapter_table_has_every_column_and_the_per_image_worst_case():
    direct = [_row(0.0, "1100", p_robust=None), _row(0.35, "1110", p_robust=0.5)]
    bpda = [_row(0.0, "1100", attack="bpda:apgd"), _row(0.35, "1000", attack="bpda:apgd", p_robust=0.9)]
    worst = worst_case(direct, bpda)
    assert [w["robust_flags"] for w in worst] == ["1100", "1000"]
    m = works.ModelResult("msparse/x", 0.35, 4, {"official gradient (APGD)": direct, "BPDA": bpda}, worst)
    t = works.table(works.Works([m], n_iter=50, eps=8 / 255))
    assert list(t.columns)[-2:] == ["worst case", "verdict"]
    assert t.loc["x", "surrogate"] == "not run (CPU budget)"
    assert t.loc["x", "worst case"].startswith("25.0")


def test_unknown_attack_column_is_refused_before_any_work():
    with pytest.raises(UnknownNameError, match="unknown attack column"):
        works.run([("msparse/default", 0.25, 10)], attacks=["Sqaure"])


def test_attack_columns_are_checked_against_the_registry_before_any_work(monkeypatch):
    works.check_attacks()                                    # the chapter's own columns are all known
    assert works.PAGE.Params().attacks == list(works.ATTACKS)
    assert works.PAGE.quick["attacks"] == list(works.QUICK_ATTACKS)
    for bad, msg in ((("nosuch", {}), "unknown attack 'nosuch'"), (("gradest[bogus=1]", {}), "no parameter 'bogus'"),
                     (("apgd", {"n_iters": 5}), "not budget fields")):
        with pytest.raises(InputError, match=msg):
            works.check_attacks({"col": bad})
        monkeypatch.setitem(works.ATTACKS, "col", bad)
        with pytest.raises(InputError, match="attack column 'col'"):
            works.run([("msparse/default", 0.25, 10)], attacks=["col"])


def test_a_control_is_shown_but_not_judged_nor_in_holms_family(monkeypatch):
    rows = {"control": [_row(0.0, "0000"), _row(0.25, "0000")],
            "robust": [_row(0.0, "1" * 20 + "0" * 20), _row(0.35, "1" * 10 + "0" * 30)]}

    def fake(name, alpha, columns, **kw):
        r = rows["control" if name in works.CONTROLS else "robust"]
        by = {c: r for c in columns}
        return works.ModelResult(name, alpha, len(r[0]["robust_flags"]), by, worst_case(*by.values())), []

    monkeypatch.setattr(works, "_model_result", fake)
    res = works.run([("msparse/x", 0.35, 40), ("pyautoattack/resnet18-standard", 0.25, 4)],
                    attacks=["official gradient (APGD)", "BPDA"], progress=False)
    robust, control = res.models
    assert robust.verdict is not None and control.verdict is None
    assert "Holm's correction over the 1 adversarially trained" in res.note and "not judged" in res.note
    assert any(line.startswith("**Control (no claim)** — pyautoattack/resnet18-standard") for line in res.verdicts)
    assert works.table(res).loc["pyautoattack/resnet18-standard", "verdict"] == "control (no claim)"
    assert list(works.verdict_table(res).index) == ["msparse/x"]
    assert "control (no claim)" in works.findings(res)[1]
