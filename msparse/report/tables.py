"""Tables for the pages: display rows (percent) of the engine's fraction rows, our numbers beside the paper's,
provenance of every record a page shows (with a note when records were made under other library versions),
RobustBench's reference tables, gradient-masking diagnostics, and the sentences that state a page's budget.

Percent appears here and only here: :func:`display_rows` turns a :class:`msparse.evaluation.sweep.Sweep` (fractions)
into the rows the plots, tables and verdict sentences read.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["open_store", "clean_flags", "short_device", "attack_budget", "Provenance", "masking_reading", "display_rows", "sweep_caption", "result_row", "versions_note", "provenance_table", "setup_provenance", "compare_table",
           "headline_table", "bpda_table", "diagnostics_table", "robustbench_bpda", "budget_note",
           "no_paper_model_note"]

_PERCENT = ("clean", "clean_lo", "clean_hi", "robust", "robust_lo", "robust_hi", "d_clean", "d_robust")


def sweep_caption(rows: Sequence[Mapping], attack: str, n_iter: int, norm: str = "L∞") -> str:
    """What an α sweep's table shows: "clean and <attack> (L∞ 8/255, 50 iterations) on n = 500 test images,
    α ∈ {0, 0.1, ...}" (display rows of one sweep, same ε and n)."""
    alphas = ", ".join(f"{r['alpha']:g}" for r in rows)
    return (f"clean and {attack} ({norm} {255 * rows[0]['eps']:.0f}/255, {n_iter} iterations) on "
            f"n = {rows[0]['n']} test images, α ∈ {{{alphas}}}")


def display_rows(sw, **extra) -> list[dict]:
    """Rows of a sweep for display: accuracies, bounds and differences in percent (pp), ``p_robust`` kept; the
    base point's own comparison (with itself) is left out; ``extra`` added to every row."""
    base_keys = {b.key for b in sw.base.values()}
    out = []
    for row in sw.rows():
        row = {**row, **extra}
        for k in _PERCENT:
            if row.get(k) is not None:
                row[k] = 100 * row[k]
        if row["key"] in base_keys or row.get("d_robust") is None:
            for k in ("d_clean", "d_robust", "gained", "lost", "p_clean", "p_robust"):
                row.pop(k, None)
        out.append(row)
    return out


def result_row(r, **extra) -> dict:
    """A :class:`msparse.evaluation.evaluate.Result` as a flat row, accuracies in % with 95% Wilson bounds."""
    row = dict(extra)
    row.update(n=r.n, clean=100 * r.clean_acc, clean_lo=100 * r.clean_ci[0], clean_hi=100 * r.clean_ci[1],
               robust=100 * r.robust_acc, robust_lo=100 * r.robust_ci[0], robust_hi=100 * r.robust_ci[1],
               attack=r.attack, eps=r.eps, key=r.key, cached=r.cached, robust_flags=r.result["robust_flags"])
    return row


def versions_note(records: Sequence[Mapping]) -> str:
    """One sentence saying which of ``records`` were computed under other library versions than the running
    ones, e.g. "12 of 14 records were computed with torch 2.15.0 on cpu; this build runs torch 2.14.1 ..."
    (empty string when every record matches the running versions)."""
    from collections import Counter

    from ..evaluation.provenance import versions, versions_differ

    now = versions()
    other = Counter()
    for rec in records:
        diff = versions_differ(rec, now)
        if diff:
            dev = str((rec.get("provenance") or {}).get("device", "?")).split(" (")[0]
            other[", ".join(f"{lib} {have}" for lib, (have, _) in sorted(diff.items())) + f" on {dev}"] += 1
    if not other:
        return ""
    made = "; ".join(f"{k} ({v} record{'s' * (v != 1)})" for k, v in other.most_common())
    libs = sorted({lib for rec in records for lib in versions_differ(rec, now)})
    running = ", ".join(f"{lib} {now.get(lib)}" for lib in libs)
    return (f"{sum(other.values())} of {len(records)} records on this page were computed with {made}; this build "
            f"runs {running}. Records are keyed by what determines the experiment, not by library versions; "
            "`python -m msparse results verify KEY` recomputes one here and compares every image, and "
            "`python -m msparse book --recompute-other-versions` rebuilds the book recomputing them.")


def open_store(store=None):
    """The :class:`msparse.evaluation.store.Store` a set-up's ``store`` value names (a Store, a path, or None /
    True / False for the default store)."""
    from ..evaluation.store import Store

    return store if isinstance(store, Store) else Store(store if store not in (None, False, True) else None)


