"""Paper Table 1: clean and APGD-CE accuracy against α, on test and training images.

The paper evaluates its four leading models for α from 0 (the base) to 0.5, L∞ 8/255, APGD-CE with 100
iterations, on CIFAR-10 test and training images, and picks α = 0.25 (RaWRN-70-16) / 0.20 (WRN-70-16) as "the
highest robustness while maintaining clean accuracy" — chosen on the test set. Their weights are not available
offline, so the claim is checked on the model given here (default: the shipped offline default).

Beside the direct attack, the adaptive one (BPDA: the same attack with the identity backward through every site)
on the same test images, and whether the verdict depends on n (the claim re-checked on the first half of the
images, :func:`msparse.report.verdicts.fragility_note`).

    res = table1.run()                 # stored records are reused; missing points are computed
    table1.figure(res); table1.table(res); table1.bpda_table(res); res.verdict; res.fragility
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .setup import Setup, check_count, setup
from .sweeps import evaluate_alphas, budget_gaps, pooled_rows, stands
from .pages import Page, param, register

__all__ = ["Table1", "run", "figure", "table", "caption", "bpda_table", "bpda_caption", "claim_table",
           "claim_caption", "claim_line", "N_CLAIM", "PAPER_MODELS", "CLAIM", "CLAIM_ALPHA", "CLAIM_ATTACKS"]

#: the paper's models behind Table 1 (reference values in :mod:`msparse.report.paper`)
PAPER_MODELS = "RaWRN-70-16 / WRN-70-16 / ConvNeXt-L / RaWRN-101-2"
#: the claim checked, and the α it is checked at (the paper's choice for RaWRN-70-16)
CLAIM = "APGD-CE rises with α at almost unchanged clean accuracy"
CLAIM_ALPHA = 0.25
#: the page's n_claim: the claim re-checked on all 1000 test images of the offline subset
N_CLAIM = 1000
#: the attacks of the claim at ``n_claim`` images: label -> attack mode prefix ("" = the page's attack itself)
CLAIM_ATTACKS = {"direct (official gradient)": "", "BPDA": "bpda", "surrogate": "surrogate"}


@dataclass
class Table1:
    """Display rows (percent; :func:`msparse.report.tables.display_rows`) of the test and training sweeps, the
    verdict line, and the set-up they came from."""
    setup: Setup
    test: list[dict]
    train: list[dict]
    attack: str
    verdict: str = ""
    rows: list[dict] = field(default_factory=list)   # every row with a record (provenance)
    bpda: list[dict] = field(default_factory=list)   # the adaptive attack on the test images (display rows)
    fragility: str = ""   # set when the verdict differs on the first half of the images
    n_iter: int = 0
    claim: dict = field(default_factory=dict)   # {label of CLAIM_ATTACKS: [row at α = 0, row at CLAIM_ALPHA]} on n_claim
    claim_worst: list = field(default_factory=list)   # their per-image worst case (the robust accuracy that stands)
    claim_verdict: object = None                # RefereeVerdict at n_claim


def run(model: str = "msparse/default", *, n_examples: int = 100, n_train: int = 1000, data_source: str = "auto",
        alphas=(0.0, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5), train_alphas=(0.0, 0.25, 0.5),
        attack: str = "apgd-ce", eps: float = 8 / 255, n_iter: int = 20, seed: int = 0, device: str = "cpu",
        use_stored: bool = True, results_dir: str | None = None, progress: bool = True,
        adaptive: str | None = "bpda", n_claim: int | None = None) -> Table1:
    """Sweep α on the first ``n_examples`` test images and as many training images, and ``adaptive:attack`` (None:
    no adaptive attack) on the test images; check :data:`CLAIM` and whether its verdict depends on n. With
    ``n_claim`` (> ``n_examples``, e.g. all 1000 images of the offline subset): the claim again at α = 0 and
    :data:`CLAIM_ALPHA` on the first ``n_claim`` test images under each of :data:`CLAIM_ATTACKS`, with the
    referee's verdict on the per-image worst case (:func:`msparse.report.referee.referee_verdict`)."""
    from ..report.verdict_lines import alpha_verdict

    if n_claim is not None:
        check_count("n_claim", n_claim, "test images for the claim; 0 or None: skip")
    s = setup(model, n_examples=n_examples, n_train=n_train, data_source=data_source, device=device,
              use_stored=use_stored, results_dir=results_dir)
    kw = dict(attack=attack, eps=eps, n_iter=n_iter, seed=seed, label="table1", progress=progress)
    test = evaluate_alphas(s, alphas, split="test", **kw)
    train = evaluate_alphas(s, train_alphas, split="train", **kw)
    bpda = evaluate_alphas(s, alphas, split="test", **{**kw, "attack": f"{adaptive}:{attack}"}) if adaptive else []
    verdict = alpha_verdict(s, test, PAPER_MODELS, CLAIM_ALPHA, CLAIM)
    res = Table1(s, test, train, attack, verdict, test + train + bpda, bpda, _fragility(s, test), n_iter)
    if n_claim and n_claim > n_examples:
        _claim_at(res, model, n_claim, n_train=n_train, data_source=data_source, device=device,
                  use_stored=use_stored, results_dir=results_dir, kw=kw)
    return res


