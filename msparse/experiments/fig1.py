"""Paper Fig. 1–2: the MeanSparse operator drawn on a real channel (no numbers to reproduce).

The paper's Fig. 1 shows one randomly chosen channel of the first MeanSparse position of RaWideResNet (CIFAR-10):
its training-set histogram with μ and σ, the operator curve (flat at μ inside μ ± ασ), one test image's feature
map before and after the operator, and the histograms before/after. Fig. 2 is a schematic of the mean-centred
feature. Neither figure has numbers, so nothing is checked against the paper and the page carries no verdict:
here Fig. 1 is redrawn from the weights and images of the model given (default: the shipped offline default),
computed directly (no result record), and Fig. 2 is drawn on synthetic data.

    res = fig1.run()
    fig1.figure(res); fig1.figure2(); fig1.table(res); res.note
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .setup import Setup, setup
from .pages import Page, param, register

__all__ = ["Fig1", "run", "figure", "figure2", "table"]


@dataclass
class Fig1:
    """One channel of one MeanSparse site: its statistics, the training-set values of the channel, one test
    image's feature map before/after the operator at ``alpha``, and the page's no-verdict note."""
    setup: Setup
    site_index: int
    site: str
    channels: int
    layout: str
    channel: int
    mu: float
    sigma: float
    alpha: float
    image_index: int
    train_values: object   # channel values on the statistics images [N, H, W]
    before: object         # the test image's feature map [H, W]
    after: object          # the same after the operator
    note: str = ""         # the italic "carries no verdict" sentence
    rows: list[dict] = field(default_factory=list)   # no record: Fig. 1 is computed directly

    @property
    def caption(self) -> str:
        """Markdown: the site, channel, its statistics and the test image."""
        s = self.setup
        return (f"Site **{self.site}** (index {self.site_index}, {self.channels} channels, layout {self.layout}), "
                f"channel {self.channel}: μ = {self.mu:.4g}, σ = {self.sigma:.4g} (statistics: {s.stats['mode']}, "
                f"{s.stats['n_samples']} training images); test image {self.image_index}.")


def run(model: str = "msparse/default", *, data_source: str = "auto", n_train: int = 1000, site_index: int = 0,
        channel: int = -1, alpha: float = 0.25, image_index: int = 0, device: str = "cpu", seed: int = 0,
        use_stored: bool = True, results_dir: str | None = None, progress: bool = True) -> Fig1:
    """Channel ``channel`` (-1: one at random with ``seed``) of MeanSparse site ``site_index``: its values on the
    ``n_train`` statistics images, and test image ``image_index``'s feature map before/after the operator at
    ``alpha``. Nothing is evaluated (``progress`` is accepted for a uniform signature)."""
    from ..core.placement import operators
    from ..report import widgets

    s = setup(model, n_examples=image_index + 1, n_train=n_train, data_source=data_source, device=device,
              use_stored=use_stored, results_dir=results_dir)
    op = operators(s.model)[site_index]
    c = widgets.pick_channel(op, seed) if channel < 0 else channel
    mu, sigma = float(op.mean[c]), float(op.var[c].sqrt())
    train_vals = widgets.channel_values(op, widgets.site_inputs(s.model, site_index, s.x_train), c)
    before = widgets.channel_values(op, widgets.site_inputs(s.model, site_index,
                                                            s.x[image_index:image_index + 1]), c)[0]
    after = widgets.sparsify_values(before, mu, sigma, alpha)
    note = (f"_The figure is redrawn on a real channel of {s.model_name}"
            + (" (random weights: an infrastructure test)" if s.is_random else "")
            + " (the paper used RaWRN-70-16, not available offline). The histogram is centred at μ, the band "
            "μ ± ασ is collapsed onto μ, and entries outside it pass unchanged. The figure has no numbers to "
            "compare, so this page carries no verdict._")
    return Fig1(s, site_index, op.site.name, op.channels, op.layout, c, mu, sigma, alpha, image_index, train_vals,
                before, after, note)


def figure(res: Fig1):
    """Paper Fig. 1 on the chosen channel: histogram with μ/σ, operator curve, feature map before/after."""
    from ..report import plots

    return plots.figure1(res.train_values, res.mu, res.sigma, res.alpha, res.before, res.after, site=res.site,
                         channel=res.channel)


def figure2():
    """Paper Fig. 2: the mean-centred feature (schematic, synthetic data)."""
    from ..report import plots

    return plots.figure2_schematic()


def table(res: Fig1):
    """The drawn channel: site, channel, μ, σ, the band μ ± ασ and the statistics behind them."""
    import pandas as pd

    s = res.setup
    return pd.DataFrame([{"site": res.site, "site index": res.site_index, "channels": res.channels,
                          "layout": res.layout, "channel": res.channel, "μ": round(res.mu, 4),
                          "σ": round(res.sigma, 4), "α": res.alpha,
                          "band low": round(res.mu - res.alpha * res.sigma, 4),
                          "band high": round(res.mu + res.alpha * res.sigma, 4),
                          "statistics": f"{s.stats['mode']}, {s.stats['n_samples']} training images",
                          "test image": res.image_index}]).set_index("site")


# ================================================================================================
# the page (msparse.experiments.pages)
# ================================================================================================
@dataclass
class Params:
    """The parameters of the page ``fig1_operator`` in the order of its notebook's parameters cell, which is
    rendered from them (:func:`msparse.experiments.pages.render_parameters`)."""
    model: str = param("msparse/default")
    dataset: str = param("cifar10")
    data_source: str = param("auto", "auto | offline | official")
    n_train: int = param(1000, "training images for μ, σ")
    site_index: int = param(0, "MeanSparse site (0 is the first, as in the paper)")
    channel: int = param(-1, "-1 picks one at random with seed")
    alpha: float = param(0.25, "the paper's α for RaWRN-70-16")
    image_index: int = param(0, "test image")
    device: str = param("cpu", "cpu | cuda | auto")
    seed: int = param(0)
    use_stored: bool = param(True, "reuse stored result records")
    results_dir: str | None = param(None, "None means $MSPARSE_RESULTS or results/")



PAGE = register(Page("fig1_operator", "Fig. 1–2: the operator on a real channel",
                     "The method", Params, __name__,
                     quick={"n_train": 256}))
