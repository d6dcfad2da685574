"""The statistics MeanSparse needs: the official estimate against the exact one, and how many training images.

The paper (Amini et al. 2024, Section 3) thresholds each channel at α·σ around its mean μ, estimated on the
training set; its official code estimates σ² as the *average of per-batch variances* (and μ as the average of
batch means). That under-estimates σ by the between-batch variance: negligible when batches mix classes (CIFAR-10
in its stored order), possibly large when they do not (a class-sorted loader, like the official ImageNet one). ``msparse``
computes the exact population statistics by default. What is checked here: the median over sites of
σ_official / σ_exact is within 2% of 1 on class-mixed batches and clearly lower on class-sorted ones
(:func:`msparse.report.verdicts.sigma_ratio_check`), with the clean accuracy at α under each; and how the σ
estimate and clean accuracy change with the number of training images.

The run recalibrates the page's model in place and always puts the exact statistics back afterwards.

    res = stats_page.run()             # stored records are reused; missing points are computed
    stats_page.ratio_figure(res); stats_page.accuracy_table(res); res.verdict
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .setup import Setup, restore_stats, setup, sigma_ratios, stats_snapshot
from .sweeps import evaluate_alphas
from .pages import Page, param, register

__all__ = ["Statistics", "run", "ratio_figure", "ratio_table", "accuracy_table", "size_figure", "size_table",
           "ratio_caption", "accuracy_caption", "size_caption", "CLAIM", "STATISTICS"]

CLAIM = ("the official σ estimate matches the exact σ on class-mixed batches and under-estimates it on "
         "class-sorted batches")
#: the statistics labels of the clean-accuracy records (stored with each record)
STATISTICS = ("exact", "official, stored order", "official, class-sorted")


@dataclass
class Statistics:
    """σ ratios per site, clean-accuracy rows (percent) per statistics and per training-set size, the σ error per
    size, the verdict and the set-up they came from."""
    setup: Setup
    alpha: float
    batch_size: int
    ratios: dict               # {"official, stored order" | "official, class-sorted": {site: σ_official/σ_exact}}
    medians: dict              # the median over sites of each
    acc: dict                  # {statistics label: clean-accuracy row at α}
    err: dict                  # {n: median over sites of |σ_n/σ_ref − 1|} (fraction)
    size_rows: list[dict]      # clean-accuracy rows at α, statistics on the first n training images
    check: object = None       # the Verdict
    verdict: str = ""          # its page line (Markdown)
    rows: list[dict] = field(default_factory=list)   # every row with a record (provenance)


def _ci(row) -> str:
    """A row's clean accuracy with its 95% interval, e.g. ``"91.5 [87.0, 94.6]"``."""
    return f"{row['clean']:.1f} [{row['clean_lo']:.1f}, {row['clean_hi']:.1f}]"


def _median(values) -> float:
    import pandas as pd

    return float(pd.Series(values).median())


def run(model: str = "msparse/default", *, data_source: str = "auto", n_examples: int = 200, n_train: int = 3000,
        batch_size: int = 512, alpha: float = 0.25, n_sizes=(100, 300, 1000, 3000), device: str = "cpu",
        seed: int = 0, use_stored: bool = True, results_dir: str | None = None, progress: bool = True) -> Statistics:
    """Recalibrate the model with the official estimate (stored and class-sorted order) and with the exact one on
    the first n of ``n_sizes`` training images; compare σ and the clean accuracy at ``alpha``; check :data:`CLAIM`.
    The exact statistics on all ``n_train`` images are restored afterwards (also on an error)."""
    import torch

    from ..core.calibration import calibrate
    from ..report import verdict_lines, verdicts

    s = setup(model, n_examples=n_examples, n_train=n_train, data_source=data_source, device=device,
              use_stored=use_stored, results_dir=results_dir)
    kw = dict(attack="none", seed=seed, label="statistics", progress=progress)
    exact = stats_snapshot(s.model)
    try:
        calibrate(s.model, s.x_train, mode="official", batch_size=batch_size)
        official = stats_snapshot(s.model)
        order = torch.argsort(s.y_train.cpu(), stable=True)
        calibrate(s.model, s.x_train[order.to(s.x_train.device)], mode="official", batch_size=batch_size)
        official_sorted = stats_snapshot(s.model)
        ratios = {"official, stored order": sigma_ratios(official, exact),
                  "official, class-sorted": sigma_ratios(official_sorted, exact)}
        acc = {}
        for label, snap in zip(STATISTICS, (exact, official, official_sorted)):
            restore_stats(s.model, snap)
            acc[label] = evaluate_alphas(s, [alpha], statistics=label, **kw)[0]
        restore_stats(s.model, exact)

        err, size_rows = {}, []
        for n in n_sizes:
            calibrate(s.model, s.x_train[:n], mode="exact")
            snap = stats_snapshot(s.model)
            err[n] = _median({k: abs(v - 1) for k, v in sigma_ratios(snap, exact).items()})
            size_rows.append(evaluate_alphas(s, [alpha], n_train=n, **kw)[0])
    finally:
        restore_stats(s.model, exact)

    med = {k: _median(r) for k, r in ratios.items()}
    if s.is_random:
        v = verdicts.not_evaluated(CLAIM, "this run used random weights (infrastructure test)")
    else:
        v = verdicts.sigma_ratio_check(med["official, stored order"], med["official, class-sorted"])
    line = verdict_lines.verdict(v, f"Stored order = class-mixed batches; {len(s.x_train)} training images.")
    return Statistics(s, alpha, batch_size, ratios, med, acc, err, size_rows, v, line,
                      list(acc.values()) + size_rows)


