"""Live α exploration (ipywidgets on a running kernel) and the kernel-free α slider for the static book.

* :func:`site_inputs` / :func:`pick_channel` / :func:`sparsify_values`: what one site sees, for Fig. 1.
* :class:`AlphaExplorer`: per α, one forward pass on a small batch gives every site's blocked fraction, the chosen
  site's input and the clean accuracy; a short PGD gives the robust indicator. Everything is cached per α.
* :class:`LiveExplorer` (``explorer(model, x, y)``): drag α → the operator curve, the chosen site's histograms,
  the fraction of blocked activations per site, and clean / robust accuracy are redrawn. The figure is built once
  per site (channel, histogram bins and everything else that does not depend on α) and its artists are updated in
  place and rendered to a PNG image widget; :meth:`LiveExplorer.update` is the slider's callback.
* :func:`static_slider`: precomputed PNG frames behind an ``<input type=range>`` with an inline handler
  (no kernel, no third-party JavaScript), for the built book.
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..core.operator import LAYOUTS
from ..core.placement import operators, set_alpha, set_backward
from ..errors import InputError

__all__ = ["site_inputs", "pick_channel", "sparsify_values", "AlphaExplorer", "LiveExplorer", "explorer",
           "static_slider", "explorer_frames", "pgd_accuracy"]


@torch.no_grad()
def site_inputs(model, site: int, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The tensor reaching MeanSparse site ``site`` (its input, before the operator) for images ``x``,
    computed with every α at its current value (set α = 0 first for the un-sparsified features)."""
    ops = operators(model, required=True)
    if not 0 <= site < len(ops):
        raise IndexError(f"site index {site} out of range: the model has {len(ops)} sites (0..{len(ops) - 1})")
    got = []
    handle = ops[site].register_forward_pre_hook(lambda m, args: got.append(args[0].detach().cpu()))
    was = model.training
    model.eval()
    try:
        for xb in x.split(batch_size):
            model(xb)
    finally:
        handle.remove()
        model.train(was)
    return torch.cat(got)


def _channel_dim(op) -> int:
    return LAYOUTS[op.layout][1]


def channel_values(op, feats: torch.Tensor, c: int) -> torch.Tensor:
    """Channel ``c`` of a site's features ([N, H, W] for NCHW)."""
    return feats.select(_channel_dim(op), c)


def pick_channel(op, seed: int = 0) -> int:
    """A channel chosen at random (seeded) among those with σ > 0 (the paper's Fig. 1 picks one at random)."""
    ok = np.flatnonzero(op.var.detach().cpu().numpy() > 0)
    if len(ok) == 0:
        raise InputError("every channel of this site has σ = 0 (not calibrated?)")
    return int(np.random.default_rng(seed).choice(ok))


def sparsify_values(v, mu: float, sigma: float, alpha: float):
    """The operator on values of one channel: μ where |v − μ| < α·σ (strict), v elsewhere."""
    v = torch.as_tensor(v)
    return torch.where((v - mu).abs() < alpha * sigma, torch.full_like(v, mu), v)


