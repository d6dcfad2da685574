"""Adaptive evaluation: MeanSparse under BPDA and transfer attacks, and its gradient masking.

The paper evaluates MeanSparse with AutoAttack through the official operator, whose gradient is zero inside the
band (``torch.where``), and reports gains over the base models (Fig. 3, Tables 1–8). RobustBench re-evaluated
every MeanSparse entry with BPDA (the identity as the operator's backward) and found each below its base model's
AutoAttack accuracy. The paper's models are not available offline, so RobustBench's finding ("under BPDA,
MeanSparse is no better than its base") is checked on the model given here (default: the shipped offline
default), with the direct attack (official gradient), BPDA and a transfer attack (crafted on the base model,
α = 0) at each α (:func:`msparse.report.verdicts.no_better_than_base` between BPDA at α = 0 and at the largest α).
The diagnostics show how many activations sit inside the band and how many input gradients are exactly zero.
Full standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square with 5000 queries: the paper's protocol, about 9 s per image
on one CPU thread) runs on the first ``n_aa`` of the images at every α, and the robust accuracy that stands on those
images is the worst case over it and the page's other attacks. The indicators of attack failure (Pintor et al.,
NeurIPS 2022; :mod:`msparse.attacks.indicators`) of a secml-torch PGD run on the first ``n_indicators`` images, at
α = 0 and the largest α, direct and BPDA, are stored records (:mod:`msparse.evaluation.indicator_records`), computed
once and read back.

    res = adaptive.run()
    adaptive.reference_figure(); adaptive.figure(res); adaptive.table(res, "bpda"); adaptive.diagnostics(res)
    adaptive.aa_table(res); adaptive.aa_stands_table(res)
    adaptive.blocked_figure(res); res.verdict
    adaptive.indicator_table(res); adaptive.indicators_reading(res)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .setup import Setup, check_count, setup
from .sweeps import evaluate_alphas
from .pages import Page, param, register

__all__ = ["Adaptive", "run", "figure", "table", "stands_table", "aa_table", "aa_stands_table", "diagnostics",
           "blocked_figure", "reference_figure", "reference_table", "indicator_records", "indicator_table",
           "indicators_reading", "INDICATOR_MODES"]

#: the attacks of the indicators section: name -> backward mode of the sites (msparse.attacks.indicators.MODES)
INDICATOR_MODES = ("direct", "bpda")


@dataclass
class Adaptive:
    """Display rows (percent) per attack, the blocked fraction per site at each α > 0 (clean images), the budget
    note, the verdict line, and the set-up they came from."""
    setup: Setup
    by_attack: dict                          # {attack: display rows, one per α}
    alphas: list[float]
    attacks: list[str]
    blocked: dict = field(default_factory=dict)   # {α > 0: {site index: blocked fraction}}
    note: str = ""                                # budget note (Markdown)
    verdict: str = ""
    rows: list[dict] = field(default_factory=list)   # every row with a record (provenance)
    aa: list = field(default_factory=list)           # full AutoAttack's display rows on the first n_aa images
    indicators: dict = field(default_factory=dict)   # {(α, attack mode): indicators record} on the first images
    indicator_rows: list = field(default_factory=list)   # their provenance rows (key, attack, α, n, cached)


def run(model: str = "msparse/default", *, data_source: str = "auto", n_examples: int = 1000, n_train: int = 1000,
        alphas=(0.0, 0.25), attacks=("apgd-ce+t", "bpda", "transfer"), eps: float = 8 / 255, n_iter: int = 20,
        device: str = "cpu", seed: int = 0, n_aa: int = 200, n_indicators: int = 32, indicator_steps: int = 20,
        use_stored: bool = True, results_dir: str | None = None, progress: bool = True) -> Adaptive:
    """Each of ``attacks`` at each of ``alphas`` on the first ``n_examples`` test images; full standard AutoAttack
    (100 iterations, Square with 5000 queries) at each of ``alphas`` on the first ``n_aa`` of them (0: none); blocked
    fractions per site at every α > 0 (on up to 64 clean images); the indicators of attack failure of an
    ``indicator_steps``-step PGD on the first ``n_indicators`` images at α = 0 and ``max(alphas)``, direct and BPDA
    (:func:`indicator_records`; 0: none); the verdict on RobustBench's BPDA finding at ``max(alphas)``."""
    from ..report import verdict_lines, verdicts, widgets
    from ..report.tables import budget_note

    alphas, attacks = list(alphas), list(attacks)
    check_count("n_aa", n_aa, "test images for full AutoAttack; 0: skip")
    check_count("n_indicators", n_indicators, "test images for the indicators of attack failure; 0: skip")
    s = setup(model, n_examples=n_examples, n_train=n_train, data_source=data_source, device=device,
              use_stored=use_stored, results_dir=results_dir)
    note = budget_note(s, ", ".join(attacks), n_iter)
    by_attack = {a: evaluate_alphas(s, alphas, attack=a, eps=eps, n_iter=n_iter, seed=seed, label="adaptive",
                                    progress=progress) for a in attacks}
    aa = []
    if n_aa:
        n_aa = min(int(n_aa), len(s.x))
        s_aa = s if n_aa == len(s.x) else setup(model, n_examples=n_aa, n_train=n_train, data_source=data_source,
                                                 device=device, use_stored=use_stored, results_dir=results_dir)
        aa = evaluate_alphas(s_aa, alphas, attack="aa", eps=eps, n_iter=100, n_queries=5000, seed=seed,
                             label="adaptive", progress=progress)
    ex = widgets.AlphaExplorer(s.model, s.x, s.y, n_batch=min(64, len(s.x)), n_robust=0)
    blocked = {a: ex.blocked(a) for a in alphas if a > 0}
    indicators = indicator_records(s, sorted({0.0, max(alphas)}), n=n_indicators, steps=indicator_steps, eps=eps,
                                   seed=seed, progress=progress) if n_indicators else {}
    ind_rows = [{"key": rec["key"], "attack": f"indicators ({mode})", "alpha": a, "n": rec["result"]["n"],
                 "cached": "checksum" in rec} for (a, mode), rec in indicators.items()]

    a_hi = max(alphas)
    bpda_rows = {r["alpha"]: r for r in by_attack.get("bpda", [])}
    if s.is_random:
        v = verdicts.not_evaluated(verdicts.NO_BETTER_CLAIM, "this run used random weights (infrastructure test)")
    elif 0.0 not in bpda_rows or a_hi not in bpda_rows or a_hi == 0.0:
        v = verdicts.not_evaluated(verdicts.NO_BETTER_CLAIM, "this run has no BPDA attack at α=0 and an α > 0")
    else:  # judged by no_better_line below (BPDA at α=0 is the direct attack's record: the same computation)
        v = None
    d = next(r for r in by_attack[attacks[0]] if r["alpha"] == a_hi)
    where = (f"Measured on {s.model_name} at α={a_hi:g}; the direct {attacks[0]} changes robust accuracy by "
             f"{d.get('d_robust', 0):+.1f} pp vs α=0.")
    line = (verdict_lines.verdict(v, where) if v is not None else
            verdict_lines.no_better_line(bpda_rows[0.0], bpda_rows[a_hi], where, what="BPDA robust"))
    return Adaptive(s, by_attack, alphas, attacks, blocked, note, line,
                    [r for rs in (*by_attack.values(), aa) for r in rs], aa, indicators, ind_rows)


