"""Paper Table 5 (appendix A): the centre of MeanSparse's band — zero, one global mean μ, or the channel mean μ_ch.

The paper keeps the threshold ±α·σ_ch and moves the band's centre: zero (hard thresholding; blocked values become
0), one global mean μ over all channels, or the channel mean μ_ch (MeanSparse), on its GELU ResNet-18 (PGD-AT,
CIFAR-10), clean and APGD (APGD-CE then APGD-DLR, L∞ 8/255) for α from 0 to 0.4 (appendix Table 5). Its reading:
μ_ch keeps clean accuracy best; zero-centring gives higher APGD numbers at a large clean cost (at α = 0.4 clean
79.84% for zero vs 82.85% for μ_ch).

Here the three sweeps run on the project's GELU member of the CPU-route appendix family; checked: the paper's
reading, at α = :data:`BEST_ALPHA` (the α it quotes), that the channel-mean centre keeps clean accuracy best — a
paired comparison of μ_ch against each other centre on the same images
(:func:`msparse.report.verdicts.best_of`) — in ``res.verdict``. The gain claim (robust accuracy rises at a small
clean cost) per centre at α = 0.35 is kept as supporting lines in ``res.verdicts``.

    res = table5.run()                 # stored records are reused; missing points are computed
    table5.figure(res); table5.table(res, "mean"); res.verdict; res.verdicts
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .setup import Setup, setup
from . import beside
from .sweeps import evaluate_alphas
from .pages import Page, grid_plan, param, register

__all__ = ["Table5", "run", "figure", "table", "caption", "PAPER_MODEL", "CLAIM_ALPHA", "BEST_ALPHA", "PAPER_CENTRE"]

#: the paper's model behind Table 5 (reference values in :mod:`msparse.report.paper`)
PAPER_MODEL = "ResNet-18 GELU (PGD-AT)"
#: the α the per-centre gain claim is checked at
CLAIM_ALPHA = 0.35
#: the α of the paper's reading "μ_ch keeps clean accuracy best" (it quotes α = 0.4)
BEST_ALPHA = 0.4
#: msparse centre name → the paper's name
PAPER_CENTRE = {"zero": "zero", "global": "μ (one global mean)", "mean": "μ_ch (MeanSparse)"}


@dataclass
class Table5:
    """Display rows (percent) of each centre's α sweep and one verdict line per centre (both keyed by msparse
    centre name), and the set-up they came from."""
    setup: Setup
    attack: str
    n_iter: int
    rows: dict[str, list[dict]]
    verdicts: dict[str, str] = field(default_factory=dict)
    all_rows: list[dict] = field(default_factory=list)   # every row with a record (provenance)
    verdict: str = ""     # the paper's claim: which centre keeps clean accuracy best (at BEST_ALPHA)
    bpda: list[dict] = field(default_factory=list)   # the mean centre (MeanSparse): BPDA beside the direct attack


def run(model: str = "msparse/resnet18-gelu-w8-pgdat", *, n_examples: int = 500, n_train: int = 1000,
        data_source: str = "auto", alphas=(0.0, 0.1, 0.2, 0.3, 0.35, 0.4), attack: str = "apgd",
        eps: float = 8 / 255, n_iter: int = 50, centres=("zero", "global", "mean"), device: str = "cpu",
        seed: int = 0, use_stored: bool = True, results_dir: str | None = None, progress: bool = True) -> Table5:
    """Sweep α with the band centred at each of ``centres`` (at every site) on the first ``n_examples`` test
    images; check the gain claim at :data:`CLAIM_ALPHA` for each."""
    from ..report.verdict_lines import alpha_verdict

    s = setup(model, n_examples=n_examples, n_train=n_train, data_source=data_source, device=device,
              use_stored=use_stored, results_dir=results_dir)
    kw = dict(attack=attack, eps=eps, n_iter=n_iter, seed=seed, label="appendix", progress=progress)
    rows = {c: evaluate_alphas(s, alphas, centre=c, **kw) for c in centres}
    verdicts = {c: alpha_verdict(s, rows[c], PAPER_MODEL, CLAIM_ALPHA) for c in centres}
    bpda = beside.bpda(s, alphas, attack=attack, eps=eps, n_iter=n_iter, seed=seed, progress=progress) \
        if "mean" in centres else []
    return Table5(s, attack, n_iter, rows, verdicts, [r for rs in rows.values() for r in rs] + bpda,
                  best_centre_verdict(s, rows), bpda)


def best_centre_verdict(s: Setup, rows: dict[str, list[dict]], alpha: float = BEST_ALPHA) -> str:
    """The paper's reading: at ``alpha`` the channel-mean centre's clean accuracy is higher than each other
    centre's, on the same images (per-image clean flags read from the records; paired exact McNemar per pair)."""
    import math

    from ..report import verdicts as vd
    from ..report.tables import clean_flags

    claim = vd.BEST_CENTRE_CLAIM.replace("the same α", f"α = {alpha:g}")
    if s.is_random:
        return vd.not_evaluated(claim, "this run used random weights (infrastructure test)").markdown()
    at = {c: next((r for r in rs if math.isclose(r["alpha"], alpha, abs_tol=1e-9)), None) for c, rs in rows.items()}
    if "mean" not in at or len(at) < 2 or any(r is None for r in at.values()):
        return vd.not_evaluated(claim, f"the mean centre and another centre were not both evaluated at α = {alpha:g}"
                                ).markdown()
    flags = {c: clean_flags(s.store, r) for c, r in at.items()}
    if any(f is None for f in flags.values()):
        return vd.not_evaluated(claim, "the records' per-image clean flags are not stored (use_stored=False)"
                                ).markdown()
    return vd.best_of(flags, "mean", claim=claim).markdown() + (
        f" The paper's own numbers for this reading are for {PAPER_MODEL}; the comparison is checked on the model "
        "evaluated here.")


