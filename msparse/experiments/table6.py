"""Paper Table 6 (appendix): APGD accuracy against the attack radius ε, at α = 0, 0.2 and 0.35.

The paper evaluates its GELU ResNet-18 (PGD-AT) with APGD for ε = 1/255 … 16/255 at α = 0 (the base), 0.2 and
0.35, and reads the table as "MeanSparse's gain over the base grows with ε". A defence that only masks gradients
would typically show the opposite at large ε (accuracy should still reach 0 as ε grows). The paper's model is not
available offline, so the claim is checked on the project's CPU-route appendix family (default: the GELU PGD-AT
ResNet-18 of width 8): the gain of the largest α over α = 0, compared between the smallest and the largest ε of
the grid (:func:`msparse.report.verdicts.gain_grows`).

    res = table6.run()                 # stored records are reused; missing points are computed
    table6.figure(res); table6.table(res, 0.35); res.verdict
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .setup import Setup, setup
from . import beside
from .sweeps import evaluate_alphas
from .pages import Page, param, register

__all__ = ["Table6", "run", "figure", "table", "caption", "reference_columns", "PAPER_MODEL"]

#: the paper's model behind Table 6 (reference values in :mod:`msparse.report.paper`)
PAPER_MODEL = "full-width ResNet-18 GELU"


@dataclass
class Table6:
    """Display rows (percent) per α, one per ε of ``eps_grid`` (each row has ``eps_255``), the verdict and the
    set-up they came from."""
    setup: Setup
    by_alpha: dict            # {α: [row per ε in eps_grid order]}
    attack: str
    n_iter: int
    eps_grid: list
    check: object = None      # the Verdict of the growth claim
    verdict: str = ""         # its page line (Markdown)
    rows: list[dict] = field(default_factory=list)   # every row with a record (provenance)
    bpda: list[dict] = field(default_factory=list)   # BPDA at ε = 8/255 beside the direct attack (beside.ALPHAS)


def run(model: str = "msparse/resnet18-gelu-w8-pgdat", *, data_source: str = "auto", n_examples: int = 500,
        n_train: int = 1000, alphas=(0.0, 0.2, 0.35), attack: str = "apgd", eps: float = 8 / 255, n_iter: int = 50,
        eps_grid=(1, 2, 4, 8, 12, 16), device: str = "cpu", seed: int = 0, use_stored: bool = True,
        results_dir: str | None = None, progress: bool = True) -> Table6:
    """Evaluate ``attack`` at every α of ``alphas`` for every ε of ``eps_grid`` (units of 1/255) and check the
    paper's claim that the gain of max(α) over α = 0 grows with ε. ``eps`` is the notebook's generic parameter
    (validated, not used: the radii come from ``eps_grid``)."""
    from ..report import verdict_lines, verdicts

    s = setup(model, n_examples=n_examples, n_train=n_train, data_source=data_source, device=device,
              use_stored=use_stored, results_dir=results_dir)
    kw = dict(attack=attack, n_iter=n_iter, seed=seed, label="appendix", progress=progress)
    by_alpha = {a: [] for a in alphas}
    for e in eps_grid:
        for r in evaluate_alphas(s, alphas, eps=e / 255, eps_255=e, **kw):
            by_alpha[r["alpha"]].append(r)

    a_max = max(alphas)
    claim = f"the paper's claim (Table 6: the gain of α={a_max:g} over α=0 grows with ε)"
    if s.is_random:
        v = verdicts.not_evaluated(claim, "this run used random weights (infrastructure test)")
    else:
        def at(a, e):
            return next(r for r in by_alpha[a] if r["eps_255"] == e)
        v = verdicts.gain_grows([(f"{e}/255", at(0.0, e), at(a_max, e)) for e in sorted(eps_grid)], name="ε",
                                claim=claim)
    line = verdict_lines.verdict(v, f"Measured on {s.model_name}; the paper's numbers are for a {PAPER_MODEL} "
                               "(not available offline).")
    bpda = beside.bpda(s, alphas, attack=attack, eps=8 / 255, n_iter=n_iter, seed=seed, progress=progress) \
        if 8 in eps_grid else []
    return Table6(s, by_alpha, attack, n_iter, list(eps_grid), v, line,
                  [r for rs in by_alpha.values() for r in rs] + bpda, bpda)


def reference_columns(alpha: float) -> dict:
    """The paper's Table 6 column for ``alpha`` as ``{label: {ε·255: accuracy %}}`` (empty if the paper has none)."""
    from ..report import paper

    ref = paper.table("table6")
    col = f"alpha={alpha:g}"
    return {f"α={alpha:g} (paper)": ref.column(col)} if col in ref.columns else {}


