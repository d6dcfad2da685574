"""The figure pages' experiment functions (Fig. 1–2, Fig. 3, the α explorer, the adaptive evaluation), run with
their default parameters on the committed records: nothing is recomputed, every number they return is the number
of the record it cites, and their verdicts are worded by the tested rules (msparse.report.verdicts)."""
from pathlib import Path

import pytest


COMMITTED = Path(__file__).resolve().parent.parent / "results"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def test_fig1(no_compute):
    import matplotlib

    matplotlib.use("Agg")
    from msparse.experiments import fig1

    res = fig1.run(results_dir=str(COMMITTED), progress=False)
    assert res.rows == []                      # computed directly from weights and images, no record
    assert "carries no verdict" in res.note and "**Verdict: " not in res.note
    assert res.sigma > 0 and res.channel >= 0
    assert tuple(res.after.shape) == tuple(res.before.shape) == tuple(res.train_values.shape[1:])
    inside = (res.before - res.mu).abs() < res.alpha * res.sigma
    assert bool((res.after[inside] == res.mu).all()) and bool((res.after[~inside] == res.before[~inside]).all())
    t = fig1.table(res)
    assert t.shape == (1, 11) and t["channel"].iloc[0] == res.channel
    assert len(fig1.figure(res).axes) >= 6
    assert len(fig1.figure2().axes) == 3


def test_headline(no_compute, rows_match_records):
    from msparse.experiments import headline

    res = headline.run(results_dir=str(COMMITTED), progress=False)
    assert [r["alpha"] for r in res.aa] == [r["alpha"] for r in res.adaptive] == [0.0, 0.25]
    assert [r["attack"] for r in res.aa] == ["apgd-ce+t"] * 2
    assert res.adaptive[1]["attack"].startswith("bpda")
    assert res.adaptive[0]["key"] == res.aa[0]["key"]      # BPDA at α = 0 is the direct attack's record
    assert res.rows == res.aa + res.adaptive
    assert all(r["cached"] for r in res.rows)
    rows_match_records(res.rows)
    assert len(res.verdicts) == 2 and all(v.startswith("**Verdict: ") for v in res.verdicts)
    assert "apgd-ce+t robust accuracy" in res.verdicts[0] and "under BPDA" in res.verdicts[1]
    assert headline.table(res).shape == (2, 3)             # clean, robust, Δ vs α=0
    assert list(headline.table(res).index) == [0.0, 0.25]
    assert headline.adaptive_table(res).shape == (2, 4)    # robust, Δ vs α=0, stands, Δstands
    from msparse.experiments.sweeps import worst_case
    stood = headline.adaptive_table(res)["ours: stands % [95% CI]"]
    # one robust accuracy that stands per configuration and images: every stored attack pooled, never above the
    # page's own two attacks
    from msparse.evaluation import evidence as ev
    from msparse.evaluation.store import Store

    st = Store(COMMITTED)
    pooled = [ev.pool(st, ev.point_of(st.get(r["key"])), r["n"]).robust for r in res.aa]
    assert [float(v.split()[0]) for v in stood] == [round(x, 1) for x in pooled]
    assert all(x <= w["robust"] + 1e-9 for x, w in zip(pooled, worst_case(res.aa, res.adaptive)))
    assert "AutoAttack" in res.note