# ------------------------------------------------------------------------------------------------
def pgd_accuracy(model, x, y, eps: float = 8 / 255, steps: int = 5, step_size: float | None = None,
                 seed: int = 0) -> float:
    """Robust accuracy under a short L∞ PGD (random start; the model's current backward mode) — a
    cheap *live* indicator only; the book's reported numbers come from AutoAttack records. An image counts as robust
    only if every iterate (the random start, each step and the last) is classified correctly; an image is dropped
    from the attack at the first iterate that breaks it (so later steps cost only the images still standing)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    step_size = step_size or 2.5 * eps / steps
    was = model.training
    model.eval()
    try:
        delta = (torch.rand(x.shape, generator=g) * 2 - 1).to(x.device) * eps
        xa = (x + delta).clamp(0, 1)
        alive = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(steps):
            idx = alive.nonzero().flatten()
            if len(idx) == 0:
                break
            xs, ys = xa[idx].requires_grad_(True), y[idx]
            logits = model(xs)
            alive[idx] = logits.detach().argmax(1) == ys
            (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, ys, reduction="sum"), xs)
            xa[idx] = (xs.detach() + step_size * grad.sign()).clamp(x[idx] - eps, x[idx] + eps).clamp(0, 1)
        idx = alive.nonzero().flatten()
        if len(idx):
            with torch.no_grad():
                alive[idx] = model(xa[idx]).argmax(1) == y[idx]
        return float(alive.float().mean())
    finally:
        model.train(was)


class AlphaExplorer:
    """State of the live α explorer for one model (see :func:`explorer`).

    Statistics are fixed (calibrated once); per α value the explorer runs one forward pass on a small batch
    (``n_batch`` images) that yields every site's blocked fraction and the chosen site's input, plus clean
    accuracy and, if ``n_robust`` > 0, a ``pgd_steps``-step PGD on ``n_robust`` images. Everything is cached
    per α, so revisiting a value is instant.
    """

    def __init__(self, model, x, y, *, n_batch: int = 64, n_robust: int = 32, pgd_steps: int = 5,
                 eps: float = 8 / 255, backward: str = "exact"):

        self.model, self.ops = model, operators(model, required=True)
        self.x, self.y = x[:n_batch], y[:n_batch]
        self.n_robust, self.pgd_steps, self.eps, self.backward = n_robust, pgd_steps, eps, backward
        set_alpha(model, 0.0)
        self._inputs: dict[tuple, tuple] = {}
        self._clean: dict[float, float] = {}
        self._acc_cache: dict = {}

    def inputs(self, site: int) -> torch.Tensor:
        """Cached un-sparsified inputs of ``site`` on the batch (every α = 0)."""
        return self._pass(0.0, site)[1]

    @torch.no_grad()
    def _pass(self, alpha: float, site: int | None = None):
        """One eval forward on the batch with every α = ``alpha``: (blocked fraction per site, input of ``site``).
        Cached per (α, site), so returning to a seen α costs nothing; the same pass records the clean accuracy."""
        key = (round(float(alpha), 6), site)
        if key not in self._inputs:
            fractions, got, handles = {}, {}, []
            for i, op in enumerate(self.ops):
                def hook(m, args, _i=i):
                    fractions[_i] = m.blocked_fraction(args[0])
                    if _i == site:
                        got["x"] = args[0].detach().cpu()
                handles.append(op.register_forward_pre_hook(hook))
            was = self.model.training
            try:
                set_alpha(self.model, alpha)
                self.model.eval()
                logits = self.model(self.x)
                self._clean[key[0]] = float((logits.argmax(1) == self.y).float().mean())
            finally:
                for h in handles:
                    h.remove()
                set_alpha(self.model, 0.0)
                self.model.train(was)
            self._inputs[key] = (fractions, got.get("x"))
        return self._inputs[key]

    def blocked(self, alpha: float) -> dict[int, float]:
        """Fraction of each site's entries inside its band when every site has α = ``alpha`` (one forward pass
        on the batch; upstream sites active, as in the sparsified model)."""
        return dict(self._pass(alpha)[0])

    def accuracy(self, alpha: float) -> dict:
        """Clean accuracy on the batch and short-PGD accuracy on its first ``n_robust`` images at ``alpha``."""
        key = round(float(alpha), 6), self.backward
        if key not in self._acc_cache:

            t0 = time.perf_counter()
            if key[0] not in self._clean:
                self._pass(alpha)
            clean = self._clean[key[0]]
            set_alpha(self.model, alpha)
            set_backward(self.model, self.backward)
            try:
                robust = None
                if self.n_robust > 0:
                    robust = pgd_accuracy(self.model, self.x[: self.n_robust], self.y[: self.n_robust], self.eps,
                                          self.pgd_steps)
            finally:
                set_alpha(self.model, 0.0)
                set_backward(self.model, "exact")
            self._acc_cache[key] = {"clean": clean, "robust": robust, "seconds": time.perf_counter() - t0}
        return self._acc_cache[key]

    def figure(self, alpha: float, site: int = 0, channel: int | None = None, accuracy: bool = True,
               history: dict | None = None):
        """The explorer's figure at ``alpha``: operator curve, the site channel's histogram before/after,
        blocked fraction per site, and (optionally) accuracy."""
        import matplotlib.pyplot as plt

        from . import plots

        op = self.ops[site]
        c = pick_channel(op) if channel is None else channel
        mu, sigma = float(op.mean[c]), float(op.var[c].sqrt())
        frac, feats = self._pass(alpha, site)
        vals = channel_values(op, feats, c)
        fig, axes = plt.subplots(2, 2, figsize=(11, 7), layout="constrained")
        axes = axes.ravel()
        plots.operator_curve(mu, sigma, alpha, ax=axes[0], title=f"site {site}, channel {c}")
        plots.histograms_before_after(vals, sparsify_values(vals, mu, sigma, alpha), mu, ax=axes[1],
                                      title=f"channel {c}: before / after (α={alpha:g})")
        plots.blocked_fractions(frac, ax=axes[2], title=f"blocked activations (mean {100 * np.mean(list(frac.values())):.1f}%)")
        ax = axes[3]
        if accuracy:
            acc = self.accuracy(alpha)
            hist = history if history is not None else {}
            hist[round(alpha, 6)] = acc
            a_s = sorted(hist)
            ax.plot(a_s, [100 * hist[a]["clean"] for a in a_s], "o-", label=f"clean (n={len(self.x)})")
            if acc["robust"] is not None:
                ax.plot(a_s, [100 * hist[a]["robust"] for a in a_s], "o-",
                        label=f"PGD-{self.pgd_steps} ({self.backward} backward, n={self.n_robust})")
            ax.axvline(alpha, color="grey", ls=":")
            ax.set_xlabel("α")
            ax.set_ylabel("accuracy (%)")
            ax.set_title("live indicator (small batch, not a record)")
            ax.legend(fontsize=8)
        else:
            ax.axis("off")
        return fig


def _render_png(fig, draw: bool = True) -> bytes:
    """The figure as PNG bytes at its own dpi: one Agg draw (``draw=False``: the canvas as it is, e.g. after a
    blit), then fast zlib (level 1) through Pillow."""
    from PIL import Image

    if draw:
        fig.canvas.draw()
    buf = io.BytesIO()
    Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba()).save(buf, format="png",
                                                                                           compress_level=1)
    return buf.getvalue()


class LiveExplorer:
    """The live α explorer: an α slider, a site selector, the attack's backward mode, and one figure.

    The figure (operator curve, the site channel's histograms before/after, blocked fraction per site, accuracy
    vs α) is built once per site with everything that does not depend on α (channel, μ, σ, histogram bins, axes
    and layout); :meth:`update` then only computes what α changes (one forward pass on ``n_batch`` images for the
    blocked fractions, the site's input and the clean accuracy; a ``pgd_steps``-step PGD on ``n_robust`` images;
    all cached per α by :class:`AlphaExplorer`), moves the artists and renders a PNG into an image widget.
    Without ipywidgets it still works headless (``box`` is then ``None``; benchmarks call :meth:`update`).
    """

    def __init__(self, model, x, y, *, alpha: float = 0.25, alpha_max: float = 1.0, site: int = 0,
                 n_batch: int = 64, n_robust: int = 16, pgd_steps: int = 5, eps: float = 8 / 255, dpi: int = 72,
                 widgets: bool = True):
        self.ex = AlphaExplorer(model, x, y, n_batch=n_batch, n_robust=n_robust, pgd_steps=pgd_steps, eps=eps)
        self.alpha, self.alpha_max, self.site, self.dpi = float(alpha), float(alpha_max), int(site), dpi
        self.history: dict[float, dict] = {}
        self.png: bytes = b""
        self.seconds = 0.0
        self._fig = None
        self.box = self._build_widgets(alpha_max) if widgets else None
        self.update()

    # -- widgets ---------------------------------------------------------------------------------
    def _build_widgets(self, alpha_max: float):
        import ipywidgets as W

        self._slider = W.FloatSlider(value=self.alpha, min=0.0, max=alpha_max, step=0.05, description="α",
                                     continuous_update=False, readout_format=".2f")
        self._sites = W.Dropdown(options=[(f"{i}: {op.site.name if op.site else i}", i)
                                          for i, op in enumerate(self.ex.ops)], value=self.site, description="site")
        self._mode = W.ToggleButtons(options=[("exact gradient (official)", "exact"),
                                              ("BPDA (identity backward)", "identity")],
                                     value="exact", description="attack")
        self._status = W.HTML()
        self._image = W.Image(format="png")
        self._slider.observe(lambda change: self.update(alpha=change["new"]), names="value")
        self._sites.observe(lambda change: self.update(site=change["new"]), names="value")
        self._mode.observe(lambda change: self.update(backward=change["new"]), names="value")
        return W.VBox([W.HBox([self._slider, self._sites]), self._mode, self._status, self._image])

    # -- figure ----------------------------------------------------------------------------------
    def _build_figure(self):
        """The figure for the current site: every artist whose data moves with α, created once."""
        import matplotlib.pyplot as plt

        if self._fig is not None:
            plt.close(self._fig)
        ex, site = self.ex, self.site
        op = ex.ops[site]
        self.channel = c = pick_channel(op)
        self.mu, self.sigma = float(op.mean[c]), float(op.var[c].sqrt())
        before = channel_values(op, ex.inputs(site), c).flatten().numpy()
        lo, hi = float(before.min()), float(before.max())
        self.edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, 61)
        fig, axes = plt.subplots(2, 2, figsize=(11, 7), dpi=self.dpi)   # drawn once at the PNG's resolution
        a0, a1, a2, a3 = axes.ravel()
        mu, sigma = self.mu, self.sigma
        self.grid = np.linspace(mu - 4 * sigma, mu + 4 * sigma, 801)
        (ident,) = a0.plot(self.grid, self.grid, color="grey", lw=1, ls=":", label="identity")
        (self._curve,) = a0.plot(self.grid, self.grid, lw=2, label="MeanSparse")
        self._band = a0.axvspan(mu, mu, color="#f2c14e", alpha=0.35, lw=0, label="blocked band μ ± ασ")
        mu0 = a0.axvline(mu, color="#d62728", lw=1, ls="--")
        a0.set_xlabel("input")
        a0.set_ylabel("output")
        a0.legend(fontsize=8, loc="upper left")
        counts, _ = np.histogram(before, self.edges)
        self._hist_before = a1.stairs(counts, self.edges, fill=True, alpha=0.55, label="before")
        self._hist_after = a1.stairs(counts, self.edges, fill=True, alpha=0.55, label="after")
        mu1 = a1.axvline(mu, color="#d62728", lw=1, ls="--", label="μ")
        # the largest bin any α ≤ alpha_max can make (the centre's bin grows with α): a fixed count axis
        top = np.histogram(sparsify_values(torch.from_numpy(before), mu, sigma, self.alpha_max).numpy(), self.edges)[0]
        a1.set_ylim(0, 1.05 * max(counts.max(), top.max(), 1))
        a1.set_xlabel("feature value")
        a1.set_ylabel("count")
        a1.legend(fontsize=8)
        self._bars = a2.bar(range(len(ex.ops)), np.zeros(len(ex.ops)))
        a2.set_ylim(0, 100)
        a2.set_xlabel("site index")
        a2.set_ylabel("blocked (%)")
        (self._clean_line,) = a3.plot([], [], "o-", label=f"clean (n={len(ex.x)})")
        (self._robust_line,) = a3.plot([], [], "o-", label=f"PGD-{ex.pgd_steps} (n={ex.n_robust})")
        self._alpha_line = a3.axvline(self.alpha, color="grey", ls=":")
        a3.set_xlim(-0.02, self.alpha_max + 0.02)
        a3.set_ylim(0, 100)
        a3.set_xlabel("α")
        a3.set_ylabel("accuracy (%)")
        a3.set_title("live indicator (small batch, not a record)")
        self._axes = (a0, a1, a2, a3)
        for ax, title in ((a0, f"site {site}, channel {c} (α=0)"), (a1, f"channel {c}: before / after (α=0)"),
                          (a2, "blocked activations (mean 0.0%)")):
            ax.set_title(title)   # the layout reserves their room; the text changes with α
        fig.set_layout_engine("constrained")
        fig.canvas.draw()
        fig.set_layout_engine("none")   # positions fixed once: later draws skip the layout solver
        for ax in self._axes:
            ax.set_autoscale_on(False)  # every axis range fixed: the background below stays valid for every α
        # what moves with α, in drawing order (each later artist over the earlier ones, as in a full draw); the
        # rest (axes, ticks, labels, the "before" histogram) is drawn once into a background that each update
        # restores before drawing only these (blitting)
        self._animated = [self._band, ident, self._curve, mu0, a0.get_legend(), a0.title, self._hist_after, mu1,
                          a1.get_legend(), a1.title, *self._bars, a2.title, self._clean_line, self._robust_line,
                          self._alpha_line, a3.title]
        for artist in self._animated:
            artist.set_animated(True)
        fig.canvas.draw()
        self._background = fig.canvas.copy_from_bbox(fig.bbox)
        self._fig = fig

    def _draw(self):
        """Move the artists to the current α and render the PNG."""
        ex, alpha, mu, sigma = self.ex, self.alpha, self.mu, self.sigma
        fractions, feats = ex._pass(alpha, self.site)
        acc = ex.accuracy(alpha)
        self.history[round(alpha, 6)] = acc
        a0, a1, a2, a3 = self._axes
        curve = np.where(np.abs(self.grid - mu) < alpha * sigma, mu, self.grid)
        self._curve.set_ydata(curve)
        t = alpha * sigma
        self._band.set_x(mu - t)
        self._band.set_width(2 * t)
        a0.set_title(f"site {self.site}, channel {self.channel} (α={alpha:g})")
        vals = channel_values(ex.ops[self.site], feats, self.channel).flatten()
        before = np.histogram(vals.numpy(), self.edges)[0]
        after = np.histogram(sparsify_values(vals, mu, sigma, alpha).numpy(), self.edges)[0]
        self._hist_before.set_data(before)
        self._hist_after.set_data(after)
        a1.set_title(f"channel {self.channel}: before / after (α={alpha:g})")
        for bar, i in zip(self._bars, range(len(ex.ops))):
            bar.set_height(100 * fractions.get(i, 0.0))
        a2.set_title(f"blocked activations (mean {100 * np.mean(list(fractions.values())):.1f}%)")
        xs = sorted(self.history)
        self._clean_line.set_data(xs, [100 * self.history[a]["clean"] for a in xs])
        robust = [a for a in xs if self.history[a]["robust"] is not None]
        self._robust_line.set_data(robust, [100 * self.history[a]["robust"] for a in robust])
        label = f"PGD-{ex.pgd_steps} ({ex.backward} backward, n={ex.n_robust})"
        if label != self._robust_line.get_label() or a3.get_legend() is None:   # a legend is rebuilt only when it changes
            self._robust_line.set_label(label)
            old = a3.get_legend()
            a3.legend(fontsize=8, loc="lower left").set_animated(True)
            self._animated = [a for a in self._animated if a is not old] + [a3.get_legend()]
        self._alpha_line.set_xdata([alpha, alpha])
        canvas = self._fig.canvas
        canvas.restore_region(self._background)
        for artist in self._animated:
            self._fig.draw_artist(artist)
        self.png = _render_png(self._fig, draw=False)

    def update(self, alpha: float | None = None, site: int | None = None, backward: str | None = None) -> float:
        """Redraw after a change of α, site or backward mode (the widgets' callback); returns the seconds taken."""
        t0 = time.perf_counter()
        if alpha is not None:
            self.alpha = float(alpha)
        if backward is not None and backward != self.ex.backward:
            self.ex.backward = backward
            self.history.clear()
        if site is not None and int(site) != self.site:
            self.site = int(site)
            self._fig = self._close()
        if self._fig is None:
            self._build_figure()
        self._draw()
        self.seconds = time.perf_counter() - t0
        if self.box is not None:
            self._image.value = self.png
            self._status.value = (f"<small>redrawn in {self.seconds:.2f} s (statistics, site inputs and figure "
                                  "layout cached)</small>")
        return self.seconds

    def _close(self):
        import matplotlib.pyplot as plt

        if self._fig is not None:
            plt.close(self._fig)
        return None


def explorer(model, x, y, *, alpha: float = 0.25, alpha_max: float = 1.0, site: int = 0, n_batch: int = 64,
             n_robust: int = 16, pgd_steps: int = 5, eps: float = 8 / 255):
    """An ipywidgets UI: α slider, site selector, backward mode (exact/BPDA), and the live figure
    (:class:`LiveExplorer`). Needs a running kernel; returns the widget box (display it)."""
    live = LiveExplorer(model, x, y, alpha=alpha, alpha_max=alpha_max, site=site, n_batch=n_batch,
                        n_robust=n_robust, pgd_steps=pgd_steps, eps=eps)
    return live.box


# ------------------------------------------------------------------------------------------------
def explorer_frames(ex: AlphaExplorer, alphas: Sequence[float], site: int = 0, channel: int | None = None,
                    records: dict | None = None, dpi: int = 72, series: Sequence[Mapping] | None = None,
                    title: str = "stored records") -> list[tuple[str, bytes]]:
    """PNG frames for :func:`static_slider`: the explorer's figure at each α, made readable in the book
    (:func:`msparse.report.plots.readable`). ``series`` (mappings for :func:`msparse.report.plots.curves`: x = α,
    y in %, ``lo``/``hi`` 95% Wilson bounds, ``label``) from stored evaluation records replaces the live indicator
    panel when given, titled ``title``; ``records`` = {α: (clean %, robust %, label)} is the older form without
    intervals."""
    import matplotlib.pyplot as plt

    from . import plots

    frames = []
    for a in alphas:
        fig = ex.figure(a, site, channel, accuracy=records is None and series is None)
        if series is not None:
            ax = fig.axes[3]
            ax.axis("on")
            plots.curves(series, ax=ax, title=title)
            ax.axvline(a, color="grey", ls=":")
        elif records is not None:
            ax = fig.axes[3]
            ax.axis("on")
            xs = sorted(records)
            ax.plot(xs, [records[k][0] for k in xs], "o-", label="clean")
            ax.plot(xs, [records[k][1] for k in xs], "o-", label=records[xs[0]][2])
            ax.axvline(a, color="grey", ls=":")
            ax.set_xlabel("α")
            ax.set_ylabel("accuracy (%)")
            ax.set_title(f"stored records: {records[xs[0]][2]}")
            ax.legend(fontsize=8)
        plots.readable(fig)
        frames.append((f"α = {a:g}", plots.to_png(fig, dpi=dpi)))
        plt.close(fig)
    return frames


def static_slider(frames: Sequence[tuple[str, bytes]], start: int = 0, title: str = "", uid: str | None = None) -> str:
    """HTML for a kernel-free slider: every frame is an ``<img>`` (PNG, base64), one shown at a time; the
    ``<input type=range>`` switches them with an inline handler (no script tag, no third-party code)."""
    if not frames:
        raise InputError("static_slider needs at least one frame")
    uid = uid or f"ms{abs(hash(tuple(l for l, _ in frames))) % 10**8}"
    imgs = []
    for i, (label, png) in enumerate(frames):
        src = "data:image/png;base64," + base64.b64encode(png).decode()
        imgs.append(f'<img class="ms-frame" data-label="{html.escape(label)}" alt="{html.escape(title)} {html.escape(label)}" '
                    f'src="{src}" style="max-width:100%;display:{"block" if i == start else "none"}">')
    handler = ("var b=this.closest('.ms-slider');var f=b.querySelectorAll('img.ms-frame');"
               "for(var i=0;i<f.length;i++){f[i].style.display=(i==this.value)?'block':'none';}"
               "b.querySelector('.ms-label').textContent=f[this.value].getAttribute('data-label');")
    return (f'<div class="ms-slider" id="{uid}">'
            + (f"<div><b>{html.escape(title)}</b></div>" if title else "")
            + f'<input type="range" min="0" max="{len(frames) - 1}" step="1" value="{start}" '
              f'aria-label="{html.escape(title or "alpha")}" style="width:60%" oninput="{handler}"> '
            + f'<span class="ms-label">{html.escape(frames[start][0])}</span>'
            + "".join(imgs) + "</div>")