def reference_figure():
    """RobustBench's re-evaluation of the paper's models (reference values): base AA, the authors' MeanSparse AA,
    RobustBench's MeanSparse BPDA."""
    from ..report import paper, plots

    pairs = paper.bpda_pairs()
    names = [f"{m.architecture.replace('MeanSparse ', '')}\n{m.dataset} {m.threat_model}" for _, m in pairs]
    bars = {"base AA (RobustBench)": [b.aa for b, _ in pairs], "MeanSparse AA (authors)": [m.aa for _, m in pairs],
            "MeanSparse BPDA (RobustBench)": [m.external for _, m in pairs]}
    return plots.bars(names, bars, ref=list(bars), title="every MeanSparse model falls below its base under BPDA",
                      ylim=(30, 95))


def reference_table():
    """RobustBench's MeanSparse entries: base AA, the authors' AA, RobustBench's BPDA (reference values)."""
    from ..report.tables import bpda_table

    return bpda_table()


def figure(res: Adaptive):
    """Ours: robust accuracy by attack at each α (95% Wilson intervals)."""
    from ..report import plots

    return plots.bars([f"α={a:g}" for a in res.alphas],
                      {a: [r["robust"] for r in res.by_attack[a]] for a in res.attacks},
                      errors={a: [(r["robust_lo"], r["robust_hi"]) for r in res.by_attack[a]] for a in res.attacks},
                      title=f"{res.setup.model_name}: robust accuracy by attack (95% Wilson intervals)")