def test_explorer(no_compute, rows_match_records):
    import matplotlib

    matplotlib.use("Agg")
    from msparse.experiments import explorer

    res = explorer.run(results_dir=str(COMMITTED), progress=False, live=False)   # the book's parameters
    alphas = [0.0, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
    assert [r["alpha"] for r in res.rows] == alphas
    assert all(r["cached"] for r in res.rows)
    rows_match_records(res.rows)
    assert res.live_widget is None
    assert "carries no verdict" in res.note and "**Verdict: " not in res.note
    assert [label for label, _ in res.frames] == [f"α = {a:g}" for a in alphas]
    # the kernel-free panel: clean, the direct attack and BPDA beside it, each with its 95% Wilson interval
    assert [r["alpha"] for r in res.bpda] == alphas and all(r["cached"] for r in res.bpda)
    rows_match_records(res.bpda)
    series = explorer.panel_series(res.rows, res.bpda, res.attack)
    assert [s_["label"] for s_ in series] == ["clean", "apgd-ce (direct)", "BPDA apgd-ce (identity backward)"]
    assert series[2]["y"] == [r["robust"] for r in res.bpda]
    assert series[2]["lo"] == [r["robust_lo"] for r in res.bpda] and series[2]["hi"] == [r["robust_hi"] for r in res.bpda]
    assert list(explorer.bpda_table(res).index) == alphas
    html = explorer.slider(res)
    assert html.count('class="ms-frame"') == len(alphas) and "<script" not in html
    t = explorer.table(res)
    assert list(t.index) == alphas and t.shape == (9, 3)


def test_explorer_shares_table1s_records(no_compute):
    """The accuracy panel is read from the Table 1 records when the parameters match."""
    from msparse.experiments import explorer, table1

    ex = explorer.run(results_dir=str(COMMITTED), progress=False, live=False)
    t1 = table1.run(results_dir=str(COMMITTED), progress=False)
    assert [r["key"] for r in ex.rows] == [r["key"] for r in t1.test]


def test_adaptive(no_compute, rows_match_records):
    import matplotlib

    matplotlib.use("Agg")
    from msparse.experiments import adaptive

    res = adaptive.run(results_dir=str(COMMITTED), progress=False)
    assert list(res.by_attack) == ["apgd-ce+t", "bpda", "transfer"]
    assert all([r["alpha"] for r in rows] == [0.0, 0.25] for rows in res.by_attack.values())
    assert res.rows == [r for rows in (*res.by_attack.values(), res.aa) for r in rows]
    assert [(r["alpha"], r["n"], r["attack"]) for r in res.aa] == [(0.0, 200, "aa"), (0.25, 200, "aa")]
    assert all(r["cached"] for r in res.rows)
    rows_match_records(res.rows)
    assert res.verdict.startswith("**Verdict: ") and "under BPDA" in res.verdict
    assert "at α=0.25" in res.verdict
    assert "fragile: one more robust image would make it 'inconclusive'" in res.verdict   # its bound is at +1.0 pp
    assert list(res.blocked) == [0.25] and all(0 <= f <= 1 for f in res.blocked[0.25].values())
    for a in res.attacks:
        t = adaptive.table(res, a)
        assert list(t.index) == [0.0, 0.25] and t.shape == (2, 2)
    stood = adaptive.stands_table(res)   # every stored attack pooled: never above any of the page's attacks
    for i, a in enumerate([0.0, 0.25]):
        k = float(stood.loc[a, "ours: robust % [95% CI]"].split()[0])
        assert k <= min(round(rows[i]["robust"], 1) for rows in res.by_attack.values())
    aa, aa_stood = adaptive.aa_table(res), adaptive.aa_stands_table(res)
    assert list(aa.index) == list(aa_stood.index) == [0.0, 0.25]
    for i, a in enumerate([0.0, 0.25]):   # on the first 200 images: never above AutoAttack or any attack's flags there
        k = float(aa_stood.loc[a, "ours: robust % [95% CI]"].split()[0])
        assert k <= round(res.aa[i]["robust"], 1)
        for rows in res.by_attack.values():
            assert k <= round(100 * rows[i]["robust_flags"][:200].count("1") / 200, 1)
    assert adaptive.diagnostics(res).shape == (len({r["key"] for r in res.rows}), 7)   # one row per record
    assert adaptive.blocked_figure(res) is not None


def test_diagnostics_read_the_zero_gradient_fractions_in_words_and_never_show_nan():
    from msparse.report.tables import masking_reading

    assert "blind" in masking_reading(0.9, 0.0) and "gradient masking" in masking_reading(0.9, 0.0)
    assert "partial masking" in masking_reading(0.1, 0.0)
    assert "BPDA tests" in masking_reading(0.0, 0.0)
    assert "no site active" in masking_reading(0.0, float("nan"))
    assert masking_reading(None, None) == "not measured"


def test_adaptive_diagnostics_table_one_row_per_record_no_nan(no_compute):
    from msparse.experiments import adaptive

    res = adaptive.run(results_dir=str(COMMITTED), progress=False)
    t = adaptive.diagnostics(res)
    assert t.index.is_unique and len(t) == len({r["key"] for r in res.rows})
    text = t.to_string()
    assert "NaN" not in text and "nan" not in text
    assert (t.loc[t["α"] == 0, "blocked (mean over sites)"] == "— (no active site at α = 0)").all()
    assert t["reading"].str.len().min() > 10