def _claim_at(res: Table1, model: str, n: int, *, kw: dict, **setup_kw) -> None:
    """The claim at :data:`CLAIM_ALPHA` on the first ``n`` test images under each of :data:`CLAIM_ATTACKS`."""
    from ..report.referee import referee_verdict

    s = setup(model, n_examples=n, **setup_kw)
    for label, prefix in CLAIM_ATTACKS.items():
        attack = f"{prefix}:{kw['attack']}" if prefix else kw["attack"]
        res.claim[label] = evaluate_alphas(s, [0.0, CLAIM_ALPHA], split="test", **{**kw, "attack": attack})
        res.rows += res.claim[label]
    res.claim_worst = pooled_rows(res.claim[next(iter(CLAIM_ATTACKS))], store=s.store)
    d, w = res.claim[next(iter(CLAIM_ATTACKS))], res.claim_worst
    res.claim_verdict = referee_verdict(d[0], d[1], w[0], w[1],
                                        **budget_gaps(w[0], w[1]))


def _fragility(s: Setup, rows: list[dict]) -> str:
    """:func:`msparse.report.verdicts.fragility_note` of the gain claim at :data:`CLAIM_ALPHA` on the first half of
    the images and on all of them (empty when both give the same verdict or the pair is missing)."""
    import math

    from ..report import verdicts as vd
    from ..report.tables import clean_flags

    b = next((r for r in rows if r["alpha"] == 0.0), None)
    r = next((r for r in rows if math.isclose(r["alpha"], CLAIM_ALPHA, abs_tol=1e-9)), None)
    if s.is_random or b is None or r is None or None in (clean_flags(s.store, b), clean_flags(s.store, r)):
        return ""
    n = r["n"]
    return vd.fragility_note(vd.prefix_verdicts(vd.gain_claim, b, r, [n // 2, n], clean_base=clean_flags(s.store, b),
                                                clean_new=clean_flags(s.store, r)))


def figure(res: Table1):
    """Ours (training and test panels, 95% bands) beside the paper's RaWRN-70-16 curves."""
    from ..report import paper, plots

    ref = paper.table("table1")
    fig, axes = plots.panels(2, height=4.6)
    for ax, rows, split in zip(axes, (res.train, res.test), ("train", "test")):
        plots.alpha_sweep(rows, ax=ax, title=f"{split} images (n={rows[0]['n']})",
                          labels={"clean": "clean (ours)", "robust": f"{res.attack} (ours)"},
                          reference={f"RaWRN-70-16 {m} (paper)": ref.column(f"RaWRN-70-16/{split}/{m}")
                                     for m in ("clean", "apgd-ce")})
        if split == "test" and res.bpda:   # the adaptive attack beside the direct one
            plots.alpha_sweep(res.bpda, ax=ax, metrics=("robust",), colors=["#9467bd"], markers=["v"],
                              labels={"robust": f"BPDA {res.attack} (ours)"})
    return fig


def caption(res: Table1) -> str:
    """One line saying what :func:`table` shows: attack, iterations, n, α, model, and the reference columns."""
    from ..report.tables import sweep_caption

    return (f"`{res.setup.model_name}`: {sweep_caption(res.test, res.attack, res.n_iter)} (95% Wilson intervals; Δ vs "
            "α = 0 with an exact paired McNemar test), beside the paper's Table 1 test columns (reference values):")


def bpda_caption(res: Table1) -> str:
    """One line saying what :func:`bpda_table` shows."""
    from ..report.tables import sweep_caption

    from .beside import STANDS_NOTE

    return (f"The adaptive attack — BPDA {res.attack} (identity backward through every MeanSparse site) — on the same "
            f"images, `{res.setup.model_name}`: {sweep_caption(res.bpda, 'BPDA ' + res.attack, res.n_iter)} "
            "(α = 0 shares the direct attack's record). " + STANDS_NOTE)


def bpda_table(res: Table1):
    """Ours under BPDA per α and the robust accuracy that stands (the per-image worst case of the direct attack and
    BPDA), each with its 95% Wilson interval and Δ vs α = 0 (McNemar p); None without an adaptive run."""
    from ..report.tables import compare_table

    return compare_table(stands(res.test, res.bpda, store=res.setup.store), metrics=("robust", "stands")) if res.bpda else None


def claim_caption(res: Table1) -> str:
    """What :func:`claim_table` shows (empty without a claim at ``n_claim``)."""
    if not res.claim:
        return ""
    d = res.claim[next(iter(CLAIM_ATTACKS))]
    return (f"**The claim on n = {d[0]['n']} test images** — `{res.setup.model_name}`, {res.attack} ({res.n_iter} "
            f"iterations, ε = {255 * d[0]['eps']:.3g}/255) at α = 0 and α = {CLAIM_ALPHA:g}: the official gradient, "
            "BPDA (identity backward), the smooth surrogate (sigmoid relaxation of the band, τ annealed 0.3 → 0.03; "
            "see the chapter *Does MeanSparse work?*) and their per-image worst case, the robust accuracy that "
            "stands (95% Wilson intervals; Δ vs α = 0 on the same images, exact McNemar p):")


def claim_line(res: Table1) -> str:
    """The referee's verdict on the claim at ``n_claim`` images, with the evidence and what n detects."""
    if res.claim_verdict is None:
        return ""
    v, n = res.claim_verdict, res.claim_worst[0]["n"]
    tail = "" if v.phrase == "inconclusive at this n" or None in (v.worst.difference, v.direct.difference) else (
        f"; n = {n} detects about {v.worst.difference.mde_pp():.1f} pp (worst case) and "
        f"{v.direct.difference.mde_pp():.1f} pp (official gradient) at 80% power")
    return f"**This page at n = {n}: {v.phrase}** — {v.reason()}{tail}."


def claim_table(res: Table1):
    """Robust accuracy at α = 0 and :data:`CLAIM_ALPHA` on ``n_claim`` images under each attack of the claim and
    the worst case, with Δ and McNemar p (None without a claim at ``n_claim``)."""
    import pandas as pd

    if not res.claim:
        return None
    d, out = res.claim[next(iter(CLAIM_ATTACKS))], []
    for label, rows in [*res.claim.items(), ("stands (every stored attack, pooled)", res.claim_worst)]:
        r0, r1 = rows
        out.append({"attack": label, "n": r1["n"], "clean α=0 → α": f"{d[0]['clean']:.1f} → {d[1]['clean']:.1f}",
                    "robust α = 0 % [95% CI]": f"{r0['robust']:.1f} [{r0['robust_lo']:.1f}, {r0['robust_hi']:.1f}]",
                    f"robust α = {CLAIM_ALPHA:g} % [95% CI]":
                        f"{r1['robust']:.1f} [{r1['robust_lo']:.1f}, {r1['robust_hi']:.1f}]",
                    "Δ (pp), McNemar p": f"{r1['robust'] - r0['robust']:+.1f}, p={r1.get('p_robust', float('nan')):.2g}"})
    return pd.DataFrame(out).set_index("attack")


def table(res: Table1):
    """Ours on test images beside the paper's Table 1 test columns (reference values)."""
    from ..report import paper
    from ..report.tables import compare_table

    ref = paper.table("table1")
    refcols = {f"{m} {k} (paper)": ref.column(f"{m}/test/{k}") for m in ("RaWRN-70-16", "WRN-70-16")
               for k in ("clean", "apgd-ce")}
    return compare_table(res.test, refcols)


# ================================================================================================
# the page (msparse.experiments.pages)
# ================================================================================================
@dataclass
class Params:
    """The parameters of the page ``table1_alpha`` in the order of its notebook's parameters cell, which is
    rendered from them (:func:`msparse.experiments.pages.render_parameters`)."""
    model: str = param("msparse/default")
    dataset: str = param("cifar10")
    data_source: str = param("auto", "auto | offline | official")
    n_examples: int = param(100, "test images (and as many training images)")
    n_claim: int = param(1000,
                         "test images for the claim at alpha 0.25 under the direct attack, BPDA and the surrogate "
                         "(0: skip)")
    n_train: int = param(1000, "training images for μ, σ")
    alphas: list = param([0.0, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5], "α grid of the paper (test images)")
    train_alphas: list = param([0.0, 0.25, 0.5], "α values evaluated on training images (paper: the full grid)")
    attack: str = param("apgd-ce")
    eps: float = param(8 / 255, expr="8 / 255")
    n_iter: int = param(20, "APGD iterations (paper: 100)")
    device: str = param("cpu", "cpu | cuda | auto")
    seed: int = param(0)
    use_stored: bool = param(True, "reuse stored result records")
    results_dir: str | None = param(None, "None means $MSPARSE_RESULTS or results/")


def _page_claims(kw: dict) -> list:
    """The page's claim for the ledger (:func:`msparse.experiments.claims.run`): robust accuracy at
    :data:`CLAIM_ALPHA` against α = 0 on all :data:`N_CLAIM` images, under the direct attack and as it stands."""
    from .claims import claim_at

    r1 = run(**kw, n_claim=N_CLAIM)   # the page's claim on all its n_claim images
    direct = r1.claim.get(next(iter(CLAIM_ATTACKS)), r1.test)
    return [claim_at("Table 1", "robust accuracy rises with α", r1.setup.model_name, r1.attack, CLAIM_ALPHA, direct,
                     r1.claim.get("BPDA", r1.bpda), store=kw.get("results_dir"))]


def _plan_run(it, model: str, kw: dict, progress: bool) -> tuple[str, ...]:
    """One item of the paper plan (:func:`msparse.experiments.plan.run_plan`): the item's α grid on test and
    training images."""
    run(model, alphas=it.alphas, train_alphas=it.alphas, attack=it.attack, progress=progress, **kw)
    return (it.attack,)


PAGE = register(Page("table1_alpha", "Table 1: clean and APGD-CE vs α",
                     "Main results (paper Table 1, Fig. 3)", Params, __name__,
                     quick={"n_examples": 24, "n_train": 256, "n_iter": 5, "alphas": [0.0, 0.35],
                            "train_alphas": [0.0, 0.35], "n_claim": 0}, plan_key="table1",
                     claims=_page_claims, plan_run=_plan_run))
