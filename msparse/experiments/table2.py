"""Paper Table 2 (appendix A): MeanSparse on ResNet-18s with six activation functions, clean and APGD vs α.

The paper trains ResNet-18s with ReLU, ELU, GELU, SiLU, PSiLU and PSSiLU (PGD-AT, CIFAR-10) and reports clean and
APGD (APGD-CE then APGD-DLR, L∞ 8/255, 100 iterations) accuracy for α from 0 to 0.4 (appendix Table 2). Its claim:
MeanSparse helps every activation, most the smooth ones; at α = 0.35 its APGD gains range from +0.95 pp (ELU) to
+2.25 pp (SiLU) at a clean cost of at most 1.31 pp.

Here the same sweep runs on the project's CPU-route appendix family (narrow ResNet-18s, one per activation, each
when its checkpoint exists). Checked: the paper's gain claim at α = 0.35 on the GELU model (the headline verdict)
and on each other activation, and RobustBench's adaptive finding that under BPDA (identity backward through every
MeanSparse site) the worst case of the direct and the BPDA attack is no better than the base model.

    res = table2.run()                 # stored records are reused; missing points are computed
    table2.figure(res); table2.table(res, name); table2.bpda_table(res); res.verdict
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .setup import Setup, setup, try_setup, activation_of
from .sweeps import evaluate_alphas, pooled_rows
from .pages import Page, param, register

__all__ = ["Table2", "run", "figure", "table", "bpda_table", "caption", "bpda_caption", "ACTIVATIONS", "PAPER_MODEL",
           "CLAIM", "CLAIM_ALPHA", "bpda_claim", "DEFAULT_OTHER_MODELS"]

#: activation name of a family model → the paper's column label in Table 2
ACTIVATIONS = {"gelu": "GELU", "relu": "ReLU", "elu": "ELU", "silu": "SiLU", "psilu": "PSiLU", "pssilu": "PSSiLU"}
#: the paper's models behind Table 2 (reference values in :mod:`msparse.report.paper`)
PAPER_MODEL = "ResNet-18 (full width, PGD-AT, 200 epochs) with each activation"
#: the claim checked, and the α it is checked at
CLAIM = "APGD rises with alpha at small clean cost"
CLAIM_ALPHA = 0.35
DEFAULT_OTHER_MODELS = ("msparse/resnet18-relu-w8-pgdat", "msparse/resnet18-elu-w8-pgdat",
                        "msparse/resnet18-silu-w8-pgdat", "msparse/resnet18-psilu-w8-pgdat",
                        "msparse/resnet18-pssilu-w8-pgdat")


def bpda_claim(attack: str) -> str:
    """RobustBench's adaptive finding, worded for ``attack`` on this family."""
    return ("RobustBench's finding, on this family (no paper values exist for BPDA on these models): the worst case "
            f"of {attack} and BPDA at α is no better than the base model")


@dataclass
class Table2:
    """Display rows (percent) of every activation's α sweep and of the BPDA re-attacks, the verdict lines, and the
    set-ups they came from. ``rows``/``setups``/``activations``/``verdicts`` are keyed by model name, the page's
    ``model`` first; ``bpda_rows`` are the rows of the BPDA table; ``bpda_verdicts`` are ``(prefix, verdict)``."""
    setup: Setup
    attack: str
    n_iter: int
    rows: dict[str, list[dict]]
    setups: dict[str, Setup]
    activations: dict[str, str]                  # model → activation name ("gelu", ...)
    missing: dict[str, str]                      # model → why it was not evaluated
    missing_verdicts: list[str]
    verdict: str                                 # the headline: the gain claim on the page's model
    verdicts: dict[str, str]                     # model → the gain claim on that model
    bpda: dict[str, list[dict]] = field(default_factory=dict)
    bpda_rows: list[dict] = field(default_factory=list)
    bpda_verdicts: list[tuple[str, str]] = field(default_factory=list)
    all_rows: list[dict] = field(default_factory=list)   # every row with a record (provenance)

    def label(self, name: str) -> str:
        """The paper's label of ``name``'s activation (e.g. "GELU"), or the activation name."""
        a = self.activations.get(name, "")
        return ACTIVATIONS.get(a, a)


