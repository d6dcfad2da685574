"""Indicators of attack failure as records (msparse/evaluation/indicator_records.py): stored once and read back
without computing, checked on every read (a tampered value or firing flag is caught), skipped by the evidence layer,
listed and verified by ``msparse results``, and served to the adaptive page from the committed records."""
import json
import math
from pathlib import Path

import pytest
import torch

from msparse.cli import main
from msparse.core.placement import backward_mode, set_alpha
from msparse.errors import CorruptRecord, InputError
from msparse.evaluation import evidence as ev
from msparse.evaluation import indicator_records as ir
from msparse.evaluation.evaluate import evaluate
from msparse.evaluation.integrity import check_record, seal
from msparse.evaluation.queries import load_records, to_table
from msparse.evaluation.store import Store

from test_attacks import make_data, sparse_model

COMMITTED = Path(__file__).resolve().parent.parent / "results"
FAST = dict(steps=3, restarts=2, noise_draws=2)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A store holding one indicators record of the tiny sparse model (α = 0.3, exact backward) on 8 images."""
    root = tmp_path_factory.mktemp("indicators")
    m = sparse_model(alpha=0.3)
    x, y = make_data(8, 11)
    rec = ir.indicator_record(m, x, y, store=root, name="tiny", data="tiny 0..7", **FAST)
    return root, m, x, y, rec


def _refuse(*a, **k):
    raise AssertionError("an indicators record was recomputed")


def _write_sealed(root: Path, rec: dict) -> None:
    """Write ``rec`` re-sealed (checksum recomputed) past the store's checks: what an edit + re-seal does."""
    doc = seal({k: v for k, v in rec.items() if k != "checksum"})
    (root / "records" / f"{rec['key']}.json").write_text(json.dumps(doc))


def test_the_record_is_stored_checked_and_reused_without_computing(made, monkeypatch):
    root, m, x, y, rec = made
    assert rec["spec"]["kind"] == "indicators" and rec["spec"]["sites"]
    assert rec["spec"]["test"]["surrogate"] == "base"            # an active site: transfer from α = 0
    res = rec["result"]
    assert res["n"] == 8 and res["n_attacked"] == res["clean_flags"].count("1")
    assert set(res["indicators"]) >= {"unavailable_gradients", "transfer_failure", "non_converging_restarts"}
    assert rec["provenance"]["wall_s"] > 0 and rec["provenance"]["versions"]["secml-torch"]
    stored = Store(root).get(rec["key"])
    check_record(stored)
    assert stored["result"] == json.loads(json.dumps(res))
    monkeypatch.setattr(ir, "_compute", _refuse)
    again = ir.indicator_record(m, x, y, store=root, **FAST)
    assert again["key"] == rec["key"] and again["provenance"] == stored["provenance"] and "checksum" in again


def test_everything_that_changes_the_numbers_is_in_the_key(made, monkeypatch):
    root, m, x, y, rec = made
    monkeypatch.setattr(ir, "_compute", lambda *a: {})   # only keys are compared here; nothing is written
    keys = {rec["key"]}
    for kw in (dict(steps=4), dict(restarts=3), dict(noise_draws=3), dict(seed=1), dict(eps=4 / 255),
               dict(transfer=False), dict(unconstrained=False), dict(step_size=0.01)):
        keys.add(ir.indicator_record(m, x, y, store=False, **{**FAST, **kw})["key"])
    keys.add(ir.indicator_record(m, x[:7], y[:7], store=False, **FAST)["key"])
    with backward_mode(m, "identity"):                      # BPDA: the sites' backward is in the key
        keys.add(ir.indicator_record(m, x, y, store=False, **FAST)["key"])
    assert len(keys) == 11
    set_alpha(m, 0.0)
    try:                                                    # no active site: direct and BPDA are one record
        direct = ir.indicator_record(m, x, y, store=False, **FAST)["key"]
        with backward_mode(m, "identity"):
            assert ir.indicator_record(m, x, y, store=False, **FAST)["key"] == direct
    finally:
        set_alpha(m, 0.3)


def _firing(rec):
    return next(n for n, i in rec["result"]["indicators"].items() if i["value"] not in (None, 0.0)
                and n != "unstable_predictions")


@pytest.mark.parametrize("edit, field", [
    (lambda r, n: r["indicators"][n].update(fires=not r["indicators"][n]["fires"]), "fires"),
    (lambda r, n: r["indicators"][n].update(value=0.0), "fires"),                # the flag no longer follows
    (lambda r, n: r["indicators"][n].update(value=0.5 / r["n_attacked"]), "not a share"),
    (lambda r, n: r["indicators"][n].update(threshold=0.5), "threshold"),
    (lambda r, n: r["indicators"][n].update(n=r["n_attacked"] + 1), ".n is"),
    (lambda r, n: r.update(n_attacked=r["n_attacked"] - 1), "n_attacked"),
    (lambda r, n: r.update(pgd_acc=1.5), "pgd_acc"),
    (lambda r, n: r.update(clean_acc=0.01), "clean_acc"),
])
def test_a_tampered_and_resealed_record_is_caught(made, tmp_path, edit, field):
    _, _, _, _, rec = made
    st = Store(tmp_path)
    st.put(rec)
    assert st.get(rec["key"]) is not None
    bad = json.loads(json.dumps(rec))
    edit(bad["result"], _firing(rec))
    with pytest.raises(CorruptRecord, match=field):
        check_record(bad)
    _write_sealed(tmp_path, bad)
    with pytest.warns(RuntimeWarning, match=field):
        assert st.get(rec["key"]) is None


