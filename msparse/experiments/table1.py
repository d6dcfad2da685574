"""Paper Table 1: clean and APGD-CE accuracy against α, on test and training images.

The paper evaluates its four leading models for α from 0 (the base) to 0.5, L∞ 8/255, APGD-CE with 100
iterations, on CIFAR-10 test and training images, and picks α = 0.25 (RaWRN-70-16) / 0.20 (WRN-70-16) as "the
highest robustness while maintaining clean accuracy" — chosen on the test set. Their weights are not available
offline, so the claim is checked on the model given here (default: the shipped offline default).

    res = table1.run()                 # stored records are reused; missing points are computed
    table1.figure(res); table1.table(res); res.verdict
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .setup import Setup, setup
from .sweeps import evaluate_alphas

__all__ = ["Table1", "run", "figure", "table", "PAPER_MODELS", "CLAIM", "CLAIM_ALPHA"]

#: the paper's models behind Table 1 (reference values in :mod:`msparse.report.paper`)
PAPER_MODELS = "RaWRN-70-16 / WRN-70-16 / ConvNeXt-L / RaWRN-101-2"
#: the claim checked, and the α it is checked at (the paper's choice for RaWRN-70-16)
CLAIM = "APGD-CE rises with α at almost unchanged clean accuracy"
CLAIM_ALPHA = 0.25


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


def run(model: str = "msparse/default", *, n_examples: int = 100, n_train: int = 1000, data_source: str = "auto",
        alphas=(0.0, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5), train_alphas=(0.0, 0.25, 0.5),
        attack: str = "apgd-ce", eps: float = 8 / 255, n_iter: int = 20, seed: int = 0, device: str = "cpu",
        use_stored: bool = True, results_dir: str | None = None, progress: bool = True) -> Table1:
    """Sweep α on the first ``n_examples`` test images and as many training images; check :data:`CLAIM`."""
    from ..report.verdicts import alpha_verdict

    s = setup(model, n_examples=n_examples, n_train=n_train, data_source=data_source, device=device,
              use_stored=use_stored, results_dir=results_dir)
    kw = dict(attack=attack, eps=eps, n_iter=n_iter, seed=seed, label="table1", progress=progress)
    test = evaluate_alphas(s, alphas, split="test", **kw)
    train = evaluate_alphas(s, train_alphas, split="train", **kw)
    verdict = alpha_verdict(s, test, PAPER_MODELS, CLAIM_ALPHA, CLAIM)
    return Table1(s, test, train, attack, verdict, test + train)


def figure(res: Table1):
    """Ours (training and test panels, 95% bands) beside the paper's RaWRN-70-16 curves."""
    import matplotlib.pyplot as plt

    from ..report import paper, plots

    ref = paper.table("table1")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    for ax, rows, split in zip(axes, (res.train, res.test), ("train", "test")):
        plots.alpha_sweep(rows, ax=ax, title=f"{split} images (n={rows[0]['n']})",
                          labels={"clean": "clean (ours)", "robust": f"{res.attack} (ours)"},
                          reference={f"RaWRN-70-16 {m} (paper)": ref.column(f"RaWRN-70-16/{split}/{m}")
                                     for m in ("clean", "apgd-ce")})
    return fig


def table(res: Table1):
    """Ours on test images beside the paper's Table 1 test columns (reference values)."""
    from ..report import paper
    from ..report.tables import compare_table

    ref = paper.table("table1")
    refcols = {f"{m} {k} (paper)": ref.column(f"{m}/test/{k}") for m in ("RaWRN-70-16", "WRN-70-16")
               for k in ("clean", "apgd-ce")}
    return compare_table(res.test, refcols)