def run(model: str = "msparse/resnet18-gelu-w8-pgdat", *, n_examples: int = 500, n_train: int = 1000,
        data_source: str = "auto", alphas=(0.0, 0.1, 0.2, 0.3, 0.35, 0.4), attack: str = "apgd",
        eps: float = 8 / 255, n_iter: int = 50, other_models=DEFAULT_OTHER_MODELS, bpda_alphas=(0.2, 0.35),
        device: str = "cpu", seed: int = 0, use_stored: bool = True, results_dir: str | None = None,
        progress: bool = True) -> Table2:
    """Sweep α on ``model`` and each of ``other_models`` that is available here; re-attack the ``bpda_alphas``
    that are among ``alphas`` with BPDA; check :data:`CLAIM` at :data:`CLAIM_ALPHA` and :func:`bpda_claim`."""
    from ..report import verdict_lines as vl, verdicts as vd

    common = dict(n_examples=n_examples, n_train=n_train, data_source=data_source, device=device,
                  use_stored=use_stored, results_dir=results_dir)
    s = setup(model, **common)
    kw = dict(attack=attack, eps=eps, n_iter=n_iter, seed=seed, label="appendix", progress=progress)
    rows, setups, missing = {model: evaluate_alphas(s, alphas, **kw)}, {model: s}, {}
    for name in other_models:
        s2, why = try_setup(name, **common)
        if s2 is None:
            missing[name] = why
        else:
            setups[name] = s2
            rows[name] = evaluate_alphas(s2, alphas, **kw)
    activations = {name: activation_of(st.model) for name, st in setups.items()}

    verdict = vl.alpha_verdict(s, rows[model], PAPER_MODEL, CLAIM_ALPHA, CLAIM)
    per_model = {}
    for name, r in rows.items():
        act = ACTIVATIONS.get(activations[name], activations[name])
        per_model[name] = verdict if name == model else vl.alpha_verdict(
            s, r, f"ResNet-18 {act} (full width, PGD-AT, 200 epochs)", CLAIM_ALPHA, CLAIM)
    missing_verdicts = [vl.verdict("not evaluated here", f"`{name}`: {why}") for name, why in missing.items()]

    # the same attack under BPDA, beside the direct attack's α
    bpda, bpda_at = {}, [a for a in bpda_alphas if a in alphas and a > 0]
    for name in (rows if bpda_at else []):
        bpda[name] = evaluate_alphas(setups[name], [0.0, *bpda_at], **{**kw, "attack": f"bpda:{attack}"})
    table, checks = [], []
    claim = bpda_claim(attack)
    for name, rb in bpda.items():
        direct = {r["alpha"]: r for r in rows[name]}
        for r in rb[1:]:
            # the robust accuracy that stands: every stored attack on these images, pooled (BPDA among them)
            w0, w = pooled_rows([direct[0.0], direct[r["alpha"]]], store=setups[name].store)
            table.append({"model": name, "α": r["alpha"], f"{attack} at α=0 (%)": round(direct[0.0]["robust"], 1),
                          f"{attack} (%)": round(direct[r["alpha"]]["robust"], 1),
                          f"BPDA {attack} (%)": round(r["robust"], 1), "stands (%)": round(w["robust"], 1),
                          "stands − α=0 (pp)": round(w["d_robust"], 1), "McNemar p": f"{w['p_robust']:.2g}"})
            checks.append((f"`{name}`, α={r['alpha']:g}: ",
                           vl.verdict(vd.no_better_than_base(w0, w, claim=claim, what="worst-case robust"))))
    if not checks:
        checks = [("", vl.verdict(vd.not_evaluated(claim, "no BPDA run (no bpda_alphas among alphas)")))]
    all_rows = [r for rs in [*rows.values(), *bpda.values()] for r in rs]
    return Table2(s, attack, n_iter, rows, setups, activations, missing, missing_verdicts, verdict, per_model,
                  bpda, table, checks, all_rows)


def caption(res: Table2, name: str) -> str:
    """One line saying what :func:`table` shows for ``name``: model, activation, attack, n, α."""
    from ..report.tables import sweep_caption

    return (f"**{res.label(name)}** — `{name}`: {sweep_caption(res.rows[name], res.attack, res.n_iter)}; beside "
            f"the paper's ResNet-18 {res.label(name)} columns")