def ratio_figure(res: Statistics):
    """Per site: the median over channels of σ_official / σ_exact, stored order and class-sorted."""
    from ..report import plots

    return plots.curves([{"x": list(range(len(r))), "y": list(r.values()), "label": lab}
                         for lab, r in res.ratios.items()],
                        xlabel="site index", ylabel="median σ_official / σ_exact",
                        title=f"{len(res.setup.x_train)} training images, batch {res.batch_size}")


def ratio_caption(res: Statistics) -> str:
    return (f"σ_official / σ_exact (per site: the median over channels), median and minimum over sites, per batch "
            f"order: {len(res.setup.x_train)} training images, batch {res.batch_size}, model {res.setup.model_name} "
            "(no attack, no α: statistics only):")


def ratio_table(res: Statistics):
    """Median and minimum over sites of σ_official / σ_exact, per batch order."""
    import pandas as pd

    from ..report.tables import number

    return pd.DataFrame({lab: {"median over sites": number(pd.Series(r).median(), 4),
                               "min over sites": number(pd.Series(r).min(), 4)}
                         for lab, r in res.ratios.items()}).T


def accuracy_caption(res: Statistics) -> str:
    n = next(iter(res.acc.values()))["n"]
    return (f"Clean accuracy (no attack) at α = {res.alpha:g} under each statistics, n = {n} test images, model "
            f"{res.setup.model_name} (95% Wilson intervals):")


def accuracy_table(res: Statistics):
    """Clean accuracy at α (with its 95% interval and record) under exact and official statistics."""
    import pandas as pd

    return pd.DataFrame([{"statistics": k, "clean % at α": _ci(v), "record": v["key"][:12]}
                         for k, v in res.acc.items()])


def size_figure(res: Statistics):
    """σ error (left) and clean accuracy at α (right) against the number of training images."""
    from ..report import plots

    fig, axes = plots.panels(2, height=3.8)
    plots.curves([{"x": list(res.err), "y": [100 * v for v in res.err.values()],
                   "label": "median |σ/σ_ref − 1| over sites"}], ax=axes[0],
                 xlabel="training images", ylabel="%",
                 title=f"σ error vs the {len(res.setup.x_train)}-image statistics")
    axes[0].set_xscale("log")
    plots.alpha_sweep(res.size_rows, x="n_train", metrics=("clean",), ax=axes[1], xlabel="training images",
                      title=f"clean accuracy at α={res.alpha:g}")
    axes[1].set_xscale("log")
    return fig


def size_caption(res: Statistics) -> str:
    n = res.size_rows[0]["n"]
    return (f"Exact statistics on the first n training images: σ error vs the {len(res.setup.x_train)}-image "
            f"statistics, and clean accuracy (no attack) at α = {res.alpha:g}, n = {n} test images, model "
            f"{res.setup.model_name}:")


def size_table(res: Statistics):
    """Per training-set size: the σ error and the clean accuracy at α (with its 95% interval and record)."""
    import pandas as pd

    df = pd.DataFrame([{"training images": r["n_train"],
                        "median |σ/σ_ref − 1| (%)": round(100 * res.err[r["n_train"]], 2),
                        "clean % at α [95% CI]": _ci(r), "record": r["key"][:12]} for r in res.size_rows])
    return df.set_index("training images")


# ================================================================================================
# the page (msparse.experiments.pages)
# ================================================================================================
@dataclass
class Params:
    """The parameters of the page ``statistics`` in the order of its notebook's parameters cell, which is
    rendered from them (:func:`msparse.experiments.pages.render_parameters`)."""
    model: str = param("msparse/default")
    dataset: str = param("cifar10")
    data_source: str = param("auto", "auto | offline | official")
    n_examples: int = param(200, "test images for the clean-accuracy records")
    n_train: int = param(3000, "training images (the offline subset has 3000)")
    batch_size: int = param(512, "official statistics batch size")
    alpha: float = param(0.25, "alpha for the accuracy check")
    n_sizes: list = param([100, 300, 1000, 3000], "training-set sizes for the statistics")
    device: str = param("cpu", "cpu | cuda | auto")
    seed: int = param(0)
    use_stored: bool = param(True, "reuse stored result records")
    results_dir: str | None = param(None, "None means $MSPARSE_RESULTS or results/")



PAGE = register(Page("statistics", "Statistics: exact vs official, and how many images",
                     "Stress tests", Params, __name__,
                     quick={"n_examples": 24, "n_train": 512, "n_sizes": [128, 512]}))
