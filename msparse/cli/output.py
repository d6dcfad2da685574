"""How the command line prints results: plain-text tables (:func:`format_table`: accuracies in percent, ε as
``k/255``), the row of one :class:`~msparse.evaluation.evaluate.Result` and of one stored record, the paired
comparison with the base model, and the attack's warnings and gradient-masking note (on stderr)."""
from __future__ import annotations

import sys
from typing import Sequence


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Plain-text table (percentages for accuracy columns)."""
    def fmt(c, v):
        if v is None:
            return "-"
        if c in ("clean", "robust", "d_clean", "d_robust") and isinstance(v, float):
            return f"{100 * v:+.2f}" if c.startswith("d_") else f"{100 * v:.2f}"
        if c in ("p_robust", "p_clean") and isinstance(v, float):
            return f"{v:.3g}"
        if c == "eps" and isinstance(v, float):
            k = round(v * 255)
            return f"{k}/255" if k and abs(k / 255 - v) < 1e-9 and v < 1 else f"{v:.4g}"
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)
    cells = [[fmt(c, r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
              for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def result_row(r, extra: dict | None = None) -> dict:
    """One evaluation result as a table row (attack, ε, α or "mixed", n, accuracies, robust CI, cached, key)."""
    sites = r.spec.get("sites") or {}
    al = sorted({s["alpha"] for s in sites.values()})
    row = {"attack": r.attack, "eps": None if r.attack == "none" else r.eps,
           "alpha": (al[0] if len(al) == 1 else "mixed") if al else 0.0,
           "n": r.n, "clean": r.clean_acc, "robust": r.robust_acc,
           "robust 95% CI": f"[{100 * r.robust_ci[0]:.1f}, {100 * r.robust_ci[1]:.1f}]",
           "cached": "yes" if r.cached else "no", "key": r.key[:12]}
    row.update(extra or {})
    return row


def paired(res, base) -> dict:
    """The columns of ``res`` compared with ``base`` on the same images (McNemar: change, p-value, +/-)."""
    p = res.compare(base)
    return {"d_robust": p.delta, "p_robust": p.p_value, "gained": p.gained, "lost": p.lost}


def print_warnings(res) -> None:
    """AutoAttack's warnings and the zero-gradient (gradient masking) note of a result, on stderr."""
    for msg, count in res.warnings.items():
        print(f"AutoAttack warning ({count}x): {msg}", file=sys.stderr)
    d = res.diagnostics
    if d.get("zero_grad"):
        print(f"note: {100 * d['zero_grad']:.1f}% of the checked images have an exactly zero input "
              "gradient (gradient masking): run an adaptive attack, e.g. --attack bpda",
              file=sys.stderr)


def distinguishing(rec: dict) -> dict:
    """What tells two records of the same model, attack, ε and α apart in the listing: the attack's iterations,
    the sites' centre and backward ("mixed" when sites differ), and the data split (test / train)."""
    sites = list((rec["spec"].get("sites") or {}).values())

    def one(field):
        vals = {s.get(field) for s in sites}
        return "-" if not vals else (vals.pop() if len(vals) == 1 else "mixed")

    data = str((rec.get("meta") or {}).get("data") or "")
    split = data.split()[0].split("/")[-1] if "/" in data.split(" ")[0] else "-"
    return {"iters": (rec["spec"].get("attack") or {}).get("n_iter"), "centre": one("centre"),
            "backward": one("backward"), "split": split}
