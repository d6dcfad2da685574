"""Figure functions for the notebooks and the book (matplotlib; seaborn only for the theme).

Conventions: accuracies are plotted in percent; our measurements are solid lines/bars with 95% Wilson
intervals (shaded bands or error bars); published reference values are hollow markers on dashed lines,
labelled "(paper)" or "(RobustBench)" — never styled like our own numbers. Legends sit below the axes, never
over the data or the reference lines. Every function takes an optional ``ax`` and returns the matplotlib Figure.

Readable in the book: the article column is 688 CSS px wide at a 1280 px window, so a figure is at most
:data:`MAX_WIDTH_IN` inches wide (its :data:`MIN_FONT_PT` text then renders at >= 9 px) and at least
:data:`MIN_WIDTH_IN` (>= 600 px at 100 dpi); :func:`panels` lays several panels out in rows of at most two,
:func:`readable` enforces both on any figure (tests/test_browser.py checks the rendered pages).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

import numpy as np

__all__ = ["style", "operator_curve", "channel_histogram", "feature_map", "histograms_before_after", "figure1",
           "figure2_schematic", "curves", "alpha_sweep", "eps_curves", "bars", "site_profile", "blocked_fractions",
           "to_png", "is_blank_png", "OURS", "REF", "MIN_FONT_PT", "MAX_WIDTH_IN", "MIN_WIDTH_IN", "MARKERS",
           "panels", "readable", "legend_below", "legend_columns", "set_title", "text_sizes"]

#: the smallest font any figure uses (legends, annotations, ticks), in points; the book checks it renders >= 9 px
MIN_FONT_PT = 9
#: widest figure, in inches: the inline backend saves it with 0.1 in padding per side, and a 688 px column shows
#: 9.3 + 0.2 in at 72.4 px/in, so 9 pt text stays >= 9 px
MAX_WIDTH_IN = 9.3
#: narrowest figure, in inches (600 px at the book's 100 dpi)
MIN_WIDTH_IN = 6.2
#: one marker per series, so lines stay apart in grey-scale and where colours are close
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
OURS = dict(lw=2.0, marker="o", ms=4)
REF = dict(lw=1.2, ls="--", marker="s", ms=4, mfc="none")
_C = {"blue": "#1f77b4", "orange": "#ff7f0e", "green": "#2ca02c", "red": "#d62728", "purple": "#9467bd",
      "grey": "#7f7f7f", "band": "#f2c14e"}


def _plt():
    import matplotlib.pyplot as plt

    return plt


def style() -> None:
    """A clean, readable theme (seaborn's 'whitegrid')."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95)
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "axes.titlesize": 11,
                                "legend.fontsize": MIN_FONT_PT, "xtick.labelsize": MIN_FONT_PT + 1,
                                "ytick.labelsize": MIN_FONT_PT + 1})


def _ax(ax, figsize=(7, 4)):
    if ax is None:
        fig, ax = _plt().subplots(figsize=figsize, layout="constrained")
    return ax.figure, ax


def panels(n: int, ncols: int = 2, height: float = 3.6, width: float = 9.0, **kw):
    """A figure of ``n`` panels in rows of at most ``ncols``, ``width`` inches wide (<= :data:`MAX_WIDTH_IN`),
    ``height`` inches per row; unused cells are removed. Returns (figure, flat list of ``n`` axes)."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = _plt().subplots(nrows, ncols, figsize=(min(width, MAX_WIDTH_IN), height * nrows),
                                layout="constrained", squeeze=False, **kw)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def _panel_width_in(ax) -> float:
    """The width (inches) of the grid cell ``ax`` sits in: the figure width over the grid's columns."""
    spec = ax.get_subplotspec()
    ncols = spec.get_gridspec().ncols if spec is not None else 1
    return ax.figure.get_size_inches()[0] * (spec.colspan.stop - spec.colspan.start if spec else 1) / ncols