def table(res: Adaptive, attack: str):
    """Ours under ``attack``: robust accuracy at each α (Δ vs α = 0, McNemar p)."""
    from ..report.tables import compare_table

    return compare_table(res.by_attack[attack], metrics=("robust",))


def stands_table(res: Adaptive):
    """The robust accuracy that stands on this page: at each α the per-image worst case over every attack of the
    page (an image counts only if it survives all of them), with Δ vs α = 0 (McNemar p)."""
    from ..report.tables import compare_table
    from .sweeps import pooled_rows

    return compare_table(pooled_rows(next(iter(res.by_attack.values())), store=res.setup.store), metrics=("robust",))


def aa_table(res: Adaptive):
    """Full standard AutoAttack on the first ``n_aa`` images: robust accuracy at each α (Δ vs α = 0, McNemar p);
    None when it was not run."""
    from ..report.tables import compare_table

    return compare_table(res.aa, metrics=("robust",)) if res.aa else None


def aa_stands_table(res: Adaptive):
    """The robust accuracy that stands on the first ``n_aa`` images: per image, the worst case over full AutoAttack
    and every attack of the page (their flags on the same first images); None when AutoAttack was not run."""
    from ..report.tables import compare_table
    from .sweeps import pooled_rows

    if not res.aa:
        return None
    return compare_table(pooled_rows(res.aa, store=res.setup.store), metrics=("robust",))


def diagnostics(res: Adaptive):
    """Gradient-masking diagnostics of every record (blocked fraction, zero input gradients, AutoAttack warnings)."""
    from ..report.tables import diagnostics_table

    return diagnostics_table(res.rows, res.setup.store)


def blocked_figure(res: Adaptive):
    """Blocked activations per site at each α > 0 (clean images); None when no α > 0 was evaluated."""
    from ..report import plots

    if not res.blocked:
        return None
    fig, axes = plots.panels(len(res.blocked), ncols=1, height=3.2)   # the book column: plots.panels
    for ax, (a, fractions) in zip(axes, res.blocked.items()):
        plots.blocked_fractions(fractions, ax=ax, title=f"blocked activations per site, α={a:g} (clean images)")
    return fig


# ================================================================================================
# indicators of attack failure (stored records)
# ================================================================================================
def _first_label(s: Setup, k: int) -> str:
    """The data label of the first ``k`` test images of the set-up, e.g. ``"cifar10/test 0..31 (offline)"``."""
    import re

    from .sweeps import data_label

    m = re.fullmatch(r"(\d+)\.\.\d+", str(s.data_info.get("indices")))
    if m is None:
        return data_label(s, "test", k)
    start = int(m.group(1))
    return f"cifar10/test {start}..{start + k - 1} ({s.data_info.get('kind')})"


