"""The paper's stated limitation: MeanSparse does not make a standard-trained model robust.

The paper (Amini et al. 2024, its limitations) says MeanSparse enhances *adversarially trained* models and does
not make a standard-trained model robust; it gives no table for it. The control here is the standard-trained
CIFAR ResNet-18 that ships with the ``pyautoattack`` package (≈0% under PGD at 8/255): APGD-CE accuracy for a few
α, checked to stay below 10% at every α (:func:`msparse.report.verdicts.robust_below`, Bonferroni over the α
values), with the clean accuracy each α costs.

    res = standard.run()               # stored records are reused; missing points are computed
    standard.figure(res); standard.table(res); res.verdict
"""
from __future__ import annotations

from dataclasses import dataclass

from .setup import Setup, setup
from .sweeps import evaluate_alphas
from .pages import Page, param, register

__all__ = ["Standard", "run", "figure", "table", "caption", "CLAIM"]

CLAIM = ("the paper's stated limitation (MeanSparse does not make a standard-trained model robust: robust accuracy "
         "stays below 10%)")


@dataclass
class Standard:
    """Display rows (percent) of the α sweep, the verdict and the set-up they came from."""
    setup: Setup
    rows: list[dict]
    attack: str
    n_iter: int
    check: object = None      # the Verdict
    verdict: str = ""         # its page line (Markdown)


def run(model: str = "pyautoattack/resnet18-standard", *, data_source: str = "auto", n_examples: int = 64,
        n_train: int = 1000, alphas=(0.0, 0.25, 0.5), attack: str = "apgd-ce", eps: float = 8 / 255,
        n_iter: int = 20, device: str = "cpu", seed: int = 0, use_stored: bool = True,
        results_dir: str | None = None, progress: bool = True) -> Standard:
    """Sweep α on a standard-trained model and check :data:`CLAIM`."""
    from ..report import verdict_lines, verdicts

    s = setup(model, n_examples=n_examples, n_train=n_train, data_source=data_source, device=device,
              use_stored=use_stored, results_dir=results_dir)
    rows = evaluate_alphas(s, alphas, attack=attack, eps=eps, n_iter=n_iter, seed=seed, label="standard",
                           progress=progress)
    if s.is_random:
        v = verdicts.not_evaluated(CLAIM, "this run used random weights (infrastructure test)")
    else:
        v = verdicts.robust_below({f"α={r['alpha']:g}": r for r in rows}, claim=CLAIM)
    line = verdict_lines.verdict(v, f"Clean accuracy falls from {rows[0]['clean']:.1f}% to {rows[-1]['clean']:.1f}% at "
                               f"α={rows[-1]['alpha']:g}.")
    return Standard(s, rows, attack, n_iter, v, line)


def figure(res: Standard):
    """Our clean and robust accuracy against α (95% bands)."""
    from ..report import plots

    return plots.alpha_sweep(res.rows, title=f"{res.setup.model_name}: MeanSparse on a standard-trained model",
                             labels={"robust": f"{res.attack} (ours)"})


def caption(res: Standard) -> str:
    """One line saying what :func:`table` shows."""
    return (f"Clean and {res.attack} ({res.n_iter} iterations, ε = {255 * res.rows[0]['eps']:g}/255) accuracy against "
            f"α, n = {res.rows[0]['n']} test images, model {res.setup.model_name} (standard training); Δ vs α = 0 "
            "(paired McNemar):")


def table(res: Standard):
    """Our clean and robust accuracy per α, with Δ vs α = 0."""
    from ..report.tables import compare_table

    return compare_table(res.rows)


# ================================================================================================
# the page (msparse.experiments.pages)
# ================================================================================================
@dataclass
class Params:
    """The parameters of the page ``standard_training`` in the order of its notebook's parameters cell, which is
    rendered from them (:func:`msparse.experiments.pages.render_parameters`)."""
    model: str = param("pyautoattack/resnet18-standard", "standard-trained ResNet-18 (pyautoattack)")
    dataset: str = param("cifar10")
    data_source: str = param("auto", "auto | offline | official")
    n_examples: int = param(64, "test images")
    n_train: int = param(1000, "training images for mu, sigma")
    alphas: list = param([0.0, 0.25, 0.5], "alpha values")
    attack: str = param("apgd-ce")
    eps: float = param(8 / 255, expr="8 / 255")
    n_iter: int = param(20, "APGD iterations (paper: 100)")
    device: str = param("cpu", "cpu | cuda | auto")
    seed: int = param(0)
    use_stored: bool = param(True, "reuse stored result records")
    results_dir: str | None = param(None, "None means $MSPARSE_RESULTS or results/")



PAGE = register(Page("standard_training", "Standard training",
                     "Stress tests", Params, __name__,
                     quick={"n_examples": 24, "n_train": 256, "n_iter": 5, "alphas": [0.0, 0.5]}))
