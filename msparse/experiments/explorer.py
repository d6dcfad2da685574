"""Explore α: the operator, one site's histograms, the blocked activations per site and the accuracy, as α moves.

No table or figure of the paper corresponds to this page and it checks no claim (it carries no verdict). It
shows, for the model given here (default: the shipped offline default), what the paper's α sweeps (Table 1)
do inside the network: frames precomputed at each α of the paper's Table 1 grid (operator curve, the chosen
site's histograms before/after, the fraction of blocked activations per site), whose accuracy panel is read from
the stored APGD-CE records of the Table 1 sweep (the same records when the parameters match). With a running
kernel, ``live=True`` also builds the live ipywidgets explorer (:func:`msparse.report.widgets.explorer`), whose
short-PGD indicator is a live aid, not a reported number.

    res = explorer.run(live=False)
    explorer.slider(res); explorer.table(res); res.note
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .setup import Setup, setup
from .sweeps import evaluate_alphas
from .pages import Page, param, register

__all__ = ["Explorer", "run", "slider", "table", "bpda_table", "panel_series", "NO_KERNEL_NOTE", "NOTE"]

#: shown in place of the live explorer when it is not built (live=False: a static page cannot drive ipywidgets)
NO_KERNEL_NOTE = ("_Run this notebook in Jupyter (`notebooks/alpha_explorer.md`, opened as a notebook through "
                  "jupytext) to drag the live explorer; the book was built without a kernel, so the live "
                  "widget is left out here and the kernel-free slider below is the one that works._")
#: the page's no-verdict sentence
NOTE = "_Interactive exploration; the paper has no numbers for this page, so it carries no verdict._"


@dataclass
class Explorer:
    """The stored sweep behind the accuracy panel (display rows, percent), the static slider's PNG frames (one
    per α), the live widget (None unless ``live``), and the set-up they came from."""
    setup: Setup
    rows: list[dict]                 # every row with a record (provenance)
    alphas: list[float]
    site_index: int
    attack: str
    frames: list = field(default_factory=list)    # [(label, PNG bytes)] for widgets.static_slider
    live_widget: object = None
    note: str = NOTE
    bpda: list[dict] = field(default_factory=list)  # the adaptive attack's stored sweep (display rows), if any


def run(model: str = "msparse/default", *, data_source: str = "auto", n_examples: int = 100, n_train: int = 1000,
        alphas=(0.0, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5), site_index: int = 0, attack: str = "apgd-ce",
        eps: float = 8 / 255, n_iter: int = 20, n_batch: int = 64, n_robust: int = 16, pgd_steps: int = 5,
        live: bool = True, device: str = "cpu", seed: int = 0, use_stored: bool = True,
        results_dir: str | None = None, progress: bool = True, adaptive: str | None = "bpda") -> Explorer:
    """The stored ``attack`` sweep over ``alphas`` (the Table 1 records when the parameters match) and, beside it,
    the adaptive ``adaptive:attack`` sweep (BPDA: identity backward through every site; None: none), the static
    slider's frames at each α on ``n_batch`` images, and (``live``) the live explorer widget."""
    from ..report import widgets

    s = setup(model, n_examples=n_examples, n_train=n_train, data_source=data_source, device=device,
              use_stored=use_stored, results_dir=results_dir)
    live_widget = None
    if live:
        live_widget = widgets.explorer(s.model, s.x, s.y, alpha=0.25, site=site_index, n_batch=n_batch,
                                       n_robust=n_robust, pgd_steps=pgd_steps, eps=eps)
    rows = evaluate_alphas(s, alphas, attack=attack, eps=eps, n_iter=n_iter, seed=seed, label="table1",
                           progress=progress)
    bpda = (evaluate_alphas(s, alphas, attack=f"{adaptive}:{attack}", eps=eps, n_iter=n_iter, seed=seed,
                            label="table1", progress=progress) if adaptive else [])
    ex = widgets.AlphaExplorer(s.model, s.x, s.y, n_batch=n_batch, n_robust=0)
    frames = widgets.explorer_frames(ex, alphas, site=site_index, series=panel_series(rows, bpda, attack),
                                     title=f"stored records, n = {rows[0]['n']} (95% Wilson)")
    return Explorer(s, rows, list(alphas), site_index, attack, frames, live_widget, bpda=bpda)


def panel_series(rows: list[dict], bpda: list[dict], attack: str) -> list[dict]:
    """The static slider's accuracy panel: clean, the direct ``attack`` and (when stored) its BPDA counterpart
    against α, in %, each with its 95% Wilson interval (series for :func:`msparse.report.plots.curves`)."""
    def one(rs, metric, label, color, marker):
        return {"x": [r["alpha"] for r in rs], "y": [r[metric] for r in rs], "lo": [r[f"{metric}_lo"] for r in rs],
                "hi": [r[f"{metric}_hi"] for r in rs], "label": label, "color": color, "marker": marker}

    out = [one(rows, "clean", "clean", "#1f77b4", "o"), one(rows, "robust", f"{attack} (direct)", "#d62728", "s")]
    if bpda:
        out.append(one(bpda, "robust", f"BPDA {attack} (identity backward)", "#9467bd", "v"))
    return out


def slider(res: Explorer) -> str:
    """HTML of the kernel-free slider over the precomputed frames (starting at the α closest to 0.25)."""
    from ..report import widgets

    start = min(range(len(res.alphas)), key=lambda i: abs(res.alphas[i] - 0.25))
    return widgets.static_slider(res.frames, start=start,
                                 title=f"α on {res.setup.model_name}, site {res.site_index}")


def bpda_table(res: Explorer):
    """The stored BPDA records beside the accuracy panel's direct attack: robust accuracy at each α (Δ vs α = 0)."""
    from ..report.tables import compare_table

    return compare_table(res.bpda, metrics=("robust",)) if res.bpda else None


def table(res: Explorer):
    """The stored records behind the accuracy panel: clean and robust accuracy at each α (Δ vs α = 0)."""
    from ..report.tables import compare_table

    return compare_table(res.rows)


# ================================================================================================
# the page (msparse.experiments.pages)
# ================================================================================================
@dataclass
class Params:
    """The parameters of the page ``alpha_explorer`` in the order of its notebook's parameters cell, which is
    rendered from them (:func:`msparse.experiments.pages.render_parameters`)."""
    model: str = param("msparse/default")
    dataset: str = param("cifar10")
    data_source: str = param("auto", "auto | offline | official")
    n_examples: int = param(100, "test images for the stored records")
    n_train: int = param(1000, "training images for μ, σ")
    alphas: list = param([0.0, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5], "frames of the static slider")
    site_index: int = param(0, "site shown in the histograms")
    attack: str = param("apgd-ce")
    eps: float = param(8 / 255, expr="8 / 255")
    n_iter: int = param(20, "APGD iterations for the records (as Table 1)")
    n_batch: int = param(64, "live: images for clean accuracy and blocked fractions")
    n_robust: int = param(32, "live: images for the short PGD (0 switches it off)")
    pgd_steps: int = param(5)
    live: bool = param(True, "build the live ipywidgets explorer (needs a kernel); the book build passes False")
    device: str = param("cpu", "cpu | cuda | auto")
    seed: int = param(0)
    use_stored: bool = param(True, "reuse stored result records")
    results_dir: str | None = param(None, "None means $MSPARSE_RESULTS or results/")



PAGE = register(Page("alpha_explorer", "Explore α",
                     "Main results (paper Table 1, Fig. 3)", Params, __name__,
                     quick={"live": False, "n_examples": 24, "n_train": 256, "n_iter": 5, "alphas": [0.0, 0.35]}))