def legend_columns(labels: Sequence[str], width_in: float, most: int = 2) -> int:
    """How many legend columns of ``labels`` fit in ``width_in`` inches at :data:`MIN_FONT_PT` (a character is
    about 0.55 em wide, plus 0.5 in for the marker and the gap), at most ``most``, at least 1."""
    widest = 0.5 + max((len(l) for l in labels), default=0) * MIN_FONT_PT * 0.55 / 72
    return max(1, min(most, int(width_in // widest)))


def set_title(ax, title: str) -> None:
    """``ax``'s title, wrapped to the panel's width (a title wider than the figure would widen the saved image
    beyond the book's column and shrink its text)."""
    import textwrap

    from matplotlib.font_manager import FontProperties

    size = FontProperties(size=matplotlib.rcParams["axes.titlesize"]).get_size_in_points()
    chars = max(20, int(0.9 * _panel_width_in(ax) * 72 / (size * 0.6)))
    ax.set_title(textwrap.fill(title, chars))


def legend_below(ax, ncols: int = 2, **kw):
    """The axes' legend below its x label (outside the axes: it never covers data or reference lines), in as many
    columns (up to ``ncols``) as fit the panel's width, so a long legend never squeezes the axes; no-op without
    labelled artists."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    return ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                     ncols=legend_columns(labels, _panel_width_in(ax), ncols), fontsize=MIN_FONT_PT, frameon=False,
                     **kw)


def text_sizes(fig) -> list[float]:
    """Font sizes (points) of every visible, non-empty text in ``fig`` (titles, labels, ticks, legends)."""
    from matplotlib.text import Text

    return [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def readable(fig, max_width: float = MAX_WIDTH_IN, min_width: float = MIN_WIDTH_IN):
    """Make ``fig`` readable in the book: every text at least :data:`MIN_FONT_PT`, the width clamped to
    [``min_width``, ``max_width``] inches (height scaled alike when narrowed). Returns ``fig``."""
    from matplotlib.text import Text

    for t in fig.findobj(Text):
        if t.get_fontsize() < MIN_FONT_PT:
            t.set_fontsize(MIN_FONT_PT)
    w, h = fig.get_size_inches()
    target = min(max(w, min_width), max_width)
    if target != w:
        fig.set_size_inches(target, h * target / w if w > max_width else h)
    return fig


def _np(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=float)


# ------------------------------------------------------------------------------------------------
# the operator (Fig. 1)
def operator_curve(mu: float, sigma: float, alpha: float, ax=None, span: float = 4.0, title: str | None = None):
    """The MeanSparse map of one channel: flat at μ inside μ ± α·σ (strict), identity outside."""
    fig, ax = _ax(ax)
    x = np.linspace(mu - span * sigma, mu + span * sigma, 2001)
    t = alpha * sigma
    y = np.where(np.abs(x - mu) < t, mu, x)
    ax.plot(x, x, color=_C["grey"], lw=1, ls=":", label="identity")
    yb = y.copy()
    yb[np.abs(np.diff(y, prepend=y[0])) > (x[1] - x[0]) * 1.5] = np.nan  # no vertical segments at the jumps
    ax.plot(x, yb, color=_C["blue"], lw=2, label=f"MeanSparse, α={alpha:g}")
    if t > 0:
        ax.axvspan(mu - t, mu + t, color=_C["band"], alpha=0.35, lw=0, label="blocked band μ ± ασ")
    ax.axvline(mu, color=_C["red"], lw=1, ls="--")
    ax.set_xlabel("input feature value")
    ax.set_ylabel("output feature value")
    ax.set_title(title or "operator on this channel")
    ax.legend(loc="upper left", fontsize=MIN_FONT_PT)
    return fig


def channel_histogram(values, mu: float, sigma: float, alpha: float | None = None, ax=None, bins: int = 80,
                      title: str | None = None, label: str | None = None, color=None):
    """Histogram of one channel's feature values, with μ and μ ± σ marked (and the band for ``alpha``)."""
    fig, ax = _ax(ax)
    v = _np(values).ravel()
    ax.hist(v, bins=bins, density=True, color=color or _C["blue"], alpha=0.75, label=label)
    ax.axvline(mu, color=_C["red"], lw=1.5, label=f"μ = {mu:.3g}")
    for s in (-1, 1):
        ax.axvline(mu + s * sigma, color=_C["red"], lw=1, ls="--", label=f"μ ± σ (σ = {sigma:.3g})" if s > 0 else None)
    if alpha:
        ax.axvspan(mu - alpha * sigma, mu + alpha * sigma, color=_C["band"], alpha=0.35, lw=0,
                   label=f"band μ ± {alpha:g}σ")
    ax.set_xlabel("feature value")
    ax.set_ylabel("density")
    ax.set_title(title or "channel histogram")
    ax.legend(fontsize=MIN_FONT_PT)
    return fig


def feature_map(fmap, ax=None, title: str = "", vmin=None, vmax=None, cmap: str = "viridis"):
    """One channel of one image as an image (H, W), with a colour bar."""
    fig, ax = _ax(ax, figsize=(3.2, 3))
    im = ax.imshow(_np(fmap), vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig


def histograms_before_after(before, after, mu: float, ax=None, bins: int = 60, title: str | None = None):
    """Histograms of one channel's values before and after the operator (the mode at μ collapses)."""
    fig, ax = _ax(ax)
    b, a = _np(before).ravel(), _np(after).ravel()
    lo, hi = float(min(b.min(), a.min())), float(max(b.max(), a.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
    ax.hist(b, bins=edges, color=_C["blue"], alpha=0.55, label="before")
    ax.hist(a, bins=edges, color=_C["orange"], alpha=0.55, label="after")
    ax.axvline(mu, color=_C["red"], lw=1, ls="--", label="μ")
    ax.set_xlabel("feature value")
    ax.set_ylabel("count")
    ax.set_title(title or "this image: before / after")
    ax.legend(fontsize=MIN_FONT_PT)
    return fig


def figure1(train_values, mu: float, sigma: float, alpha: float, fmap_before, fmap_after, site: str = "",
            channel: int | None = None):
    """Paper Fig. 1 on a real channel: histogram with μ/σ, the operator curve, one image's feature map
    before/after, and its histograms before/after."""
    plt = _plt()
    fig = plt.figure(figsize=(9, 10.5), layout="constrained")
    gs = fig.add_gridspec(3, 2)
    where = f"{site}, channel {channel}" if site else ""
    channel_histogram(train_values, mu, sigma, alpha, ax=fig.add_subplot(gs[0, 0]),
                      title=f"training-set histogram\n{where}")
    operator_curve(mu, sigma, alpha, ax=fig.add_subplot(gs[0, 1]))
    histograms_before_after(fmap_before, fmap_after, mu, ax=fig.add_subplot(gs[1, 0]))
    b, a = _np(fmap_before), _np(fmap_after)
    vmin, vmax = float(min(b.min(), a.min())), float(max(b.max(), a.max()))
    feature_map(b, ax=fig.add_subplot(gs[2, 0]), title="feature map before", vmin=vmin, vmax=vmax)
    feature_map(a, ax=fig.add_subplot(gs[2, 1]), title=f"feature map after (α={alpha:g})", vmin=vmin, vmax=vmax)
    ax = fig.add_subplot(gs[1, 1])
    blocked = np.abs(b - mu) < alpha * sigma
    ax.imshow(blocked, cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.set_title(f"blocked entries (black): {100 * blocked.mean():.1f}%")
    return fig


def figure2_schematic(ax=None, seed: int = 0):
    """Paper Fig. 2 (schematic, no data): a feature a, its mean μ_a, the mean-centred feature ā = a − μ_a,
    and the sparsified ā after hard thresholding at ±α·σ."""
    fig, ax = _ax(ax, figsize=(9, 3.2)) if ax is not None else (None, None)
    plt = _plt()
    if fig is None:
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.4), layout="constrained")
    else:  # pragma: no cover - a single axis was given: draw only the first panel
        axes = [ax]
    rng = np.random.default_rng(seed)
    a = np.concatenate([rng.normal(0.6, 0.15, 4000), rng.normal(-0.3, 0.2, 6000)])
    mu, sd = a.mean(), a.std()
    centred = a - mu
    sparse = np.where(np.abs(centred) < 0.35 * sd, 0.0, centred)
    panels = [(a, "feature a (before the activation)", mu, "μ_a"), (centred, "mean-centred ā = a − μ_a", 0.0, "0"),
              (sparse, "sparsified ā (|ā| < α·σ → 0)", 0.0, "0")]
    for axi, (v, title, m, lab) in zip(axes, panels):
        axi.hist(v, bins=80, color=_C["blue"], alpha=0.75)
        axi.axvline(m, color=_C["red"], ls="--", lw=1.2, label=lab)
        axi.set_title(title, fontsize=10)
        axi.set_yticks([])
        axi.legend(fontsize=MIN_FONT_PT)
    if len(axes) == 3:
        axes[2].axvspan(-0.35 * sd, 0.35 * sd, color=_C["band"], alpha=0.35, lw=0)
        fig.suptitle("MeanSparse = ℓ0-proximal step on the mean-centred feature (schematic, synthetic data)",
                     fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------------
# accuracy curves and bars
def curves(series: Sequence[Mapping], ax=None, xlabel: str = "α", ylabel: str = "accuracy (%)", title: str = "",
           legend: bool = True):
    """Plot several series. Each is a mapping with ``x``, ``y`` and optionally ``lo``/``hi`` (95% band),
    ``label``, ``ref`` (True: a published reference value, dashed hollow markers), ``color``, ``marker``,
    ``ls`` (line style). The legend goes below the axes."""
    fig, ax = _ax(ax)
    for s in series:
        x, y = _np(s["x"]), _np(s["y"])
        kw = dict(REF if s.get("ref") else OURS)
        for k in ("color", "marker", "ls"):
            if s.get(k):
                kw[k] = s[k]
        line, = ax.plot(x, y, label=s.get("label"), **kw)
        if s.get("lo") is not None and s.get("hi") is not None:
            ax.fill_between(x, _np(s["lo"]), _np(s["hi"]), color=line.get_color(), alpha=0.18, lw=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        set_title(ax, title)
    if legend:
        legend_below(ax)
    return fig


def _col(rows, name):
    if hasattr(rows, "columns"):
        return None if name not in rows.columns else rows[name].to_numpy(dtype=float)
    vals = [r.get(name) for r in rows]
    return None if any(v is None for v in vals) else np.asarray(vals, dtype=float)


def alpha_sweep(rows, reference: Mapping[str, Mapping] | None = None, ax=None, x: str = "alpha",
                metrics: Sequence[str] = ("clean", "robust"), labels: Mapping[str, str] | None = None,
                title: str = "", xlabel: str = "α", colors: Sequence[str] | None = None,
                markers: Sequence[str] | None = None, ls: str | None = None, legend: bool = True):
    """Our clean/robust accuracy (in %, with ``<metric>_lo``/``_hi`` 95% bands) against ``x``; optional
    ``reference`` = {label: {x value: value in %}} drawn as dashed reference lines. ``colors``/``markers`` (one
    per metric) and ``ls`` tell several sweeps drawn on one axes apart."""
    labels = dict(labels or {})
    colors = list(colors or [_C["blue"], _C["red"], _C["green"], _C["purple"]])
    marks = list(markers or MARKERS)
    series = []
    for i, m in enumerate(metrics):
        y = _col(rows, m)
        if y is None:
            continue
        series.append({"x": _col(rows, x), "y": y, "lo": _col(rows, f"{m}_lo"), "hi": _col(rows, f"{m}_hi"),
                       "label": labels.get(m, f"{m} (ours)"), "color": colors[i % len(colors)],
                       "marker": marks[i % len(marks)], "ls": ls})
    for j, (lab, vals) in enumerate((reference or {}).items()):
        xs = sorted(vals)
        series.append({"x": xs, "y": [vals[k] for k in xs], "label": lab, "ref": True,
                       "color": [_C["grey"], _C["orange"], _C["purple"], _C["green"]][j % 4],
                       "marker": MARKERS[(j + 4) % len(MARKERS)]})
    return curves(series, ax=ax, xlabel=xlabel, title=title, legend=legend)


def eps_curves(rows_by_label: Mapping[str, object], reference: Mapping[str, Mapping] | None = None, ax=None,
               title: str = "attack power", x: str = "eps_255"):
    """Robust accuracy vs ε (x in units of 1/255) for several α; reference curves dashed."""
    colors = [_C["blue"], _C["red"], _C["green"], _C["purple"]]
    series = []
    for i, (lab, rows) in enumerate(rows_by_label.items()):
        series.append({"x": _col(rows, x), "y": _col(rows, "robust"), "lo": _col(rows, "robust_lo"),
                       "hi": _col(rows, "robust_hi"), "label": f"{lab} (ours)", "color": colors[i % 4],
                       "marker": MARKERS[i % len(MARKERS)]})
    for i, (lab, vals) in enumerate((reference or {}).items()):
        xs = sorted(vals)
        series.append({"x": xs, "y": [vals[k] for k in xs], "label": lab, "ref": True, "color": colors[i % 4],
                       "marker": MARKERS[(i + 4) % len(MARKERS)]})
    return curves(series, ax=ax, xlabel="ε (×1/255)", title=title)


def bars(groups: Sequence[str], bars_: Mapping[str, Sequence], ax=None, errors: Mapping[str, Sequence] | None = None,
         ref: Sequence[str] = (), title: str = "", ylabel: str = "accuracy (%)", annotate: bool = True,
         ylim=None):
    """Grouped bars: ``bars_`` = {bar label: one value per group}; ``errors`` = {label: [(lo, hi), ...]} (95%)
    drawn as error bars; labels in ``ref`` are published reference values (hatched, hollow)."""
    fig, ax = _ax(ax, figsize=(min(MAX_WIDTH_IN, max(MIN_WIDTH_IN + 0.3, 1.6 * len(groups) + 2)), 4))
    k = len(bars_)
    w = 0.8 / max(k, 1)
    xs = np.arange(len(groups))
    palette = [_C["blue"], _C["orange"], _C["green"], _C["red"], _C["purple"], _C["grey"]]
    for i, (lab, vals) in enumerate(bars_.items()):
        v = np.array([np.nan if a is None else a for a in vals], dtype=float)
        pos = xs - 0.4 + w * (i + 0.5)
        color = palette[i % len(palette)]
        is_ref = lab in ref
        kw = dict(facecolor="none", edgecolor=color, hatch="//", lw=1.2) if is_ref else dict(color=color)
        ax.bar(pos, v, width=w * 0.95, label=lab, **kw)
        if errors and lab in errors:
            lo = np.array([np.nan if e is None else e[0] for e in errors[lab]], dtype=float)
            hi = np.array([np.nan if e is None else e[1] for e in errors[lab]], dtype=float)
            ax.errorbar(pos, v, yerr=[v - lo, hi - v], fmt="none", ecolor="black", capsize=3, lw=1)
        if annotate:
            for p, val in zip(pos, v):
                if np.isfinite(val):
                    ax.text(p, val, f"{val:.1f}", ha="center", va="bottom", fontsize=MIN_FONT_PT)
    ax.set_xticks(xs, groups)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    if title:
        set_title(ax, title)
    legend_below(ax, ncols=min(k, 3))
    return fig


def site_profile(rows_by_label: Mapping[str, object], reference: Mapping[str, Mapping] | None = None, ax=None,
                 metric: str = "robust", title: str = ""):
    """Accuracy vs site index (Table 7: single and cumulative placements)."""
    colors = [_C["blue"], _C["red"], _C["green"], _C["purple"]]
    series = []
    for i, (lab, rows) in enumerate(rows_by_label.items()):
        series.append({"x": _col(rows, "site"), "y": _col(rows, metric), "lo": _col(rows, f"{metric}_lo"),
                       "hi": _col(rows, f"{metric}_hi"), "label": f"{lab} (ours)", "color": colors[i % 4],
                       "marker": MARKERS[i % len(MARKERS)]})
    for i, (lab, vals) in enumerate((reference or {}).items()):
        xs = sorted(vals)
        series.append({"x": xs, "y": [vals[k] for k in xs], "label": lab, "ref": True, "color": colors[i % 4],
                       "marker": MARKERS[(i + 4) % len(MARKERS)]})
    return curves(series, ax=ax, xlabel="site index (0 = stem, odd = main path, even = after add)", title=title)


def blocked_fractions(fractions: Mapping[str, float], ax=None, title: str = "blocked activations per site"):
    """Bar chart of the fraction of entries inside the band at each site (in %)."""
    fig, ax = _ax(ax, figsize=(7, 3.2))
    names = list(fractions)
    ax.bar(range(len(names)), [100 * fractions[n] for n in names], color=_C["blue"])
    ax.set_xticks(range(len(names)), [str(i) for i in range(len(names))])
    ax.set_xlabel("site index")
    ax.set_ylabel("blocked (%)")
    set_title(ax, title)
    return fig


# ------------------------------------------------------------------------------------------------
def to_png(fig, dpi: int = 80, close: bool = True) -> bytes:
    """Render a figure to PNG bytes (for the kernel-free slider frames)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if close:
        _plt().close(fig)
    return buf.getvalue()


def is_blank_png(data: bytes, tol: float = 1.0) -> bool:
    """True when a PNG image is (almost) a single colour: standard deviation of its pixels ≤ ``tol``."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)
    return img.size == 0 or float(img.std()) <= tol
