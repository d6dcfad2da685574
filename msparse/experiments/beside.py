"""The adaptive attack beside the direct one on an α-sweep page whose claim is about robustness.

BPDA re-runs the page's attack with the identity backward through every MeanSparse site (RobustBench's adaptive
evaluation of the paper's models). The appendix pages show it at :data:`ALPHAS` — the α values whose BPDA records
Table 2 computed for the appendix family on the same images and budget — so adding it recomputes nothing on the
default parameters; other parameters compute the missing points like any sweep.

Each BPDA row also carries the page's **robust accuracy that stands**: the per-image worst case of the direct
attack and BPDA at that α (:func:`msparse.experiments.sweeps.stands`; an image counts only if it survives both).

    rows = beside.bpda(s, alphas, attack="apgd", eps=8/255, n_iter=50)
    beside.plot(ax, rows, "apgd"); beside.caption(rows, "apgd", 50, s.model_name); beside.table(rows)
"""
from __future__ import annotations

from collections.abc import Sequence

from .setup import Setup
from .sweeps import evaluate_alphas, stands

__all__ = ["ALPHAS", "STANDS_NOTE", "bpda", "plot", "caption", "table"]

#: the α values (besides α = 0) at which the appendix pages show BPDA
ALPHAS = (0.2, 0.35)
#: what the "stands" column of a BPDA table means
STANDS_NOTE = ("**stands**: the robust accuracy that stands on this page, the per-image worst case of the direct "
               "attack and BPDA (an image counts only if it survives both), with its own Δ vs α = 0:")


def bpda(s: Setup, alphas: Sequence[float], *, attack: str, eps: float, n_iter: int, seed: int = 0,
         norm: str = "Linf", label: str = "appendix", progress: bool = True,
         sites: Sequence[int] | None = None) -> list[dict]:
    """``bpda:<attack>`` at α = 0 and each of :data:`ALPHAS` that is among ``alphas`` (display rows; α = 0 shares
    the direct attack's record), with MeanSparse at ``sites`` only (default all), each with the worst case of the
    direct attack and BPDA (``stands``: the direct rows are the page's own records, looked up); [] when none of the
    α is on the page's grid."""
    at = [a for a in ALPHAS if any(abs(a - x) < 1e-9 for x in alphas)]
    if not at:
        return []
    kw = dict(eps=eps, norm=norm, n_iter=n_iter, seed=seed, label=label, progress=progress, sites=sites)
    return stands(evaluate_alphas(s, [0.0, *at], attack=attack, **kw),
                  evaluate_alphas(s, [0.0, *at], attack=f"bpda:{attack}", **kw), store=s.store)


def plot(ax, rows: list[dict], attack: str) -> None:
    """Draw the BPDA robust accuracy (95% band) on ``ax``, in its own colour and marker."""
    from ..report import plots

    if rows:
        plots.alpha_sweep(rows, ax=ax, metrics=("robust",), colors=["#9467bd"], markers=["v"],
                          labels={"robust": f"BPDA {attack} (ours)"})


def caption(rows: list[dict], attack: str, n_iter: int, model: str) -> str:
    """One line saying what :func:`table` shows: the attack and its budget, n, α, model."""
    from ..report.tables import sweep_caption

    return (f"The adaptive attack beside it — **BPDA {attack}** (the same attack with the identity backward through "
            f"every MeanSparse site), `{model}`: {sweep_caption(rows, 'BPDA ' + attack, n_iter)} (95% Wilson "
            "intervals; Δ vs α = 0, paired McNemar; α = 0 shares the direct attack's record). " + STANDS_NOTE)


def table(rows: list[dict]):
    """BPDA robust accuracy per α and the robust accuracy that stands, each with Δ vs α = 0 (None without BPDA
    rows)."""
    from ..report.tables import compare_table

    if not rows:
        return None
    return compare_table(rows, metrics=("robust", "stands") if all("stands" in r for r in rows) else ("robust",))
