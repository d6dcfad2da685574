"""Live α exploration (ipywidgets on a running kernel) and the kernel-free α slider for the static book.

* :func:`site_inputs` / :func:`pick_channel` / :func:`sparsify_values`: what one site sees, for Fig. 1.
* :class:`AlphaExplorer` (``explorer(model, x, y)``): drag α → the operator curve, the chosen site's
  histograms, the fraction of blocked activations per site, and clean / robust accuracy on a small batch are
  redrawn. Statistics are computed once; a slider move costs one forward pass (+ a short PGD), cached per α.
* :func:`static_slider`: precomputed PNG frames behind an ``<input type=range>`` with an inline handler
  (no kernel, no third-party JavaScript), for the built book.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from ..core.operator import LAYOUTS
from ..core.placement import operators, set_alpha, set_backward
from ..errors import InputError

__all__ = ["site_inputs", "pick_channel", "sparsify_values", "AlphaExplorer", "explorer", "static_slider",
           "explorer_frames", "pgd_accuracy"]


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
    cheap *live* indicator only; the book's reported numbers come from AutoAttack records."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    step_size = step_size or 2.5 * eps / steps
    was = model.training
    model.eval()
    try:
        delta = (torch.rand(x.shape, generator=g) * 2 - 1).to(x.device) * eps
        xa = (x + delta).clamp(0, 1)
        for _ in range(steps):
            xa.requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(xa), y)
            (grad,) = torch.autograd.grad(loss, xa)
            xa = (xa.detach() + step_size * grad.sign()).clamp(x - eps, x + eps).clamp(0, 1)
        with torch.no_grad():
            return float((model(xa).argmax(1) == y).float().mean())
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
        self._inputs: dict[int, torch.Tensor] = {}
        self._acc_cache: dict = {}

    def inputs(self, site: int) -> torch.Tensor:
        """Cached un-sparsified inputs of ``site`` on the batch (every α = 0)."""
        return self._pass(0.0, site)[1]

    @torch.no_grad()
    def _pass(self, alpha: float, site: int | None = None):
        """One eval forward on the batch with every α = ``alpha``: (blocked fraction per site, input of ``site``).
        Cached per (α, site), so returning to a seen α costs nothing."""
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
                self.model(self.x)
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
            set_alpha(self.model, alpha)
            set_backward(self.model, self.backward)
            try:
                with torch.no_grad():
                    clean = float((self.model(self.x).argmax(1) == self.y).float().mean())
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


def explorer(model, x, y, *, alpha: float = 0.25, alpha_max: float = 1.0, site: int = 0, n_batch: int = 64,
             n_robust: int = 32, pgd_steps: int = 5, eps: float = 8 / 255):
    """An ipywidgets UI: α slider, site selector, backward mode (exact/BPDA), and the live figure.
    Needs a running kernel; returns the widget box (display it)."""
    import ipywidgets as W
    import matplotlib.pyplot as plt
    from IPython.display import display

    ex = AlphaExplorer(model, x, y, n_batch=n_batch, n_robust=n_robust, pgd_steps=pgd_steps, eps=eps)
    a = W.FloatSlider(value=alpha, min=0.0, max=alpha_max, step=0.05, description="α", continuous_update=False,
                      readout_format=".2f")
    s = W.Dropdown(options=[(f"{i}: {op.site.name if op.site else i}", i) for i, op in enumerate(ex.ops)],
                   value=site, description="site")
    b = W.ToggleButtons(options=[("exact gradient (official)", "exact"), ("BPDA (identity backward)", "identity")],
                        value="exact", description="attack")
    status = W.HTML()
    out = W.Output()
    history: dict = {}

    def redraw(_=None):
        t0 = time.perf_counter()
        if ex.backward != b.value:
            ex.backward = b.value
            history.clear()
        with out:
            out.clear_output(wait=True)
            fig = ex.figure(a.value, s.value, history=history)
            display(fig)
            plt.close(fig)
        status.value = f"<small>redrawn in {time.perf_counter() - t0:.2f} s (statistics and site inputs cached)</small>"

    for w in (a, s, b):
        w.observe(redraw, names="value")
    redraw()
    return W.VBox([W.HBox([a, s]), b, status, out])


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
