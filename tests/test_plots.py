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