def indicator_records(s: Setup, alphas, *, n: int = 32, steps: int = 20, eps: float = 8 / 255, seed: int = 0,
                      progress: bool = True) -> dict:
    """``{(α, attack): record}``: the indicators of attack failure
    (:func:`msparse.evaluation.indicator_records.indicator_record`, secml-torch L∞ PGD-CE with ``steps`` iterations,
    2 random restarts, the ε = 1 run, 16 noise draws, and for α > 0 the transfer from α = 0) of each attack of
    :data:`INDICATOR_MODES` (``"direct"``: exact backward, ``"bpda"``: identity backward) at each of ``alphas``
    (set at every site) on the first ``n`` test images of the set-up. Each is a record of the set-up's store, read
    back when present (a read record carries its ``checksum``), else computed (minutes per record on one CPU thread)
    and stored. At α = 0 no site is active, so both attacks are the same record."""
    from ..attacks.indicators import MODES
    from ..core.placement import backward_mode, set_alpha
    from ..evaluation.indicator_records import indicator_record

    k = min(int(n), len(s.x))
    data = _first_label(s, k)
    out = {}
    for a in alphas:
        set_alpha(s.model, float(a))
        try:
            for mode in INDICATOR_MODES:
                with backward_mode(s.model, MODES[mode]):
                    out[(float(a), mode)] = rec = indicator_record(
                        s.model, s.x[:k], s.y[:k], eps=eps, steps=steps, seed=seed, store=s.store,
                        name=s.model_name, data=data, tags={"book": "adaptive"})
                if progress:
                    print(f"indicators α={float(a):g} {mode}: {'stored' if 'checksum' in rec else 'computed'} "
                          f"{rec['key'][:12]}", flush=True)
        finally:
            set_alpha(s.model, 0.0)
    return out


def _cell(row: dict) -> str:
    """An indicator's value (3 significant digits) and whether it fires, from its row (:func:`indicator_rows`)."""
    v = row["value"]
    if v != v:   # NaN: no attacked image, or no gradient graph
        return "— (not computed)"
    return f"{v:.3g} — fires" if row["fires"] else f"{v:.3g}"


def indicator_table(res: Adaptive):
    """The indicators of attack failure from their stored records: one row per indicator (its rule), one column
    per (α, attack) with the value and whether it fires, and the one-sentence reading of a firing indicator; None
    when none were computed. A blank cell: the indicator is not part of that run (the transfer at α = 0)."""
    import pandas as pd

    from ..attacks.indicators import THRESHOLDS
    from ..evaluation.indicator_records import indicator_rows

    if not res.indicators:
        return None
    cols = {f"α={a:g} {mode}": {r["indicator"]: r for r in indicator_rows(rec)}
            for (a, mode), rec in res.indicators.items()}
    names = [n for n in THRESHOLDS if any(n in c for c in cols.values())]
    out = []
    for name in names:
        first = next(c[name] for c in cols.values() if name in c)
        row = {"indicator": name.replace("_", " "), "rule": first["rule"]}
        for label, c in cols.items():
            row[label] = "" if name not in c else _cell(c[name])
        row["reading when it fires"] = first["reading"]
        out.append(row)
    return pd.DataFrame(out).set_index("indicator")


def _fired(rec: dict) -> str:
    """``"*a* and *b* fire"``, ``"*a* fires"`` or ``"nothing fires"`` for an indicators record."""
    f = [f"*{name.replace('_', ' ')}*" for name, i in rec["result"]["indicators"].items() if i["fires"]]
    if not f:
        return "nothing fires"
    return (f[0] + " fires") if len(f) == 1 else ", ".join(f[:-1]) + f" and {f[-1]} fire"