def figure(res: Table6):
    """Our robust accuracy against ε per α (95% bands) beside the paper's curves."""
    from ..report import plots

    refs = {k: v for a in res.by_alpha for k, v in reference_columns(a).items()}
    fig = plots.eps_curves({f"α={a:g}": rows for a, rows in res.by_alpha.items()}, reference=refs,
                           title=f"{res.attack} vs ε")
    ax = fig.axes[0]
    for r, m in zip(res.bpda[1:], ("v", "D")):   # BPDA where its records exist: ε = 8/255, α > 0
        ax.errorbar([8], [r["robust"]], yerr=[[r["robust"] - r["robust_lo"]], [r["robust_hi"] - r["robust"]]],
                    fmt=m, color="#8c564b", capsize=3, label=f"BPDA {res.attack}, α={r['alpha']:g} (ours)")
    if res.bpda:
        plots.legend_below(ax)
    return fig


def caption(res: Table6, alpha: float) -> str:
    """One line saying what :func:`table` shows for ``alpha``."""
    n = res.by_alpha[alpha][0]["n"]
    return (f"**α = {alpha:g}** — {res.attack} ({res.n_iter} iterations) robust accuracy against ε, n = {n} test "
            f"images, model {res.setup.model_name}; Δ vs α = 0 at the same ε (paired McNemar); the paper's "
            "column beside it:")


def table(res: Table6, alpha: float):
    """Our robust accuracy at ``alpha`` per ε (with Δ vs α = 0) beside the paper's Table 6 column."""
    from ..report.tables import compare_table

    return compare_table(res.by_alpha[alpha], reference_columns(alpha) or None, index="eps_255",
                         metrics=("robust",))


# ================================================================================================
# the page (msparse.experiments.pages)
# ================================================================================================
@dataclass
class Params:
    """The parameters of the page ``table6_attack_power`` in the order of its notebook's parameters cell, which is
    rendered from them (:func:`msparse.experiments.pages.render_parameters`)."""
    model: str = param("msparse/resnet18-gelu-w8-pgdat", "the GELU PGD-AT member of the appendix family")
    dataset: str = param("cifar10")
    data_source: str = param("auto", "auto | offline | official")
    n_examples: int = param(500, "test images (paper: 10 000)")
    n_train: int = param(1000, "training images for mu, sigma")
    alphas: list = param([0.0, 0.2, 0.35], "the paper's three alpha values")
    attack: str = param("apgd", "APGD-CE then APGD-DLR, as in the appendix")
    eps: float = param(8 / 255, expr="8 / 255")
    n_iter: int = param(50, "APGD iterations (paper: 100)")
    eps_grid: list = param([1, 2, 4, 8, 12, 16], "epsilon in units of 1/255 (paper: 1 to 16)")
    device: str = param("cpu", "cpu | cuda | auto")
    seed: int = param(0)
    use_stored: bool = param(True, "reuse stored result records")
    results_dir: str | None = param(None, "None means $MSPARSE_RESULTS or results/")


def _plan_run(it, model: str, kw: dict, progress: bool) -> tuple[str, ...]:
    """One item of the paper plan (:func:`msparse.experiments.plan.run_plan`): the item's α grid at ε = 1..16/255."""
    run(model, alphas=it.alphas, eps_grid=tuple(range(1, 17)), attack=it.attack, progress=progress, **kw)
    return (it.attack,)


PAGE = register(Page("table6_attack_power", "Table 6: attack power",
                     "Appendix ablations (ResNet-18)", Params, __name__,
                     quick={"n_examples": 24, "n_train": 256, "n_iter": 5, "alphas": [0.0, 0.35], "eps_grid": [2, 8]},
                     plan_key="table6", plan_run=_plan_run))
