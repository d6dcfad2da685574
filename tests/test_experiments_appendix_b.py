"""Pages of the appendix (Tables 6–8), the standard-training control and the statistics page, run with their
default parameters on the committed records: nothing is recomputed, every number they return is the number of the
record it cites, and their verdicts are worded by the tested rules (msparse.report.verdicts)."""
from pathlib import Path

import pytest


COMMITTED = Path(__file__).resolve().parent.parent / "results"


def test_table6(no_compute, rows_match_records):
    from msparse.experiments import table6

    res = table6.run(results_dir=str(COMMITTED), progress=False)
    assert list(res.by_alpha) == [0.0, 0.2, 0.35]
    for rows in res.by_alpha.values():
        assert [r["eps_255"] for r in rows] == [1, 2, 4, 8, 12, 16]
        assert all(r["n"] == 500 for r in rows)
    assert len(res.rows) == 18 + 3 and all(r["cached"] for r in res.rows)
    rows_match_records(res.rows)
    # BPDA beside the direct attack at ε = 8/255 (α = 0 is the direct attack's own record)
    assert [r["alpha"] for r in res.bpda] == [0.0, 0.2, 0.35]
    assert res.bpda[0]["key"] == next(r for r in res.by_alpha[0.0] if r["eps_255"] == 8)["key"]
    labels = [l for l in table6.figure(res).axes[0].get_legend_handles_labels()[1] if l.startswith("BPDA")]
    assert labels == ["BPDA apgd, α=0.2 (ours)", "BPDA apgd, α=0.35 (ours)"]
    assert res.verdict.startswith("**Verdict: ") and res.verdict.startswith(res.check.markdown())
    for a in res.by_alpha:
        t = table6.table(res, a)
        assert list(t.index) == [1, 2, 4, 8, 12, 16]
        assert f"α={a:g} (paper)" in t.columns
        assert "n = 500" in table6.caption(res, a)
    assert len(table6.figure(res).axes) == 1


def test_table7(no_compute, rows_match_records):
    from msparse.experiments import table7

    res = table7.run(results_dir=str(COMMITTED), progress=False)
    assert list(res.by_kind) == [("single", 0.35), ("cumulative", 0.35)]
    for rows in res.by_kind.values():
        assert [r["site"] for r in rows] == list(range(17))
        assert all(r["alpha"] == 0.35 and "d_robust" in r for r in rows)
    assert res.base["alpha"] == 0.0
    assert list(res.bpda) == list(res.by_kind)             # BPDA beside the direct attack, every site
    for rows in res.bpda.values():
        assert [r["site"] for r in rows] == list(range(17))
        assert all(r["attack"] == "bpda:apgd" and r["alpha"] == 0.35 and "d_robust" in r for r in rows)
    # the single and cumulative placements share their first site's record (site 0 alone = sites 0..0)
    assert len(res.rows) == 4 * 17 + 1 and all(r["cached"] for r in res.rows)
    rows_match_records(res.rows)
    for kind in table7.KINDS:
        t = table7.bpda_table(res, kind, 0.35)
        assert t.shape[0] == 17 and "BPDA apgd" in table7.bpda_caption(res, kind, 0.35)
    assert len(res.verdicts) == 2 and all(v.startswith("**Verdict: ") for v in res.verdicts)
    for kind in table7.KINDS:
        t = table7.table(res, kind, 0.35)
        assert t.shape[0] == 17 and list(t.index) == list(range(17)) and "APGD (paper)" in t.columns
        assert "ε = 8/255" in table7.caption(res, kind, 0.35)
    assert table7.base_table(res).shape[0] == 1
    assert len(table7.figure(res).axes) == 2


def test_table8(no_compute, rows_match_records):
    from msparse.experiments import table8

    res = table8.run(results_dir=str(COMMITTED), progress=False)
    assert res.groups == {"main_path": list(range(1, 16, 2)), "after_add": list(range(2, 17, 2))}
    for rows in res.by_group.values():
        assert [r["alpha"] for r in rows] == [0.0, 0.1, 0.2, 0.3, 0.35, 0.4]
    assert len(res.rows) == 12 + 2 * 3 and all(r["cached"] for r in res.rows)
    rows_match_records(res.rows)
    for g, rows in res.bpda.items():   # BPDA beside the direct attack, MeanSparse at the group's sites only
        assert [r["alpha"] for r in rows] == [0.0, 0.2, 0.35] and rows[0]["key"] == res.by_group[g][0]["key"]
    assert list(res.verdicts) == ["main_path", "after_add"]
    assert all(v.startswith("**Verdict: ") for v in res.verdicts.values())
    for g in res.by_group:
        t = table8.table(res, g)
        assert list(t.index) == [0.0, 0.1, 0.2, 0.3, 0.35, 0.4]
        assert {"clean (paper)", "apgd (paper)"} <= set(t.columns)
        assert "ε = 8/255" in table8.caption(res, g)
    assert len(table8.figure(res).axes) == 2


@pytest.mark.slow
def test_standard_training(no_compute, rows_match_records):
    from msparse.experiments import standard

    res = standard.run(results_dir=str(COMMITTED), progress=False)
    assert [r["alpha"] for r in res.rows] == [0.0, 0.25, 0.5]
    assert all(r["cached"] and r["n"] == 64 for r in res.rows)
    rows_match_records(res.rows)
    assert res.verdict.startswith("**Verdict: ") and res.verdict.startswith(res.check.markdown())
    assert list(standard.table(res).index) == [0.0, 0.25, 0.5]
    assert "ε = 8/255" in standard.caption(res) and "n = 64" in standard.caption(res)


@pytest.mark.slow
def test_statistics_page_restores_the_exact_statistics(no_compute, rows_match_records):
    import torch

    from msparse.experiments import setup as es, stats_page

    s = es.setup("msparse/default", n_examples=200, n_train=3000, results_dir=str(COMMITTED))
    before = es.stats_snapshot(s.model)
    res = stats_page.run(results_dir=str(COMMITTED), progress=False)
    assert res.setup is s
    after = es.stats_snapshot(s.model)
    assert before.keys() == after.keys()
    for k, (m, v, n) in before.items():
        assert torch.equal(m, after[k][0]) and torch.equal(v, after[k][1]) and n == after[k][2], k

    assert list(res.acc) == list(stats_page.STATISTICS)
    assert [r["n_train"] for r in res.size_rows] == [100, 300, 1000, 3000]
    assert list(res.err) == [100, 300, 1000, 3000]
    assert res.err[3000] == pytest.approx(0.0, abs=1e-6)   # the full set is the reference itself
    assert len(res.rows) == 7 and all(r["cached"] for r in res.rows)
    rows_match_records(res.rows)
    assert all(r["attack"] == "none" and r["alpha"] == 0.25 for r in res.rows)
    assert res.verdict.startswith("**Verdict: ") and res.verdict.startswith(res.check.markdown())
    assert stats_page.ratio_table(res).shape == (2, 2)
    assert stats_page.accuracy_table(res).shape == (3, 3)
    assert stats_page.size_table(res).shape == (4, 3)