def bpda_caption(res: Table2) -> str:
    """One line saying what :func:`bpda_table` shows: attacks, n, α, models."""
    if not res.bpda:
        return ""
    r = next(iter(res.bpda.values()))
    alphas = ", ".join(f"{x['alpha']:g}" for x in r[1:])
    models = ", ".join(f"`{m}`" for m in res.bpda)
    return (f"{res.attack} and BPDA {res.attack} (L∞ {255 * r[0]['eps']:.0f}/255, {res.n_iter} iterations) on n = "
            f"{r[0]['n']} test images at α ∈ {{{alphas}}} (and α = 0); models: {models}")


def figure(res: Table2):
    """One panel per activation: ours (95% bands) beside the paper's clean and APGD curves for that activation."""
    from ..report import paper, plots

    ref = paper.table("table2")
    fig, axes = plots.panels(len(res.rows), height=3.9)
    for ax, (name, r) in zip(axes, res.rows.items()):
        act = res.label(name)
        plots.alpha_sweep(r, ax=ax, title=f"{name} ({act})", labels={"robust": f"{res.attack} (ours)"},
                          reference={f"{act} {k} (paper)": ref.column(f"{act}/{k}") for k in ("clean", "apgd")}
                          if act in ACTIVATIONS.values() else None)
        if res.bpda.get(name):   # the adaptive attack beside the direct one, where its records exist
            plots.alpha_sweep(res.bpda[name], ax=ax, metrics=("robust",), colors=["#9467bd"], markers=["v"],
                              labels={"robust": f"BPDA {res.attack} (ours)"})
    return fig


def table(res: Table2, name: str | None = None):
    """Ours for ``name`` (default: the page's model) beside the paper's Table 2 columns of its activation."""
    from ..report import paper
    from ..report.tables import compare_table

    name = name or res.setup.model_name
    act = res.label(name)
    ref = paper.table("table2")
    refcols = ({f"{act} {k} (paper)": ref.column(f"{act}/{k}") for k in ("clean", "apgd")}
               if act in ACTIVATIONS.values() else None)
    return compare_table(res.rows[name], refcols)


def bpda_table(res: Table2):
    """Per model and BPDA α: the direct attack at α = 0 and at α, BPDA at α, their per-image worst case, and its
    paired difference from α = 0 (None when no BPDA run)."""
    import pandas as pd

    return pd.DataFrame(res.bpda_rows).set_index(["model", "α"]) if res.bpda_rows else None


# ================================================================================================
# the page (msparse.experiments.pages)
# ================================================================================================
@dataclass
class Params:
    """The parameters of the page ``table2_activations`` in the order of its notebook's parameters cell, which is
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
    other_models: list = param(["msparse/resnet18-relu-w8-pgdat", "msparse/resnet18-elu-w8-pgdat",
                               "msparse/resnet18-silu-w8-pgdat", "msparse/resnet18-psilu-w8-pgdat",
                               "msparse/resnet18-pssilu-w8-pgdat"],
                               "the other activations (each runs when its checkpoint exists)")
    bpda_alphas: list = param([0.2, 0.35], "alphas re-attacked with BPDA (identity backward through MeanSparse)")
    device: str = param("cpu", "cpu | cuda | auto")
    seed: int = param(0)
    use_stored: bool = param(True, "reuse stored result records")
    results_dir: str | None = param(None, "None means $MSPARSE_RESULTS or results/")


def _page_claims(kw: dict) -> list:
    """The page's claims for the ledger (:func:`msparse.experiments.claims.run`): the gain at :data:`CLAIM_ALPHA`
    of each activation's model."""
    from .claims import claim_at

    r2 = run(**kw)
    return [claim_at("Table 2", f"{r2.activations.get(name, name)} activation", name, r2.attack, CLAIM_ALPHA, rs,
                     r2.bpda.get(name), store=kw.get("results_dir")) for name, rs in r2.rows.items()]


def _plan_run(it, model: str, kw: dict, progress: bool) -> tuple[str, ...]:
    """One item of the paper plan (:func:`msparse.experiments.plan.run_plan`): the α grid on one activation's
    model (the plan lists each activation as its own item)."""
    run(model, alphas=it.alphas, other_models=(), attack=it.attack, progress=progress, **kw)
    return (it.attack,)


PAGE = register(Page("table2_activations", "Table 2: activation functions",
                     "Appendix ablations (ResNet-18)", Params, __name__,
                     quick={"n_examples": 24, "n_train": 256, "n_iter": 5, "alphas": [0.0, 0.35]}, plan_key="table2",
                     claims=_page_claims, plan_run=_plan_run))
