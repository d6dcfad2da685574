"""Paper Table 7 (appendix): MeanSparse at a single activation site, or at every site up to it (cumulative).

The paper puts MeanSparse (α = 0.2 and 0.35) on its GELU ResNet-18 at one activation position only ("single") or
at every position up to it ("cumulative"); index 0 = stem activation, 2k+1 = main path of block k, 2k+2 = after
the residual addition. Its reading: no single site matters much, the gain accumulates. The paper's model is not
available offline, so this is checked on the project's CPU-route appendix family (default: the GELU PGD-AT
ResNet-18 of width 8) at the largest α: whether all sites up to the last beat the best single site (chosen after
the fact, which favours it; :func:`msparse.report.verdicts.gain_grows`), and whether MeanSparse at all sites
raises robust accuracy at a small clean cost (:func:`msparse.report.verdicts.gain_claim`).

    res = table7.run()                 # stored records are reused; missing points are computed
    table7.figure(res); table7.table(res, "single", 0.35); res.verdicts
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .setup import Setup, setup
from .sweeps import evaluate_alphas
from .pages import Page, grid_plan, param, register

__all__ = ["Table7", "run", "figure", "table", "caption", "bpda_table", "bpda_caption", "base_table", "KINDS",
           "PAPER_MODEL"]

#: the two placements of the paper's Table 7
KINDS = ("single", "cumulative")
#: the paper's model behind Table 7 (reference values in :mod:`msparse.report.paper`)
PAPER_MODEL = "full-width ResNet-18 GELU"


@dataclass
class Table7:
    """Display rows (percent): ``rows[(kind, α)]`` one per site of ``site_indices`` (each with ``site``; Δ vs
    α = 0 on the same images), ``base`` the α = 0 row, the verdicts and the set-up they came from."""
    setup: Setup
    by_kind: dict              # {(kind, α): [row per site]}
    base: dict                 # the α = 0 row (no site active)
    attack: str
    n_iter: int
    alpha: float               # the α the verdicts are checked at (max of alphas)
    bpda: dict = field(default_factory=dict)       # {(kind, α): [BPDA row per site]} at beside.ALPHAS
    checks: list = field(default_factory=list)     # Verdicts: accumulation, gain with all sites
    verdicts: list = field(default_factory=list)   # their page lines (Markdown)
    rows: list[dict] = field(default_factory=list)  # every row with a record (provenance)


def run(model: str = "msparse/resnet18-gelu-w8-pgdat", *, data_source: str = "auto", n_examples: int = 500,
        n_train: int = 1000, alphas=(0.35,), attack: str = "apgd", eps: float = 8 / 255, n_iter: int = 50,
        site_indices=tuple(range(17)), device: str = "cpu", seed: int = 0, use_stored: bool = True,
        results_dir: str | None = None, progress: bool = True) -> Table7:
    """Evaluate ``attack`` with MeanSparse at each site of ``site_indices`` alone and at sites 0..i, for every α of
    ``alphas``; check the paper's reading at max(α)."""
    from ..report import verdict_lines, verdicts

    s = setup(model, n_examples=n_examples, n_train=n_train, data_source=data_source, device=device,
              use_stored=use_stored, results_dir=results_dir)
    kw = dict(attack=attack, eps=eps, n_iter=n_iter, seed=seed, label="appendix")
    by_kind = {(kind, a): [evaluate_alphas(s, [0.0, a], sites=chosen, site=i, progress=progress, **kw)[1]
                           for i, chosen in site_sets(kind, site_indices)]
               for kind in KINDS for a in alphas}
    bpda = _bpda(s, alphas, site_indices, attack=attack, eps=eps, n_iter=n_iter, seed=seed, progress=progress)

    a = max(alphas)
    base = evaluate_alphas(s, [0.0], progress=False, **kw)[0]  # the α=0 record (stored; the same images)
    single, cum = by_kind[("single", a)], by_kind[("cumulative", a)]
    best = max(single, key=lambda r: r["d_robust"])
    where = (f"Measured on {s.model_name} at α={a:g}; the paper's numbers are for a {PAPER_MODEL} "
             "(not available offline).")
    claim = ("the paper's reading of Table 7 (the gain accumulates: all sites up to the last beat the best single "
             "site; the best single site is chosen after the fact, which favours it)")
    grows = verdicts.gain_grows([(f"best single site ({best['site']})", base, best),
                                 (f"sites 0..{cum[-1]['site']}", base, cum[-1])], name="", claim=claim)
    gain = verdicts.gain_claim(base, cum[-1], claim=f"the paper's claim with sites 0..{cum[-1]['site']} active "
                               "(MeanSparse raises robust accuracy at a small clean cost)")
    lines = [verdict_lines.verdict(grows, where), verdict_lines.verdict(gain)]
    rows = [r for rs in list(by_kind.values()) + list(bpda.values()) for r in rs] + [base]
    return Table7(s, by_kind, base, attack, n_iter, a, bpda, [grows, gain], lines, rows)


def _bpda(s: Setup, alphas, site_indices, **kw) -> dict:
    """BPDA beside the direct attack (:func:`msparse.experiments.beside.bpda`) for each placement and each α of
    ``alphas`` among :data:`msparse.experiments.beside.ALPHAS`: {(kind, α): [row per site, with ``site``]}."""
    from . import beside

    out = {}
    for kind in KINDS:
        for a in alphas:
            rows = [{**got[-1], "site": i} for i, chosen in site_sets(kind, site_indices)
                    if (got := beside.bpda(s, [0.0, a], sites=chosen, **kw))]
            if rows:
                out[(kind, a)] = rows
    return out


