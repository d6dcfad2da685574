"""Each page's experiment function, run with its default parameters on the committed records: nothing is
recomputed, every number it returns is the number of the record it cites, and its verdict is worded by the
tested rules (msparse.report.verdicts)."""
from pathlib import Path



COMMITTED = Path(__file__).resolve().parent.parent / "results"


def test_table1(no_compute, rows_match_records):
    from msparse.experiments import table1

    res = table1.run(results_dir=str(COMMITTED), progress=False)
    assert [r["alpha"] for r in res.test] == [0.0, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
    assert [r["alpha"] for r in res.train] == [0.0, 0.25, 0.5]
    assert all(r["cached"] for r in res.rows)
    rows_match_records(res.rows)
    assert res.verdict.startswith("**Verdict: ")
    t = table1.table(res)
    assert list(t.index) == [0.0, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