def indicators_reading(res: Adaptive) -> str:
    """Which indicators fire where, in words, from the stored records, and what the gradient indicator says about
    the band's zero gradient at the largest α (a line saying so when none were computed)."""
    if not res.indicators:
        return "The indicators of attack failure were not computed (`n_indicators = 0`)."
    rec0 = next(iter(res.indicators.values()))
    n, steps = rec0["result"]["n"], rec0["spec"]["attack"]["n_iter"]
    parts = []
    alphas = sorted({a for a, _ in res.indicators})
    attacked = ", ".join(f"{next(r for (b, _), r in res.indicators.items() if b == a)['result']['n_attacked']} at "
                         f"α = {a:g}" for a in alphas)
    for a in alphas:
        recs = {m: res.indicators[(a, m)] for m in INDICATOR_MODES if (a, m) in res.indicators}
        if len({r["key"] for r in recs.values()}) == 1:
            parts.append(f"at α = {a:g} (no active site: the direct attack and BPDA are one run) "
                         f"{_fired(next(iter(recs.values())))}")
        else:
            parts.append(f"at α = {a:g}, " + "; ".join(
                f"under {'the direct attack' if m == 'direct' else 'BPDA'} {_fired(r)}" for m, r in recs.items()))
    text = (f"A {steps}-step PGD on the first {n} test images (each run attacks the images classified correctly: "
            f"{attacked}). " + "; ".join(p[0].upper() + p[1:] if i == 0 else p for i, p in enumerate(parts)) + ".")
    fired = {frozenset(n for n, i in r["result"]["indicators"].items() if i["fires"]) for r in res.indicators.values()}
    if len(fired) == 1 and next(iter(fired)) and 0.0 in alphas and len(alphas) > 1:
        text += (" The same indicators fire in every run, at the base model (α = 0) too: they describe this attack's "
                 "budget on this network, not something MeanSparse adds.")
    hi = alphas[-1]
    d, b = res.indicators.get((hi, "direct")), res.indicators.get((hi, "bpda"))
    if hi > 0 and d is not None and b is not None:
        gd, gb = (r["result"]["indicators"].get("unavailable_gradients", {}).get("fires") for r in (d, b))
        if gd and not gb:
            text += (f" At α = {hi:g} the direct attack meets zero input gradients and BPDA does not: the band's "
                     "zero gradient blinds the official attack, which is the masking BPDA removes.")
        elif gd and gb:
            text += (f" At α = {hi:g} even BPDA meets zero input gradients: something besides the band's backward "
                     "masks the gradient.")
        else:
            text += (f" At α = {hi:g} the direct attack finds a non-zero input gradient at every iterate on every "
                     "attacked image: the band does not blind it on these images.")
    return text


# ================================================================================================
# the page (msparse.experiments.pages)
# ================================================================================================
@dataclass
class Params:
    """The parameters of the page ``adaptive`` in the order of its notebook's parameters cell, which is
    rendered from them (:func:`msparse.experiments.pages.render_parameters`)."""
    model: str = param("msparse/default")
    dataset: str = param("cifar10")
    data_source: str = param("auto", "auto | offline | official")
    n_examples: int = param(1000, "test images (all 1000 of the offline subset)")
    n_train: int = param(1000, "training images for mu, sigma")
    alphas: list = param([0.0, 0.25],
                         "alpha values (0.25: the offline default's alpha everywhere in the book, Fig. 3's)")
    attacks: list = param(["apgd-ce+t", "bpda", "transfer"], "direct (official gradient), BPDA, transfer from the base")
    eps: float = param(8 / 255, expr="8 / 255")
    n_iter: int = param(20, "iterations per attack (AutoAttack: 100)")
    device: str = param("cpu", "cpu | cuda | auto")
    seed: int = param(0)
    n_aa: int = param(200,
                      "test images for full standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square 5000) at every alpha "
                      "(0: skip)")
    n_indicators: int = param(32, "test images for the indicators of attack failure (0: skip)")
    indicator_steps: int = param(20, "PGD iterations of the indicators' attack")
    use_stored: bool = param(True, "reuse stored result records")
    results_dir: str | None = param(None, "None means $MSPARSE_RESULTS or results/")


def _plan_run(it, model: str, kw: dict, progress: bool) -> tuple[str, ...]:
    """One item of the paper plan (:func:`msparse.experiments.plan.run_plan`): every attack of the page at α = 0
    and the item's α in one call (the plan's adaptive items of a model are all done by it)."""
    attacks = ("apgd-ce+t", "bpda", "transfer")
    run(model, alphas=(0.0, it.alpha), attacks=attacks, progress=progress, **kw)
    return attacks


PAGE = register(Page("adaptive", "Adaptive evaluation: BPDA, transfer and full AutoAttack",
                     "Stress tests", Params, __name__,
                     quick={"n_examples": 24, "n_train": 256, "n_iter": 5, "alphas": [0.0, 0.35], "n_aa": 0,
                            "n_indicators": 0},
                     plan_key="adaptive", plan_run=_plan_run))
