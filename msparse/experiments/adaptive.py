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
images is the worst case over it and the page's other attacks.

    res = adaptive.run()
    adaptive.reference_figure(); adaptive.figure(res); adaptive.table(res, "bpda"); adaptive.diagnostics(res)
    adaptive.aa_table(res); adaptive.aa_stands_table(res)
    adaptive.blocked_figure(res); res.verdict
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .setup import Setup, check_count, setup
from .sweeps import evaluate_alphas
from .pages import Page, param, register

__all__ = ["Adaptive", "run", "figure", "table", "stands_table", "aa_table", "aa_stands_table", "diagnostics",
           "blocked_figure", "reference_figure", "reference_table"]


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


def run(model: str = "msparse/default", *, data_source: str = "auto", n_examples: int = 1000, n_train: int = 1000,
        alphas=(0.0, 0.25), attacks=("apgd-ce+t", "bpda", "transfer"), eps: float = 8 / 255, n_iter: int = 20,
        device: str = "cpu", seed: int = 0, n_aa: int = 200, use_stored: bool = True, results_dir: str | None = None,
        progress: bool = True) -> Adaptive:
    """Each of ``attacks`` at each of ``alphas`` on the first ``n_examples`` test images; full standard AutoAttack
    (100 iterations, Square with 5000 queries) at each of ``alphas`` on the first ``n_aa`` of them (0: none); blocked
    fractions per site at every α > 0 (on up to 64 clean images); the verdict on RobustBench's BPDA finding at
    ``max(alphas)``."""
    from ..report import verdicts, widgets
    from ..report.tables import budget_note

    alphas, attacks = list(alphas), list(attacks)
    check_count("n_aa", n_aa, "test images for full AutoAttack; 0: skip")
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
    line = (verdicts.verdict(v, where) if v is not None else
            verdicts.no_better_line(bpda_rows[0.0], bpda_rows[a_hi], where, what="BPDA robust"))
    return Adaptive(s, by_attack, alphas, attacks, blocked, note, line,
                    [r for rs in (*by_attack.values(), aa) for r in rs], aa)


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
                     quick={"n_examples": 24, "n_train": 256, "n_iter": 5, "alphas": [0.0, 0.35], "n_aa": 0},
                     plan_key="adaptive", plan_run=_plan_run))
