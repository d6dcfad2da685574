"""Test-session setup. Runs before any test module imports torch."""

import os

# Idle OpenMP threads sleep instead of spinning: on a small shared CPU (2 cores here, with other jobs),
# spinning threads made torch 4-5x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def committed_results() -> Path:
    """The committed results store (results/ of this checkout)."""
    return REPO / "results"


@pytest.fixture
def no_compute(monkeypatch):
    """Fail if any evaluation batch would be computed: the store must serve every point."""
    def refuse(*a, **k):
        raise AssertionError("a record was recomputed: the committed store does not cover this page")

    import importlib

    monkeypatch.setattr(importlib.import_module("msparse.evaluation.evaluate"), "_eval_batch", refuse)


@pytest.fixture
def rows_match_records(committed_results):
    """``check(rows)``: every display row equals its committed record (n, clean and robust accuracy in percent,
    the per-image robust flags)."""
    from msparse.evaluation.store import Store

    st = Store(committed_results)

    def check(rows):
        assert rows
        for r in rows:
            rec = st.get(r["key"])
            assert rec is not None, f"row {r.get('alpha')} cites no committed record"
            res = rec["result"]
            assert r["n"] == res["n"]
            assert r["clean"] == pytest.approx(100 * res["clean_acc"])
            assert r["robust"] == pytest.approx(100 * res["robust_acc"])
            assert r["robust_flags"] == res["robust_flags"]

    return check
