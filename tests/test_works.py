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


# ------------------------------------------------------------------------------------------------
# the cascade table at n images and the second library's agreement (records of a tiny model; no page is run)
# ------------------------------------------------------------------------------------------------
N_TINY = 24
LABEL = "tiny images"     # no image family: records pool only on exactly these images (their data hash)


def _tiny_model():
    from test_evidence import _tiny   # the same tiny GELU net with MeanSparse sites, calibrated

    return _tiny()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A store holding a tiny model's records on the first 24 test images: at α = 0 AutoAttack's APGD (the page's
    ``apgd`` record), adv-lib APGD-CE as a full run and adv-lib FMN as a cascade stage only; at α = 0.3 a full APGD-CE
    and two cascade stages. Returns (store root, model, x, y, records by name)."""
    import msparse as ms

    root = tmp_path_factory.mktemp("works")
    m = _tiny_model()
    x, y = ms.load_data("cifar10", "test", n=N_TINY)
    y = m(x).argmax(1)                                    # the tiny model right on most images, wrong on four
    y[:4] = (y[:4] + 1) % 10
    kw = dict(store=root, eps=1 / 255, n_iter=2, name="tiny", data=LABEL, progress=False)
    got = {}
    ms.set_alpha(m, 0.0)
    got["apgd"] = ms.evaluate(m, x, y, attack="apgd", **kw)
    clean = got["apgd"].clean_flags
    got["advlib-apgd"] = ms.evaluate(m, x, y, attack="advlib-apgd", **kw)
    skip = clean.copy()
    skip[len(skip) // 2:] = False                         # the first half's clean-correct images not attacked
    got["fmn stage"] = ms.evaluate(m, x, y, attack="advlib-fmn", skip=skip, **kw)
    ms.set_alpha(m, 0.3)
    got["apgd-ce 0.3"] = ms.evaluate(m, x, y, attack="apgd-ce", **kw)
    for i, (attack, s) in enumerate((("bpda:apgd-ce", skip), ("square", clean))):
        s = s.copy()
        s[0] = False if i == 0 else s[0]
        got[f"stage {attack}"] = ms.evaluate(m, x, y, attack=attack, skip=s, n_queries=20,
                                             tags={"cascade": f"stage {i}", "book": "cascade"},
                                             **{k: v for k, v in kw.items()})
    ms.set_alpha(m, 0.0)
    return root, m, x, y, got


def _res(root, got):
    rows = [{"key": got["apgd"].key, "alpha": 0.0}, {"key": got["apgd-ce 0.3"].key, "alpha": 0.3}]
    m = works.ModelResult("tiny", 0.3, N_TINY, {"official gradient (APGD)": rows}, rows, store=str(root))
    return works.Works([m], n_iter=2, eps=8 / 255)


def test_robust_under_reads_one_component_attack_off_the_per_image_outcome():
    rec = {"result": {"components": {"apgd": {"attacks": ["apgd-ce", "apgd-dlr"], "outcome": "ab10-a"}}}}
    assert works.robust_under(rec, ("apgd-ce",), 6) == [False, True, True, False, False, False]
    assert works.robust_under(rec, ("apgd-ce", "apgd-dlr"), 6) == [False, False, True, False, False, False]
    assert works.robust_under(rec, ("square",), 6) is None


def test_agreement_compares_full_runs_image_by_image_and_never_reads_a_stage(tiny):
    from msparse.evaluation.significance import mcnemar
    from msparse.evaluation.store import Store

    root, *_, got = tiny
    res = _res(root, got)
    rows, missing = works.agreement(res)
    # FMN has only a cascade stage here (its skipped images read '0'): not a per-attack number, so not compared
    assert [r["comparison"] for r in rows] == ["adv-lib APGD-CE vs AutoAttack APGD-CE"]
    assert missing == ["tiny: adv-lib FMN"] and "adv-lib FMN" in works.agreement_sentence(res)
    st = Store(root)
    theirs, ours = st.get(got["apgd"].key), st.get(got["advlib-apgd"].key)
    out = theirs["result"]["components"]["apgd"]["outcome"]
    a = [f == "1" for f in ours["result"]["robust_flags"]]
    b = [ch not in "0a" for ch in out]                    # robust to APGD-CE: clean and not broken by it ('a')
    r = rows[0]
    clean = [c == "1" for c in theirs["result"]["clean_flags"]]
    assert r["both robust"] == sum(x and y for x, y in zip(a, b))
    assert r["both broken"] == sum(c and not x and not y for c, x, y in zip(clean, a, b))
    assert (r["only adv-lib broke"], r["only AutoAttack broke"]) == (sum(y and not x for x, y in zip(a, b)),
                                                                     sum(x and not y for x, y in zip(a, b)))
    assert r["McNemar p"] == pytest.approx(mcnemar(b, a).p_value, rel=1e-2) and r["n"] == N_TINY
    assert list(works.agreement_table(res).index) == [("tiny", "adv-lib APGD-CE vs AutoAttack APGD-CE")]


def test_agreement_uses_the_full_run_once_there_is_one(tiny, tmp_path):
    import shutil

    import msparse as ms

    root, m, x, y, got = tiny
    shutil.copytree(root, tmp_path / "s")
    full = ms.evaluate(m, x, y, attack="advlib-fmn", store=tmp_path / "s", eps=1 / 255, n_iter=2, name="tiny",
                       data=LABEL, progress=False)
    rows, missing = works.agreement(_res(tmp_path / "s", got))
    fmn = next(r for r in rows if r["comparison"].startswith("adv-lib FMN"))
    assert not missing and fmn["records"].startswith(full.key[:12])
    assert fmn["robust: adv-lib %"] == pytest.approx(round(100 * full.robust_acc, 1))


def test_cascade_rows_count_only_the_images_a_stage_attacked(tiny):
    from msparse.evaluation import evidence as ev
    from msparse.evaluation.store import Store

    root, *_, got = tiny
    res = _res(root, got)
    sides = works.cascade_sides(res, N_TINY)["tiny"]
    assert [s.alpha for s in sides] == [0.0, 0.3]
    side = sides[1]
    kinds = [r["stage"] for r in side.rows]
    assert kinds == sorted(kinds) and kinds.count(True) == 2             # full runs first, then the stages
    stages = [r for r in side.rows if r["stage"]]
    assert stages[0]["images attacked"] >= stages[1]["images attacked"]
    st = Store(root)
    for r in stages:
        rec = next(st.get(g.key) for g in got.values() if g.key.startswith(r["key"]))
        res_, skip = rec["result"], rec["spec"]["skip"]
        attacked = [c == "1" and s == "0" for c, s in zip(res_["clean_flags"], skip)]
        assert r["images attacked"] == sum(attacked)
        assert r["broken by it"] == sum(a and f == "0" for a, f in zip(attacked, res_["robust_flags"]))
        # read as a per-attack number, a stage would count its skipped images as broken
        assert r["broken by it"] < res_["clean"] - res_["robust"]
    point = ev.point_of(st.get(got["apgd-ce 0.3"].key))
    assert side.evidence.robust == ev.pool(st, point, N_TINY).robust
    t = works.cascade_table(res, N_TINY)
    last = t.loc[("tiny", 0.3)].iloc[-1]
    assert last["stage / attack"] == "pooled worst case" and f"{side.evidence.robust:.1f}% of {N_TINY}" in last["kind"]
    assert last["CPU"] == f"{side.cpu_hours:.2f} CPU-h"
    text = works.cascade_sentence(res, N_TINY)
    assert "not yet among the records" in text
    shares = sorted(round(100 * r["images attacked"] / side.clean) for r in side.rows if r["stage"])
    span = f"{shares[0]}%" if shares[0] == shares[-1] else f"{shares[0]}–{shares[-1]}%"
    assert f"each stage attacked {span} of its {side.clean} clean-correct images" in text


def test_a_model_without_records_on_n_images_on_both_sides_is_named_not_tabled(tiny):
    root, *_, got = tiny
    res = _res(root, got)
    assert works.cascade_table(res, 1000).empty
    assert "No model of this page has records on its first 1000" in works.cascade_sentence(res, 1000)
    assert "Not yet at n = 1000 on both sides: tiny" in works.cascade_sentence(res, 1000)


@pytest.mark.slow
def test_committed_records_serve_the_cascade_and_agreement_tables(no_compute, committed_results):
    res = works.run([("msparse/default", 0.25, 200)], attacks=["official gradient (APGD)"],
                    results_dir=str(committed_results), progress=False)
    t = works.cascade_table(res)
    assert {a for _, a in t.index} == {0.0, 0.25}
    assert (t["stage / attack"] == "pooled worst case").sum() == 2
    a = works.agreement_table(res)
    assert len(a) == 2 and (a["n"] >= 100).all()
    assert "Not yet computed" not in works.agreement_sentence(res)


def test_autoattack_counts_at_n_as_a_full_run_or_as_all_its_attacks_with_its_budget():
    def side(*rows):
        return works.CascadeSide("m", 0.0, 10, [{"stage / attack": a, "stage": st, "aa parts": works._aa_parts(
            {"attack": {"name": a, "n_iter": it, "n_queries": q}})} for a, st, it, q in rows], None)

    full = side(("aa", False, 100, 5000))
    assert full.full_aa and full.aa_missing == []
    short = side(("apgd-ce", True, 20, 5000), ("apgd-t", True, 100, 5000), ("fab-t", True, 100, 5000),
                 ("square", True, 100, 5000), ("bpda:apgd-ce", True, 100, 5000))
    assert short.aa_missing == ["apgd-ce"]          # 20 iterations, or through BPDA, is not AutoAttack's APGD-CE
    done = side(("apgd-ce", True, 100, 5000), ("apgd-t", True, 100, 5000), ("fab-t", True, 100, 5000),
                ("square", True, 100, 5000))       # AutoAttack run as a cascade
    assert not done.full_aa and done.aa_missing == []
    assert works._aa_status({"a": [full, full], "b": [short, done]}) == [
        "a full run on a", "not yet among the records (so far: apgd-t, fab-t, square) on b"]


def test_the_full_cascade_counts_a_stage_only_when_every_attack_of_it_is_among_the_records():
    from msparse.evaluation.cascade import DEFAULT_STAGES

    def side(alpha, *names):
        return works.CascadeSide("m", alpha, 10, [{"stage / attack": a, "attack": a, "stage": True, "aa parts":
                                                   works._aa_parts({"attack": {"name": a, "n_iter": 100,
                                                                               "n_queries": 5000}})}
                                                  for a in names], None)

    every = ("apgd-ce", "bpda:pgd", "bpda:apgd", "surrogate:apgd-ce", "transfer:apgd", "bpda:advlib-apgd",
             "bpda:advlib-fmn", "aa", "gradest")
    assert side(0.3, *every).stages_missing == []
    titles = {s.attack: s.title for s in DEFAULT_STAGES}
    # APGD-CE + T through BPDA lacks BPDA's APGD-DLR; the direct APGD is not the transfer's
    partial = side(0.3, *(a for a in every if a not in ("bpda:apgd", "transfer:apgd")), "bpda:apgd-ce+t", "apgd")
    assert partial.stages_missing == [titles["bpda:apgd"], titles["transfer:apgd"]]
    # on the base BPDA, the surrogate and the transfer are the direct attacks: the direct APGD covers them all
    base = side(0.0, "apgd", "pgd", "advlib-apgd", "advlib-fmn", "apgd-t", "fab-t", "square", "gradest")
    assert base.stages_missing == []
    assert side(0.0, "apgd").stages_missing == [titles[a] for a in ("bpda:pgd", "bpda:advlib-apgd",
                                                                     "bpda:advlib-fmn", "aa", "gradest")]
    assert works._full_status({"a": [base, side(0.3, *every)], "b": [base, partial]}) == [
        "every stage on both sides on a", f"not yet {titles['bpda:apgd']}, {titles['transfer:apgd']} on b"]