def test_evidence_and_listing_skip_or_label_the_record(made, tmp_path):
    root, m, x, y, rec = made
    st = Store(tmp_path)
    r = evaluate(m, x, y, "apgd-ce", n_iter=2, store=st, name="tiny", data="tiny 0..7", progress=False)
    point = ev.point_of(st.get(r.key))
    before = ev.pool(st, point, len(x)).robust
    st.put(rec)
    assert ev.pool(st, point, len(x)).robust == before
    assert all(rr["key"] != rec["key"] for recs in ev.load_index(st).values() for rr in recs)
    with pytest.raises(InputError, match="indicators record, not an attack"):
        ev.point_of(rec)
    rows = to_table(load_records(st)).set_index("key")
    assert rows.loc[rec["key"], "attack"] == "indicators:pgd-ce"
    assert math.isclose(rows.loc[rec["key"], "clean"], rec["result"]["clean_acc"])
    assert main(["results", "list", "--store", str(tmp_path)]) == 0


def test_verify_recomputes_the_record_and_reports_a_changed_value(made, capsys):
    from msparse.evaluation.verify import Check, _verify_indicators

    _, m, x, y, rec = made
    chk = _verify_indicators(Check(rec["key"], "tiny", "pgd-ce", 8, "cannot rebuild"), rec, m, x, y, 0.0)
    assert chk.status == "agree", chk.detail
    name = _firing(rec)
    bad = json.loads(json.dumps(rec))
    bad["result"]["indicators"][name]["value"] = 1.0 if rec["result"]["indicators"][name]["value"] < 1 else 0.5
    bad["result"]["indicators"][name]["fires"] = True
    chk = _verify_indicators(Check(rec["key"], "tiny", "pgd-ce", 8, "cannot rebuild"), bad, m, x, y, 0.0)
    assert chk.status == "disagree" and f"indicators[{name!r}].value" in chk.detail


def test_rerun_refuses_an_indicators_record(made):
    from msparse.evaluation.verify import rerun

    with pytest.raises(InputError, match="is a record of kind 'indicators'; rerun takes attack records"):
        rerun(made[4], store=False)


# --- the adaptive page, from the committed records ------------------------------------------------

def test_the_page_serves_the_indicators_from_committed_records(no_compute, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from msparse.experiments import adaptive

    monkeypatch.setattr(ir, "_compute", _refuse)
    res = adaptive.run(results_dir=str(COMMITTED), progress=False)
    assert sorted(res.indicators) == [(0.0, "bpda"), (0.0, "direct"), (0.25, "bpda"), (0.25, "direct")]
    assert res.indicators[(0.0, "direct")]["key"] == res.indicators[(0.0, "bpda")]["key"]
    assert res.indicators[(0.25, "direct")]["key"] != res.indicators[(0.25, "bpda")]["key"]
    st = Store(COMMITTED)
    for (a, mode), rec in res.indicators.items():
        assert "checksum" in rec and st.get(rec["key"]) == rec
        assert rec["result"]["n"] == 32 and rec["spec"]["attack"]["n_iter"] == 20
        assert {s["backward"] for s in rec["spec"]["sites"].values()} <= {"exact" if mode == "direct" else "identity"}
    assert all(r["cached"] for r in res.indicator_rows)
    t = adaptive.indicator_table(res)
    assert list(t.columns) == ["rule", "α=0 direct", "α=0 bpda", "α=0.25 direct", "α=0.25 bpda",
                               "reading when it fires"]
    rec = res.indicators[(0.25, "bpda")]
    for name, ind in rec["result"]["indicators"].items():   # every cell is its record's value and firing flag
        cell = t.loc[name.replace("_", " "), "α=0.25 bpda"]
        assert cell.startswith(f"{ind['value']:.3g}") and cell.endswith("fires") == ind["fires"]
    assert t.loc["transfer failure", "α=0 direct"] == ""       # no surrogate at α = 0
    text = adaptive.indicators_reading(res)
    for (a, mode), rec in res.indicators.items():
        for name, ind in rec["result"]["indicators"].items():
            if ind["fires"]:
                assert f"*{name.replace('_', ' ')}*" in text
    assert "one run" in text and "At α = 0.25" in text
    from msparse.report.tables import provenance_table   # the page's provenance lists each indicator record once

    keys = list(provenance_table(res.indicator_rows, res.setup.store).frame["record"])
    assert sorted(keys) == sorted({rec["key"][:12] for rec in res.indicators.values()})


def test_the_sentence_says_when_nothing_was_computed():
    from msparse.experiments import adaptive

    res = adaptive.Adaptive(None, {}, [0.0], [], indicators={})
    assert adaptive.indicator_table(res) is None
    assert "not computed" in adaptive.indicators_reading(res)


@pytest.mark.slow
def test_the_committed_indicator_records_reproduce_here(capsys):
    keys = [k for k in Store(COMMITTED).keys()
            if (Store(COMMITTED).get(k) or {}).get("spec", {}).get("kind") == "indicators"]
    assert len(keys) >= 3
    assert main(["results", "verify", "--store", str(COMMITTED), *keys]) == 0
    assert f"{len(keys)} agree, 0 disagree" in capsys.readouterr().out
