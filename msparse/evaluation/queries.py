"""Queries over a store: its records as table rows (:func:`to_table`, a pandas DataFrame) and filtered by row
fields, meta fields or tags (:func:`load_records`), for figures and tables without recomputation."""
from __future__ import annotations

import math
import os
from typing import Any, Iterable, Mapping, Sequence

from .provenance import record_versions
from .store import Store

__all__ = ["load_records", "to_table"]


def _row(rec: dict) -> dict[str, Any]:
    spec, res, meta, prov = rec["spec"], rec["result"], rec.get("meta", {}), rec.get("provenance", {})
    sites = spec.get("sites") or {}
    alphas = sorted({s["alpha"] for s in sites.values()}) if sites else [0.0]
    atk = spec.get("attack", {})
    row = {
        "key": rec["key"],
        "model": meta.get("model"),
        "data": meta.get("data"),
        "stats": meta.get("stats"),
        # a binarization-test record (msparse.evaluation.binarize) is listed as "binarization:<attack>"; its
        # "robust" column is the pass rate over valid samples, and it has no clean accuracy
        "attack": f"{spec['kind']}:{atk.get('name')}" if spec.get("kind") else atk.get("name"),
        "norm": atk.get("norm"),
        "eps": atk.get("eps"),
        "alpha": alphas[0] if len(alphas) == 1 else "mixed",
        "n_sites": len(sites),
        "n": res.get("n"),
        "clean": res.get("clean_acc"),
        "clean_lo": (res.get("clean_ci") or [None, None])[0],
        "clean_hi": (res.get("clean_ci") or [None, None])[1],
        "robust": res.get("robust_acc", res.get("pass_rate")),
        "robust_lo": (res.get("robust_ci") or [None, None])[0],
        "robust_hi": (res.get("robust_ci") or [None, None])[1],
        "seed": spec.get("seed"),
        "torch": record_versions(rec).get("torch"),
        "device": prov.get("device"),
        "wall_s": prov.get("wall_s"),
        "commit": prov.get("commit"),
    }
    for k, v in (meta.get("tags") or {}).items():
        row.setdefault(k, v)
    return row


def _matches(row: dict, rec: dict, where: Mapping[str, Any]) -> bool:
    for k, want in where.items():
        have = row.get(k, rec.get("meta", {}).get(k, (rec.get("meta", {}).get("tags") or {}).get(k)))
        if callable(want):
            if not want(have):
                return False
        elif isinstance(want, (list, tuple, set, frozenset)):
            if have not in want:
                return False
        elif isinstance(want, float) and isinstance(have, (int, float)):
            if not math.isclose(have, want, rel_tol=1e-6, abs_tol=1e-9):
                return False
        elif have != want:
            return False
    return True


def load_records(store: Store | str | os.PathLike | None = None, **where) -> list[dict]:
    """Records of a store, filtered by row fields (see :func:`to_table`), meta fields or tags.

    A filter value may be a value, a list of accepted values, or a predicate:
    ``load_records(attack="apgd-ce", model="Peng2023Robust", alpha=lambda a: a != "mixed")``.
    """
    st = store if isinstance(store, Store) else Store(store)
    out = []
    for rec in st:
        if _matches(_row(rec), rec, where):
            out.append(rec)
    return out


def to_table(records: Iterable[dict], columns: Sequence[str] | None = None):
    """One row per record, as a pandas DataFrame.

    Columns: key, model, data, stats, attack, norm, eps, alpha ("mixed" when sites differ), n_sites,
    n, clean, clean_lo, clean_hi, robust, robust_lo, robust_hi, seed, torch (the version the record was
    computed with), device, wall_s, commit, plus tags.
    Accuracies are fractions in [0, 1].
    """
    rows = [_row(r) for r in records]
    if columns is not None:
        rows = [{c: r.get(c) for c in columns} for r in rows]
    import pandas as pd

    return pd.DataFrame(rows, columns=list(columns) if columns is not None else None)