def clean_flags(store, row: Mapping) -> str | None:
    """The per-image clean flags ('0101…') of a display row's record, or None when the record is not stored."""
    rec = open_store(store).get(row["key"]) if row.get("key") else None
    return None if rec is None else rec["result"].get("clean_flags")


def short_device(device: str | None) -> str:
    """A record's device in a few characters: "cpu", "cuda H100", "mps" (the long form names cores and threads)."""
    import re

    if not device:
        return "not stored"
    kind, _, detail = str(device).partition(" (")
    if kind.startswith("cuda"):
        gpu = re.search(r"\b(?:[ABHLTV]\d{1,3}S?|RTX ?\w+|GH\d+|MI\d+\w*)\b", detail)
        return f"cuda {gpu.group(0)}" if gpu else "cuda"
    return kind


def attack_budget(spec: Mapping | None) -> str:
    """A record's attack with its budget, e.g. "apgd-ce L∞ 8/255, 20 it." ("none (clean)" for clean-only)."""
    a = (spec or {}).get("attack") or {}
    name = a.get("name", "?")
    if name == "none":
        return "none (clean)"
    norm = {"Linf": "L∞", "L2": "L2", "L1": "L1"}.get(a.get("norm"), a.get("norm") or "")
    eps = a.get("eps")
    size = f" {norm} {255 * eps:.3g}/255" if eps is not None else ""
    it = f", {a['n_iter']} it." if a.get("n_iter") else ""
    return f"{name}{size}{it}"


class Provenance:
    """The provenance of a page's records: one row per record (no duplicates), shown folded (an HTML
    ``<details>`` element that opens on a click) in the book; ``frame`` is the table as a DataFrame."""

    def __init__(self, frame, note: str = ""):
        self.frame, self.note = frame, note

    def __len__(self) -> int:
        return len(self.frame)

    def _repr_html_(self) -> str:
        import html
        import re

        n = len(self.frame)
        computed = int((self.frame["reused/computed"] == "computed").sum()) if n else 0
        summary = (f"Provenance: {n} record{'s' * (n != 1)} behind this page's numbers ({n - computed} reused from "
                   f"results/, {computed} computed in this build) — click to open")
        note = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(self.note))
        note = f"<p><em>{note}</em></p>" if self.note else ""
        return (f"<details class=\"ms-provenance\"><summary>{html.escape(summary)}</summary>{note}"
                + self.frame.to_html(index=False, na_rep="—", escape=True) + "</details>")

    def __repr__(self) -> str:
        return (self.note + "\n" if self.note else "") + self.frame.to_string(index=False)


def provenance_table(rows: Sequence[Mapping], store=None) -> Provenance:
    """Provenance of the records behind ``rows``, one row per record (a record cited twice is listed once): record
    key, model, attack with its budget, α, n, torch, device (short), date, reused/computed; with
    :func:`versions_note` when records were made under other library versions. Displays folded (:class:`Provenance`)."""
    import pandas as pd

    from ..evaluation.provenance import record_versions

    st = open_store(store) if store is not False else None
    out, recs, seen = [], [], set()
    for r in rows:
        key = r.get("key") or ""
        if not key or key in seen:
            continue
        seen.add(key)
        rec = st.get(key) if st is not None else None
        if rec is not None:
            recs.append(rec)
        prov = (rec or {}).get("provenance", {})
        out.append({"record": key[:12], "model": (rec or {}).get("meta", {}).get("model"),
                    "attack (budget)": attack_budget((rec or {}).get("spec")) if rec else r.get("attack"),
                    "α": r.get("alpha"), "n": r.get("n"),
                    "torch": record_versions(rec)["torch"] if rec is not None else None,
                    "device": short_device(prov.get("device")), "date": str(prov.get("created") or "")[:10] or None,
                    "reused/computed": "reused" if r.get("cached") else "computed"})
    return Provenance(pd.DataFrame(out, columns=["record", "model", "attack (budget)", "α", "n", "torch", "device",
                                                 "date", "reused/computed"]), versions_note(recs))


_BPDA_OF = {"RaWRN-70-16": "Amini2024MeanSparse_Ra_WRN_70_16", "WRN-94-16": "Amini2024MeanSparse_S-WRN-94-16",
            "WRN-70-16 (L2)": ("Amini2024MeanSparse_S-WRN-70-16", "cifar10", "L2"),
            "WRN-70-16 (CIFAR-100)": ("Amini2024MeanSparse_S-WRN-70-16", "cifar100", "Linf"),
            "Swin-L": "Amini2024MeanSparse_Swin-L", "ConvNeXt-L": "Amini2024MeanSparse_ConvNeXt-L"}