def site_sets(kind: str, site_indices):
    """``(i, sites)`` for each site index i: ``[i]`` for the "single" placement, ``0..i`` for "cumulative"."""
    return [(i, [i] if kind == "single" else list(range(i + 1))) for i in site_indices]


def _reference_column(kind: str, alpha: float):
    from ..report import paper

    ref = paper.table("table7")
    col = f"{kind}/{alpha:g}/apgd"
    return ref.column(col) if col in ref.columns else None


def figure(res: Table7):
    """Robust accuracy against the site index, single (left) and cumulative (right), beside the paper's."""
    from ..report import plots

    alphas = sorted({a for _, a in res.by_kind})
    fig, axes = plots.panels(2, ncols=1, height=3.8)
    for ax, kind in zip(axes, KINDS):
        refs = {f"{kind} α={a:g} (paper)": _reference_column(kind, a) for a in alphas}
        ours = {f"{kind} α={a:g}": res.by_kind[(kind, a)] for a in alphas}
        ours.update({f"BPDA {kind} α={a:g}": res.bpda[(kind, a)] for a in alphas if (kind, a) in res.bpda})
        plots.site_profile(ours, ax=ax, title=kind, reference={k: v for k, v in refs.items() if v is not None})
    return fig


def caption(res: Table7, kind: str, alpha: float) -> str:
    """One line saying what :func:`table` shows for ``(kind, alpha)``."""
    n = res.by_kind[(kind, alpha)][0]["n"]
    where = "only at site i" if kind == "single" else "at sites 0..i"
    return (f"**{kind}, α = {alpha:g}** — MeanSparse {where}; clean and {res.attack} ({res.n_iter} iterations, "
            f"ε = {255 * res.base['eps']:.3g}/255) "
            f"accuracy, n = {n} test images, model {res.setup.model_name}; Δ vs α = 0 (paired McNemar); the "
            "paper's APGD column beside it:")


def table(res: Table7, kind: str, alpha: float):
    """Our clean and robust accuracy per site (with Δ vs α = 0) beside the paper's APGD column."""
    from ..report.tables import compare_table

    col = _reference_column(kind, alpha)
    return compare_table(res.by_kind[(kind, alpha)], {"APGD (paper)": col} if col is not None else None,
                         index="site")


def bpda_caption(res: Table7, kind: str, alpha: float) -> str:
    """One line saying what :func:`bpda_table` shows for ``(kind, alpha)``."""
    from .beside import STANDS_NOTE

    rows = res.bpda[(kind, alpha)]
    where = "only at site i" if kind == "single" else "at sites 0..i"
    return (f"The adaptive attack beside it — **BPDA {res.attack}** ({res.n_iter} iterations, identity backward through "
            f"every active site), **{kind}, α = {alpha:g}** (MeanSparse {where}), n = {rows[0]['n']} test images, "
            f"model {res.setup.model_name}: robust accuracy per site (95% Wilson intervals; Δ vs α = 0, paired McNemar). "
            + STANDS_NOTE)


def bpda_table(res: Table7, kind: str, alpha: float):
    """BPDA robust accuracy and the robust accuracy that stands (worst case of the direct attack and BPDA) per
    site, each with Δ vs α = 0, for ``(kind, alpha)``."""
    from ..report.tables import compare_table

    return compare_table(res.bpda[(kind, alpha)], metrics=("robust", "stands"), index="site")


def base_table(res: Table7):
    """The α = 0 row (MeanSparse inactive) every Δ and verdict on the page is measured against."""
    from ..report.tables import compare_table

    return compare_table([res.base])


# ================================================================================================
# the page (msparse.experiments.pages)
# ================================================================================================
@dataclass
class Params:
    """The parameters of the page ``table7_sites`` in the order of its notebook's parameters cell, which is
    rendered from them (:func:`msparse.experiments.pages.render_parameters`)."""
    model: str = param("msparse/resnet18-gelu-w8-pgdat", "the GELU PGD-AT member of the appendix family")
    dataset: str = param("cifar10")
    data_source: str = param("auto", "auto | offline | official")
    n_examples: int = param(500, "test images (paper: 10 000)")
    n_train: int = param(1000, "training images for mu, sigma")
    alphas: list = param([0.35], "alpha at the chosen sites (paper: 0.2 and 0.35)")
    attack: str = param("apgd", "APGD-CE then APGD-DLR, as in the appendix")
    eps: float = param(8 / 255, expr="8 / 255")
    n_iter: int = param(50, "APGD iterations (paper: 100)")
    site_indices: list = param([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
                               "sites to evaluate (all 17, as the paper)")
    device: str = param("cpu", "cpu | cuda | auto")
    seed: int = param(0)
    use_stored: bool = param(True, "reuse stored result records")
    results_dir: str | None = param(None, "None means $MSPARSE_RESULTS or results/")


def _page_claims(kw: dict) -> list:
    """The page's claim for the ledger (:func:`msparse.experiments.claims.run`): the gain with every site active
    (the last cumulative point) at the page's α."""
    from .claims import claim_at

    r7 = run(**kw)
    last = r7.by_kind[("cumulative", r7.alpha)][-1]
    bpda7 = r7.bpda.get(("cumulative", r7.alpha))
    return [claim_at("Table 7", f"sites 0..{last['site']} active", r7.setup.model_name, r7.attack, r7.alpha,
                     [r7.base, last], [r7.base, bpda7[-1]] if bpda7 else None, store=kw.get("results_dir"))]



PAGE = register(Page("table7_sites", "Table 7: single and cumulative sites",
                     "Appendix ablations (ResNet-18)", Params, __name__,
                     quick={"n_examples": 24, "n_train": 256, "n_iter": 5, "alphas": [0.35],
                            "site_indices": [0, 1, 16]}, plan_key="table7",
                     claims=_page_claims, plan_run=grid_plan(run)))