def _refcols(c: str) -> dict | None:
    from ..report import paper

    ref = paper.table("table5")
    if f"{c}/clean" not in ref.columns:
        return None
    return {f"{c} {k} (paper)": ref.column(f"{c}/{k}") for k in ("clean", "apgd")}


def caption(res: Table5, centre: str) -> str:
    """One line saying what :func:`table` shows for ``centre``: centre, attack, n, α, model."""
    from ..report.tables import sweep_caption

    return (f"**centre = {centre}** (paper: {PAPER_CENTRE.get(centre, centre)}) — `{res.setup.model_name}`: "
            f"{sweep_caption(res.rows[centre], res.attack, res.n_iter)}; beside the paper's {PAPER_MODEL} columns "
            "for this centre")


def figure(res: Table5):
    """One panel per centre: ours (95% bands) beside the paper's clean and APGD columns for that centre."""
    from ..report import plots

    fig, axes = plots.panels(len(res.rows), height=4.2)
    for ax, (c, r) in zip(axes, res.rows.items()):
        plots.alpha_sweep(r, ax=ax, title=f"centre: {c}", reference=_refcols(c))
        if c == "mean":
            beside.plot(ax, res.bpda, res.attack)
    return fig


def table(res: Table5, centre: str = "mean"):
    """Ours with the band at ``centre`` beside the paper's Table 5 columns for that centre."""
    from ..report.tables import compare_table

    return compare_table(res.rows[centre], _refcols(centre))


# ================================================================================================
# the page (msparse.experiments.pages)
# ================================================================================================
@dataclass
class Params:
    """The parameters of the page ``table5_centre`` in the order of its notebook's parameters cell, which is
    rendered from them (:func:`msparse.experiments.pages.render_parameters`)."""
    model: str = param("msparse/resnet18-gelu-w8-pgdat", "the GELU PGD-AT member of the appendix family")
    dataset: str = param("cifar10")
    data_source: str = param("auto", "auto | offline | official")
    n_examples: int = param(500, "test images (paper: 10 000)")
    n_train: int = param(1000, "training images for mu, sigma")
    alphas: list = param([0.0, 0.1, 0.2, 0.3, 0.35, 0.4], "the paper sweeps 0 to 0.4 in steps of 0.05")
    attack: str = param("apgd", "APGD-CE then APGD-DLR, as in the appendix")
    eps: float = param(8 / 255, expr="8 / 255")
    n_iter: int = param(50, "APGD iterations (paper: 100)")
    centres: list = param(["zero", "global", "mean"], "msparse centre names (paper: zero, mu, mu_ch)")
    device: str = param("cpu", "cpu | cuda | auto")
    seed: int = param(0)
    use_stored: bool = param(True, "reuse stored result records")
    results_dir: str | None = param(None, "None means $MSPARSE_RESULTS or results/")


def _page_claims(kw: dict) -> list:
    """The page's claims for the ledger (:func:`msparse.experiments.claims.run`): the gain at :data:`CLAIM_ALPHA`
    with each centre (with BPDA for the channel mean)."""
    from .claims import claim_at

    r5 = run(**kw)
    return [claim_at("Table 5", f"centre {centre}", r5.setup.model_name, r5.attack, CLAIM_ALPHA, rs,
                     r5.bpda if centre == "mean" else None, store=kw.get("results_dir"))
            for centre, rs in r5.rows.items()]



PAGE = register(Page("table5_centre", "Table 5: centre reference",
                     "Appendix ablations (ResNet-18)", Params, __name__,
                     quick={"n_examples": 24, "n_train": 256, "n_iter": 5, "alphas": [0.0, 0.35]}, plan_key="table5",
                     claims=_page_claims, plan_run=grid_plan(run)))