def robustbench_bpda(model: str) -> float | None:
    """RobustBench's BPDA ('external') accuracy of the MeanSparse version of a paper model label, or None."""
    from ..report import paper

    key = _BPDA_OF.get(model)
    if key is None:
        return None
    e = paper.robustbench(*key) if isinstance(key, tuple) else paper.robustbench(key)
    return e.external


def headline_table():
    """The v2 README headline table with RobustBench's BPDA number beside each MeanSparse AA (reference values)."""
    import pandas as pd

    from ..report import paper

    df = paper.table("readme_v2").frame().rename(columns={
        "clean_base": "clean base (README)", "aa_base": "AA base (README)", "clean_ms": "clean MeanSparse (README)",
        "aa_ms": "AA MeanSparse (README)"})
    df["BPDA MeanSparse (RobustBench)"] = [robustbench_bpda(m) for m in df.index]
    df["BPDA − AA base"] = [None if b is None else round(b - a, 2)
                            for b, a in zip(df["BPDA MeanSparse (RobustBench)"], df["AA base (README)"])]
    return df.astype(object).where(pd.notna(df), "—")


def bpda_table():
    """RobustBench's MeanSparse entries: base AA, the authors' AA, RobustBench's BPDA (reference values)."""
    import pandas as pd

    from ..report import paper

    rows = []
    for b, m in paper.bpda_pairs():
        rows.append({"MeanSparse entry": m.name, "dataset / threat": f"{m.dataset} {m.threat_model} {m.eps}",
                     "base": b.name, "base AA": b.aa, "MeanSparse AA (authors)": m.aa,
                     "MeanSparse BPDA (RobustBench)": m.external, "BPDA − base AA": round(m.external - b.aa, 2),
                     "note": m.external_note})
    return pd.DataFrame(rows)


