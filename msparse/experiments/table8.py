"""Paper Table 8 (appendix): MeanSparse only on the main path, or only after the residual addition.

The paper sweeps α from 0 to 0.4 on its GELU ResNet-18 with MeanSparse only at the main-path activations (odd
site indices 1…15) or only at the activations after the residual addition (even indices 2…16); the stem (index
0) is in neither set. Both placements raise APGD accuracy a little at a small clean cost. The paper's model is
not available offline, so the claim "MeanSparse raises robust accuracy at a small clean cost" is checked for each
placement at α = 0.35 (:data:`CLAIM_ALPHA`) on the project's CPU-route appendix family (default: the GELU PGD-AT
ResNet-18 of width 8; :func:`msparse.report.verdict_lines.alpha_verdict`). ``with_stem`` also evaluates after-addition
∪ {0}.

    res = table8.run()                 # stored records are reused; missing points are computed
    table8.figure(res); table8.table(res, "main_path"); res.verdicts
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .setup import Setup, setup
from . import beside
from .sweeps import evaluate_alphas
from .pages import Page, grid_plan, param, register

__all__ = ["Table8", "run", "figure", "table", "caption", "GROUPS_CHECKED", "CLAIM_ALPHA", "PAPER_MODEL"]

#: the α the claim is checked at, and the placements it is checked for
CLAIM_ALPHA = 0.35
GROUPS_CHECKED = ("main_path", "after_add")
#: the paper's model behind Table 8 (reference values in :mod:`msparse.report.paper`)
PAPER_MODEL = "ResNet-18 GELU (PGD-AT)"


@dataclass
class Table8:
    """Display rows (percent) of one α sweep per site group (``by_group``), the sites of each group, the verdict
    per checked group (``verdicts[group]``, Markdown) and the set-up they came from."""
    setup: Setup
    groups: dict               # {group: [site indices]}
    by_group: dict             # {group: [row per α]}
    attack: str
    n_iter: int
    verdicts: dict = field(default_factory=dict)   # {group: verdict line (Markdown)}
    rows: list[dict] = field(default_factory=list)  # every row with a record (provenance)
    bpda: dict = field(default_factory=dict)       # {group: BPDA rows beside the direct attack (beside.ALPHAS)}


def run(model: str = "msparse/resnet18-gelu-w8-pgdat", *, data_source: str = "auto", n_examples: int = 500,
        n_train: int = 1000, alphas=(0.0, 0.1, 0.2, 0.3, 0.35, 0.4), attack: str = "apgd", eps: float = 8 / 255,
        n_iter: int = 50, with_stem: bool = False, device: str = "cpu", seed: int = 0, use_stored: bool = True,
        results_dir: str | None = None, progress: bool = True) -> Table8:
    """Sweep α with MeanSparse on the main-path sites only and on the after-addition sites only (and, with
    ``with_stem``, after-addition plus the stem); check the gain claim at :data:`CLAIM_ALPHA` for each."""
    from ..report.verdict_lines import alpha_verdict

    s = setup(model, n_examples=n_examples, n_train=n_train, data_source=data_source, device=device,
              use_stored=use_stored, results_dir=results_dir)
    kw = dict(attack=attack, eps=eps, n_iter=n_iter, seed=seed, label="appendix", progress=progress)
    groups = {"main_path": [t.index for t in s.sites if "main_path" in t.tags],
              "after_add": [t.index for t in s.sites if "after_add" in t.tags]}
    if with_stem:
        groups["after_add+stem"] = [0] + groups["after_add"]
    by_group = {g: evaluate_alphas(s, alphas, sites=idx, **kw) for g, idx in groups.items()}
    lines = {g: alpha_verdict(s, by_group[g], PAPER_MODEL, CLAIM_ALPHA) for g in GROUPS_CHECKED}
    bpda = {g: beside.bpda(s, alphas, attack=attack, eps=eps, n_iter=n_iter, seed=seed, progress=progress,
                           sites=groups[g]) for g in GROUPS_CHECKED}
    return Table8(s, groups, by_group, attack, n_iter, lines,
                  [r for rs in [*by_group.values(), *bpda.values()] for r in rs], bpda)


def _reference(group: str, label=lambda k: f"{k} (paper)") -> dict:
    from ..report import paper

    ref = paper.table("table8")
    return {label(k): ref.column(f"{group}/{k}") for k in ("clean", "apgd") if f"{group}/{k}" in ref.columns}


def figure(res: Table8):
    """One panel per site group: our clean and robust accuracy against α beside the paper's."""
    from ..report import plots

    fig, axes = plots.panels(len(res.by_group), height=4.2)
    for ax, (g, r) in zip(axes, res.by_group.items()):
        plots.alpha_sweep(r, ax=ax, title=f"{g}: sites {res.groups[g]}",
                          reference=_reference(g, lambda k, g=g: f"{g} {k} (paper)"))
        beside.plot(ax, res.bpda.get(g, []), res.attack)
    return fig


def caption(res: Table8, group: str) -> str:
    """One line saying what :func:`table` shows for ``group``."""
    r = res.by_group[group][0]
    return (f"**{group}** (MeanSparse at sites {res.groups[group]} only) — clean and {res.attack} "
            f"({res.n_iter} iterations, ε = {255 * r['eps']:.3g}/255) accuracy against α, n = {r['n']} test images, "
            f"model {res.setup.model_name}; Δ vs α = 0 (paired McNemar); the paper's columns beside it:")


def table(res: Table8, group: str):
    """Our clean and robust accuracy per α for ``group`` beside the paper's Table 8 columns."""
    from ..report.tables import compare_table

    return compare_table(res.by_group[group], _reference(group))


# ================================================================================================
# the page (msparse.experiments.pages)
# ================================================================================================
@dataclass
class Params:
    """The parameters of the page ``table8_main_vs_add`` in the order of its notebook's parameters cell, which is
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
    with_stem: bool = param(False, "also evaluate after_add plus the stem site 0")
    device: str = param("cpu", "cpu | cuda | auto")
    seed: int = param(0)
    use_stored: bool = param(True, "reuse stored result records")
    results_dir: str | None = param(None, "None means $MSPARSE_RESULTS or results/")


def _page_claims(kw: dict) -> list:
    """The page's claims for the ledger (:func:`msparse.experiments.claims.run`): the gain at :data:`CLAIM_ALPHA`
    of each site group of :data:`GROUPS_CHECKED`."""
    from .claims import claim_at

    r8 = run(**kw)
    return [claim_at("Table 8", f"site group {g}", r8.setup.model_name, r8.attack, CLAIM_ALPHA, r8.by_group.get(g),
                     r8.bpda.get(g), store=kw.get("results_dir")) for g in GROUPS_CHECKED]



PAGE = register(Page("table8_main_vs_add", "Table 8: main path vs after addition",
                     "Appendix ablations (ResNet-18)", Params, __name__,
                     quick={"n_examples": 24, "n_train": 256, "n_iter": 5, "alphas": [0.0, 0.35]}, plan_key="table8",
                     claims=_page_claims, plan_run=grid_plan(run)))
