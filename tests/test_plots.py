"""Figure functions: each draws something non-blank, with reference values styled apart from ours."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from msparse.report import plots


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _png(fig):
    data = plots.to_png(fig)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def test_operator_curve_is_flat_inside_the_band_and_not_blank():
    fig = plots.operator_curve(1.0, 2.0, 0.5)
    line = [l for l in fig.axes[0].lines if l.get_label().startswith("MeanSparse")][0]
    x, y = line.get_data()
    inside = np.abs(x - 1.0) < 1.0
    assert np.allclose(y[inside & np.isfinite(y)], 1.0)
    outside = np.abs(x - 1.0) > 1.01
    assert np.allclose(y[outside & np.isfinite(y)], x[outside & np.isfinite(y)])
    assert not plots.is_blank_png(_png(fig))


def test_channel_histogram_marks_mu_and_sigma():
    rng = np.random.default_rng(0)
    fig = plots.channel_histogram(rng.normal(2, 3, 5000), 2.0, 3.0, alpha=0.25)
    labels = [l.get_label() for l in fig.axes[0].lines]
    assert any(l.startswith("μ =") for l in labels) and any("σ" in l for l in labels)
    assert not plots.is_blank_png(_png(fig))


def test_figure1_has_six_panels():
    rng = np.random.default_rng(0)
    b = rng.normal(0, 1, (16, 16))
    a = np.where(np.abs(b) < 0.3, 0.0, b)
    fig = plots.figure1(rng.normal(0, 1, 2000), 0.0, 1.0, 0.3, b, a, site="layer1.0.msparse_in", channel=3)
    assert len([ax for ax in fig.axes if ax.get_label() != "<colorbar>"]) >= 6
    assert not plots.is_blank_png(_png(fig))


def test_figure2_schematic_draws_three_panels():
    fig = plots.figure2_schematic()
    assert len(fig.axes) == 3
    assert not plots.is_blank_png(_png(fig))


def test_alpha_sweep_styles_reference_dashed_and_ours_with_bands():
    rows = [{"alpha": a, "clean": 80 - a, "clean_lo": 78 - a, "clean_hi": 82 - a, "robust": 40 + a,
             "robust_lo": 38 + a, "robust_hi": 42 + a} for a in (0.0, 0.1, 0.2)]
    fig = plots.alpha_sweep(rows, reference={"APGD (paper)": {0.0: 49.1, 0.2: 50.4}})
    ax = fig.axes[0]
    ref = [l for l in ax.lines if l.get_label() == "APGD (paper)"][0]
    ours = [l for l in ax.lines if l.get_label() == "robust (ours)"][0]
    assert ref.get_linestyle() == "--" and ours.get_linestyle() == "-"
    assert len(ax.collections) == 2  # two 95% bands
    assert not plots.is_blank_png(_png(fig))


def test_alpha_sweep_accepts_a_dataframe():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"alpha": [0.0, 0.2], "clean": [80.0, 79.0], "robust": [40.0, 41.0]})
    fig = plots.alpha_sweep(df)
    assert len(fig.axes[0].lines) == 2


def test_eps_curves_and_site_profile():
    rows = [{"eps_255": e, "robust": 80 - 5 * e, "robust_lo": 78 - 5 * e, "robust_hi": 82 - 5 * e} for e in (1, 2, 4)]
    fig = plots.eps_curves({"α=0": rows}, reference={"α=0 (paper)": {1: 81.1, 2: 77.7}})
    assert {l.get_label() for l in fig.axes[0].lines} == {"α=0 (ours)", "α=0 (paper)"}
    srows = [{"site": i, "robust": 40 + i, "robust_lo": 39 + i, "robust_hi": 41 + i} for i in range(3)]
    fig2 = plots.site_profile({"single": srows})
    assert not plots.is_blank_png(_png(fig2))


def test_bars_with_errors_and_hatched_reference():
    fig = plots.bars(["clean", "robust"], {"base": [80, 40], "MeanSparse": [79, 42], "paper": [93.3, 72.1]},
                     errors={"base": [(78, 82), (38, 42)]}, ref=["paper"])
    hatched = [p for p in fig.axes[0].patches if p.get_hatch()]
    assert len(hatched) == 2
    assert not plots.is_blank_png(_png(fig))


def test_blocked_fractions_and_blank_detection():
    fig = plots.blocked_fractions({"a": 0.1, "b": 0.3})
    assert not plots.is_blank_png(_png(fig))
    import matplotlib.pyplot as plt

    empty = plt.figure(figsize=(2, 2))
    assert plots.is_blank_png(plots.to_png(empty))


def test_panels_lay_out_rows_of_two_within_the_book_width():
    fig, axes = plots.panels(5)
    assert len(axes) == 5 and len(fig.axes) == 5
    w, h = fig.get_size_inches()
    assert plots.MIN_WIDTH_IN <= w <= plots.MAX_WIDTH_IN and h == pytest.approx(3 * 3.6)


def test_readable_clamps_the_width_and_raises_small_text():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(13, 4))
    ax.text(0, 0, "tiny", fontsize=5)
    ax.set_title("title", fontsize=12)
    plots.readable(fig)
    assert fig.get_size_inches()[0] == pytest.approx(plots.MAX_WIDTH_IN)
    assert fig.get_size_inches()[1] == pytest.approx(4 * plots.MAX_WIDTH_IN / 13)
    assert min(plots.text_sizes(fig)) >= plots.MIN_FONT_PT and ax.title.get_fontsize() == 12
    small, _ = plt.subplots(figsize=(3, 2))
    assert plots.readable(small).get_size_inches()[0] == pytest.approx(plots.MIN_WIDTH_IN)


@pytest.mark.parametrize("make", [
    lambda: plots.alpha_sweep([{"alpha": a, "clean": 80 - a, "robust": 40 + a, "clean_lo": 70, "clean_hi": 90,
                                "robust_lo": 30, "robust_hi": 50} for a in (0, 0.1, 0.2)],
                              reference={"clean (paper)": {0: 85, 0.2: 84}, "apgd (paper)": {0: 49, 0.2: 51}}),
    lambda: plots.bars(["clean", "apgd", "bpda"], {"base": [80, 40, 39], "ours": [79, 43, 38]},
                       errors={"base": [(75, 85), (35, 45), (34, 44)]}),
    lambda: plots.figure2_schematic(),
    lambda: plots.figure1(np.random.default_rng(0).normal(0, 1, 500), 0.0, 1.0, 0.3,
                          np.random.default_rng(1).normal(0, 1, (8, 8)), np.zeros((8, 8))),
])
def test_figures_fit_the_book_column_with_readable_text(make):
    fig = make()
    w = fig.get_size_inches()[0]
    assert plots.MIN_WIDTH_IN <= w <= plots.MAX_WIDTH_IN, w
    assert min(plots.text_sizes(fig)) >= plots.MIN_FONT_PT


def test_legends_sit_below_the_axes_not_over_the_reference_lines():
    fig = plots.alpha_sweep([{"alpha": a, "clean": 80, "robust": 40, "clean_lo": 75, "clean_hi": 85,
                              "robust_lo": 35, "robust_hi": 45} for a in (0, 0.5)],
                            reference={"clean (paper)": {0: 85, 0.5: 84}})
    ax = fig.axes[0]
    fig.canvas.draw()
    leg = ax.get_legend().get_window_extent()
    assert leg.y1 <= ax.get_window_extent().y0, "the legend overlaps the axes"


def test_several_sweeps_on_one_axes_get_their_own_colour_and_marker():
    rows = [{"alpha": a, "robust": 40 + a, "robust_lo": 35, "robust_hi": 45} for a in (0, 0.5)]
    fig = plots.alpha_sweep(rows, metrics=("robust",), colors=["#2ca02c"], markers=["^"], labels={"robust": "TRADES"})
    plots.alpha_sweep(rows, ax=fig.axes[0], metrics=("robust",), colors=["#9467bd"], markers=["D"],
                      labels={"robust": "ANCRA"})
    lines = {l.get_label(): l for l in fig.axes[0].lines}
    assert lines["TRADES"].get_marker() != lines["ANCRA"].get_marker()
    assert lines["TRADES"].get_color() != lines["ANCRA"].get_color()


def test_a_long_legend_gets_fewer_columns_and_never_squeezes_the_axes():
    assert plots.legend_columns(["clean (ours)", "apgd (ours)"], 4.5) == 2
    assert plots.legend_columns(["msparse/resnet18-gelu-w8-ancra (ANCRA): worst case"], 4.5) == 1
    fig, axes = plots.panels(2)
    rows = [{"alpha": a, "robust": 40, "robust_lo": 35, "robust_hi": 45} for a in (0, 0.5)]
    for i in range(5):
        plots.alpha_sweep(rows, ax=axes[0], metrics=("robust",), labels={"robust": f"a rather long series label {i}"})
    fig.canvas.draw()
    assert axes[0].get_window_extent().width >= 0.6 * axes[1].get_window_extent().width


def test_a_long_title_is_wrapped_so_the_saved_figure_keeps_its_width():
    from PIL import Image
    import io

    title = "msparse/resnet18-gelu-w8-pgdat: robust accuracy by attack (95% Wilson intervals), every α of the grid"
    fig = plots.bars(["α=0", "α=0.35"], {"apgd-ce+t": [40, 43], "bpda:apgd-ce+t": [40, 37]}, title=title)
    w_in = fig.get_size_inches()[0]
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")   # as the notebook's inline backend saves it
    assert Image.open(io.BytesIO(buf.getvalue())).size[0] <= 100 * (w_in + 2 * 0.1) + 2   # + the 0.1 in padding
    assert "\n" in fig.axes[0].get_title()
