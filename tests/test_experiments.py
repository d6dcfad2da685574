"""Each page's experiment function, run with its default parameters on the committed records: nothing is
recomputed, every number it returns is the number of the record it cites, and its verdict is worded by the
tested rules (msparse.report.verdicts)."""
import sys
from pathlib import Path

import pytest

from msparse.evaluation.store import Store

COMMITTED = Path(__file__).resolve().parent.parent / "results"


@pytest.fixture
def no_compute(monkeypatch):
    """Fail if any evaluation batch would be computed (the committed store must serve every point)."""
    def refuse(*a, **k):
        raise AssertionError("a record was recomputed: the committed store does not cover this page")

    monkeypatch.setattr(sys.modules["msparse.evaluation.evaluate"], "_eval_batch", refuse)


def assert_rows_match_records(rows):
    """Every display row equals its record: n, clean and robust accuracy (percent) and the per-image flags."""
    st = Store(COMMITTED)
    assert rows
    for r in rows:
        rec = st.get(r["key"])
        assert rec is not None, f"row {r.get('alpha')} cites no committed record"
        res = rec["result"]
        assert r["n"] == res["n"]
        assert r["clean"] == pytest.approx(100 * res["clean_acc"])
        assert r["robust"] == pytest.approx(100 * res["robust_acc"])
        assert r["robust_flags"] == res["robust_flags"]


def test_table1(no_compute):
    from msparse.experiments import table1

    res = table1.run(results_dir=str(COMMITTED), progress=False)
    assert [r["alpha"] for r in res.test] == [0.0, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
    assert [r["alpha"] for r in res.train] == [0.0, 0.25, 0.5]
    assert all(r["cached"] for r in res.rows)
    assert_rows_match_records(res.rows)
    assert res.verdict.startswith("**Verdict: ")
    t = table1.table(res)
    assert list(t.index) == [0.0, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