def _fraction(v, what: str) -> str:
    """A stored diagnostic fraction in [0, 1] as a short string; a missing one says why it is missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f"— ({what})"
    return f"{v:.3f}"


def masking_reading(zero_official, zero_identity) -> str:
    """What the two zero-input-gradient fractions (official backward, identity backward) say, in words."""
    def val(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    zo, zi = val(zero_official), val(zero_identity)
    if zo is None:
        return "not measured"
    if zo >= 0.5:
        return ("most input gradients are exactly zero under the official backward: a gradient attack is blind "
                "(gradient masking); only BPDA or transfer attacks measure robustness")
    if zo > 0:
        return "some input gradients are exactly zero: partial masking; compare with BPDA"
    if zi is None:
        return "no input gradient is exactly zero (no site active: nothing to mask)"
    return ("no input gradient is exactly zero under either backward: the band does not cut the gradient off "
            "entirely; it can still flatten it, which BPDA tests")


def diagnostics_table(rows: Sequence[Mapping], store=None):
    """Gradient-masking diagnostics stored with each record, one row per record: mean blocked fraction over active
    sites, fraction of test images whose input gradient is exactly zero (official backward, and identity backward),
    their reading in words (:func:`masking_reading`), AutoAttack's warnings. Fractions in [0, 1], 3 decimals; a
    value that does not apply (α = 0: no active site) says so instead of NaN."""
    import pandas as pd

    if store is False:
        return pd.DataFrame([{"note": "use_stored=False: diagnostics are kept in the records only"}])
    st = open_store(store)
    out, seen = [], set()
    for r in rows:
        if r["key"] in seen:
            continue
        seen.add(r["key"])
        rec = st.get(r["key"]) or {}
        d = rec.get("result", {}).get("diagnostics", {})
        none_active = "no active site at α = 0" if not r.get("alpha") else "not stored"
        out.append({"record": r["key"][:12], "attack": r.get("attack"), "α": r.get("alpha"),
                    "blocked (mean over sites)": _fraction(d.get("blocked_mean"), none_active),
                    "zero input gradient, official backward": _fraction(d.get("zero_grad"), "not stored"),
                    "zero input gradient, identity backward": _fraction(d.get("zero_grad_identity"), none_active),
                    "reading": masking_reading(d.get("zero_grad"), d.get("zero_grad_identity")),
                    "AutoAttack warnings": "; ".join(f"{k} ×{v}" for k, v in (d.get("messages") or {}).items()) or "—"})
    return pd.DataFrame(out).set_index("record") if out else pd.DataFrame(out)


def setup_provenance(s):
    """Provenance of numbers computed directly from the model and data (not from records): the weights'
    checksum, the data source and indices, the statistics pass, the code commit."""
    import pandas as pd

    from ..evaluation.provenance import git_commit

    rows = {"model": s.model_name, "weights source": s.card.get("source"), "weights sha256": s.card.get("sha256"),
            "test data": f"{s.data_info.get('source')} (indices {s.data_info.get('indices')})",
            "training data (statistics)": f"{s.train_info.get('source')} (indices {s.train_info.get('indices')})",
            "statistics": f"{s.stats['mode']}, {s.stats['n_samples']} images, {s.stats['n_batches']} batches",
            "placement": f"{s.placement} ({len(s.sites)} sites)", "device": s.device,
            "msparse commit": git_commit()}
    return pd.DataFrame({"value": rows})


def compare_table(rows: Sequence[Mapping], reference: Mapping[str, Mapping] | None = None, index: str = "alpha",
                  metrics: Sequence[str] = ("clean", "robust")):
    """Ours (value [95% CI], in %) beside labelled reference columns ``{label: {index value: value}}``."""
    import pandas as pd

    table = {}
    for r in rows:
        line = table.setdefault(r[index], {})
        for m in metrics:
            line[f"ours: {m} % [95% CI]"] = f"{r[m]:.1f} [{r[m + '_lo']:.1f}, {r[m + '_hi']:.1f}]"
        if "d_robust" in r:
            line["ours: Δrobust vs α=0 (pp), McNemar p"] = f"{r['d_robust']:+.1f}, p={r['p_robust']:.2g}"
        if "stands" in metrics and "d_stands" in r:
            line["ours: Δstands vs α=0 (pp), McNemar p"] = f"{r['d_stands']:+.1f}, p={r['p_stands']:.2g}"
    for lab, vals in (reference or {}).items():
        for k, v in vals.items():
            for idx in table:
                if isinstance(idx, (int, float)) and isinstance(k, (int, float)) and math.isclose(idx, k, abs_tol=1e-9):
                    table[idx][lab] = v
    df = pd.DataFrame.from_dict(table, orient="index").fillna("—")
    df.index.name = index
    return df


def budget_note(s, attack: str, n_iter: int, paper_iter: int = 100) -> str:
    """Says the attack budget of this page and how it differs from the paper's."""
    n = len(s.x)
    low = n_iter < paper_iter or n < 10000
    return (f"Budget: **{attack}**, {n_iter} iterations per attack (paper: {paper_iter}), on the first {n} CIFAR-10 "
            f"test images (paper: all 10 000)." + (" Reduced to fit 2 CPU cores (the committed result records let the "
            "book build in minutes); re-run with `-p n_iter 100 -p n_examples 10000` for the paper's budget."
            if low else ""))


def no_paper_model_note(s, paper_model: str) -> str:
    """The standard note: which model produced the numbers and that the paper's model is not here."""
    return (f"The paper's numbers come from **{paper_model}**, whose weights are not available offline; the "
            f"numbers below are from {s.describe()}. Compare trends, not levels.")



def html_table(df):
    """A DataFrame as an HTML table whose cells may hold links (``<a href=…>``), for ``display()``: no index, cells
    not escaped (build the cells with :func:`html.escape` where they hold text from outside)."""
    from IPython.display import HTML

    return HTML(df.to_html(index=False, escape=False, border=0, classes="msparse-table"))


# --------------------------------------------------------------------------------------------------
# numbers as a reader sees them: never a raw NaN, a signed zero or six decimals
# --------------------------------------------------------------------------------------------------

def _missing(x) -> bool:
    import math

    return x is None or (isinstance(x, float) and math.isnan(x))


def number(x, digits: int = 1) -> str:
    """``x`` with ``digits`` decimals ("—" when missing; "0.0", never "-0.0")."""
    if _missing(x):
        return "—"
    s = f"{float(x):.{digits}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def signed(x, digits: int = 1) -> str:
    """``x`` with its sign and ``digits`` decimals ("—" when missing; "±0.0", never "-0.0")."""
    if _missing(x):
        return "—"
    v = round(float(x), digits)
    return f"{v:+.{digits}f}" if v != 0 else f"±{0:.{digits}f}"


def p_value(p) -> str:
    """A p-value with two significant digits ("—" when missing)."""
    return "—" if _missing(p) else f"{float(p):.2g}"
