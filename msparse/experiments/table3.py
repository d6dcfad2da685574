"""Paper Table 3 (appendix A): MeanSparse on the GELU ResNet-18 under an L∞ and an L2 attacker.

The paper evaluates its GELU ResNet-18 (PGD-AT against L∞ 8/255, CIFAR-10) with APGD under L∞ 8/255 and under L2
128/255, for α from 0 to 0.4 (appendix Table 3), and reads a gain under both threat models: MeanSparse's gain,
tuned for L∞, carries over to an L2 attacker (APGD L2 59.98% at α = 0 → 61.74% at α = 0.35).

Here the same two sweeps run on the project's GELU member of the CPU-route appendix family; checked: the paper's
gain claim (robust accuracy rises at a small clean cost) at α = 0.35, once under L∞ and once under L2.

    res = table3.run()                 # stored records are reused; missing points are computed
    table3.figure(res); table3.table(res, "Linf"); table3.table(res, "L2"); res.verdicts
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .setup import Setup, setup
from . import beside
from .sweeps import evaluate_alphas
from .pages import Page, grid_plan, param, register

__all__ = ["Table3", "run", "figure", "table", "caption", "PAPER_MODEL", "CLAIM_ALPHA"]

#: the paper's model behind Table 3 (reference values in :mod:`msparse.report.paper`)
PAPER_MODEL = "ResNet-18 GELU (PGD-AT)"
#: the α the claim is checked at
CLAIM_ALPHA = 0.35


@dataclass
class Table3:
    """Display rows (percent) of the L∞ and L2 sweeps, one verdict line per threat model ({"Linf": ..., "L2":
    ...}), and the set-up they came from."""
    setup: Setup
    attack: str
    n_iter: int
    eps: float
    eps_l2: float
    linf: list[dict]
    l2: list[dict]
    verdicts: dict[str, str] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)   # every row with a record (provenance)
    bpda: list[dict] = field(default_factory=list)   # L∞: the adaptive attack beside the direct one


def run(model: str = "msparse/resnet18-gelu-w8-pgdat", *, n_examples: int = 500, n_train: int = 1000,
        data_source: str = "auto", alphas=(0.0, 0.1, 0.2, 0.3, 0.35, 0.4), attack: str = "apgd",
        eps: float = 8 / 255, n_iter: int = 50, eps_l2: float = 128 / 255, device: str = "cpu", seed: int = 0,
        use_stored: bool = True, results_dir: str | None = None, progress: bool = True) -> Table3:
    """Sweep α under L∞ ``eps`` and under L2 ``eps_l2`` on the first ``n_examples`` test images; check the gain
    claim at :data:`CLAIM_ALPHA` under each."""
    from ..report.verdict_lines import alpha_verdict

    s = setup(model, n_examples=n_examples, n_train=n_train, data_source=data_source, device=device,
              use_stored=use_stored, results_dir=results_dir)
    kw = dict(attack=attack, n_iter=n_iter, seed=seed, label="appendix", progress=progress)
    linf = evaluate_alphas(s, alphas, eps=eps, norm="Linf", **kw)
    l2 = evaluate_alphas(s, alphas, eps=eps_l2, norm="L2", **kw)
    verdicts = {"Linf": alpha_verdict(s, linf, PAPER_MODEL, CLAIM_ALPHA, "L∞"),
                "L2": alpha_verdict(s, l2, PAPER_MODEL, CLAIM_ALPHA, "L2")}
    bpda = beside.bpda(s, alphas, attack=attack, eps=eps, n_iter=n_iter, seed=seed, progress=progress)
    return Table3(s, attack, n_iter, eps, eps_l2, linf, l2, verdicts, linf + l2 + bpda, bpda)


def _rows(res: Table3, norm: str) -> list[dict]:
    if norm not in ("Linf", "L2"):
        raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
    return res.linf if norm == "Linf" else res.l2


def caption(res: Table3, norm: str) -> str:
    """One line saying what :func:`table` shows for ``norm``: attack, radius, n, α, model."""
    r = _rows(res, norm)
    alphas = ", ".join(f"{x['alpha']:g}" for x in r)
    radius = f"L∞ {255 * res.eps:.0f}/255" if norm == "Linf" else f"L2 {255 * res.eps_l2:.0f}/255"
    what = "clean and " if norm == "Linf" else ""
    return (f"**{radius}** — {what}{res.attack} ({radius}, {res.n_iter} iterations) on `{res.setup.model_name}`, "
            f"n = {r[0]['n']} test images, α ∈ {{{alphas}}}; beside the paper's {PAPER_MODEL} numbers")


def figure(res: Table3):
    """L∞ (clean and robust) and L2 (robust) panels, ours (95% bands) beside the paper's columns."""
    from ..report import paper, plots

    ref = paper.table("table3")
    fig, axes = plots.panels(2, height=4.2)
    plots.alpha_sweep(res.linf, ax=axes[0], title=f"L∞ {255 * res.eps:.0f}/255",
                      reference={"clean (paper)": ref.column("clean"), "APGD L∞ (paper)": ref.column("apgd-linf")})
    beside.plot(axes[0], res.bpda, res.attack)
    plots.alpha_sweep(res.l2, ax=axes[1], title=f"L2 {255 * res.eps_l2:.0f}/255", metrics=("robust",),
                      reference={"APGD L2 (paper)": ref.column("apgd-l2")})
    return fig


def table(res: Table3, norm: str = "Linf"):
    """Ours under ``norm`` ("Linf": clean and robust; "L2": robust) beside the paper's Table 3 columns."""
    from ..report import paper
    from ..report.tables import compare_table

    ref = paper.table("table3")
    if norm == "Linf":
        return compare_table(res.linf, {"clean (paper)": ref.column("clean"),
                                        "APGD L∞ (paper)": ref.column("apgd-linf")})
    return compare_table(_rows(res, norm), {"APGD L2 (paper)": ref.column("apgd-l2")}, metrics=("robust",))


# ================================================================================================
# the page (msparse.experiments.pages)
# ================================================================================================
@dataclass
class Params:
    """The parameters of the page ``table3_threat_models`` in the order of its notebook's parameters cell, which is
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
    eps_l2: float = param(128 / 255, "the paper's L2 radius", expr="128 / 255")
    device: str = param("cpu", "cpu | cuda | auto")
    seed: int = param(0)
    use_stored: bool = param(True, "reuse stored result records")
    results_dir: str | None = param(None, "None means $MSPARSE_RESULTS or results/")


def _page_claims(kw: dict) -> list:
    """The page's claims for the ledger (:func:`msparse.experiments.claims.run`): the gain at :data:`CLAIM_ALPHA`
    under the L∞ attacker (with BPDA) and the L2 attacker."""
    from .claims import claim_at

    r3 = run(**kw)
    store = kw.get("results_dir")
    return [claim_at("Table 3", "L∞ attacker", r3.setup.model_name, r3.attack, CLAIM_ALPHA, r3.linf, r3.bpda,
                     store=store),
            claim_at("Table 3", "L2 attacker", r3.setup.model_name, r3.attack, CLAIM_ALPHA, r3.l2, store=store)]



PAGE = register(Page("table3_threat_models", "Table 3: L∞ vs L2",
                     "Appendix ablations (ResNet-18)", Params, __name__,
                     quick={"n_examples": 24, "n_train": 256, "n_iter": 5, "alphas": [0.0, 0.35]}, plan_key="table3",
                     claims=_page_claims, plan_run=grid_plan(run)))
