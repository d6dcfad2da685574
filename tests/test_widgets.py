"""The α explorer: site inputs, cached re-thresholding, the live widget, and the kernel-free slider."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from torch import nn

import msparse as ms
import msparse.core.placement as pl
from msparse.report import widgets


def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.GELU(), nn.Conv2d(4, 4, 3, padding=1),
                          nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()
    ms.sparsify(model, "activations")
    x = torch.rand(40, 3, 32, 32)
    ms.calibrate(model, x)
    return model, x, torch.randint(0, 10, (40,))


@pytest.fixture(autouse=True)
def _close():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def test_site_inputs_are_what_the_operator_receives():
    model, x, _ = _tiny()
    feats = widgets.site_inputs(model, 0, x, batch_size=16)
    assert feats.shape == (40, 4, 32, 32)
    op = pl.operators(model)[0]
    assert torch.allclose(feats.double().mean((0, 2, 3)).float(), op.mean, atol=1e-4)
    with pytest.raises(IndexError, match="2 sites"):
        widgets.site_inputs(model, 5, x)


def test_sparsify_values_matches_the_operator():
    model, x, _ = _tiny()
    op = pl.operators(model)[0]
    feats = widgets.site_inputs(model, 0, x[:2])
    op.set_alpha(0.5)
    ours = torch.stack([widgets.sparsify_values(feats[:, c], float(op.mean[c]), float(op.var[c].sqrt()), 0.5)
                        for c in range(4)], 1)
    assert torch.allclose(ours, op(feats))
    c = widgets.pick_channel(op, seed=1)
    assert 0 <= c < 4


def test_explorer_blocked_fraction_grows_with_alpha_and_accuracy_is_cached():
    model, x, y = _tiny()
    ex = widgets.AlphaExplorer(model, x, y, n_batch=16, n_robust=8, pgd_steps=2)
    assert ex.blocked(0.0) == {0: 0.0, 1: 0.0}
    b1, b2 = ex.blocked(0.2), ex.blocked(1.0)
    assert all(b2[i] > b1[i] > 0 for i in b1)
    a = ex.accuracy(0.3)
    assert 0 <= a["robust"] <= 1 and 0 <= a["clean"] <= 1
    assert ex.accuracy(0.3) is a  # cached: moving back to a seen α costs nothing
    assert all(float(op.alpha) == 0 for op in pl.operators(model))  # α restored
    fig = ex.figure(0.3, site=1, channel=2)
    assert len(fig.axes) == 4


def test_live_widget_builds_and_redraws_on_alpha_change():
    ipw = pytest.importorskip("ipywidgets")
    model, x, y = _tiny()
    box = widgets.explorer(model, x, y, alpha=0.2, n_batch=8, n_robust=0)
    assert isinstance(box, ipw.VBox)
    slider = box.children[0].children[0]
    status = box.children[2]
    before = status.value
    slider.value = 0.6
    assert "redrawn" in status.value and status.value is not before


def test_static_slider_frames_and_errors():
    model, x, y = _tiny()
    ex = widgets.AlphaExplorer(model, x, y, n_batch=8, n_robust=0)
    frames = widgets.explorer_frames(ex, [0.0, 0.5], site=0, records={0.0: (50.0, 20.0, "apgd-ce"),
                                                                     0.5: (48.0, 25.0, "apgd-ce")})
    assert [f[0] for f in frames] == ["α = 0", "α = 0.5"]
    html = widgets.static_slider(frames, start=1)
    assert 'value="1"' in html and "α = 0.5</span>" in html
    with pytest.raises(ValueError):
        widgets.static_slider([])


def test_pgd_indicator_is_clean_accuracy_without_budget_and_falls_with_a_large_one():
    model, x, y = _tiny()
    with torch.no_grad():
        y = model(x).argmax(1)  # every point clean-correct
    assert widgets.pgd_accuracy(model, x[:8], y[:8], eps=1e-12, steps=2) == 1.0
    assert widgets.pgd_accuracy(model, x[:8], y[:8], eps=0.5, steps=10) < 1.0


def test_live_explorer_moves_artists_in_place_and_recomputes_only_what_alpha_changes():
    model, x, y = _tiny()
    live = widgets.LiveExplorer(model, x, y, alpha=0.2, n_batch=16, n_robust=4, pgd_steps=1, widgets=False)
    fig, png = live._fig, live.png
    assert png.startswith(b"\x89PNG")
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        live.update(alpha=0.6)
        assert live._fig is fig and live.png != png           # same figure, new picture
        assert calls and calls[0] == 16                       # one pass on the batch, then the PGD on 4 images
        del calls[:]
        live.update(alpha=0.2)                                # a seen α: nothing recomputed
        assert calls == []
        live.update(site=1)
        assert live._fig is not fig and live.site == 1        # a new site builds a new figure
    finally:
        handle.remove()
    # what is drawn is what the operator does: the "after" histogram is the operator applied to the site's input
    live.update(alpha=0.6)
    op = pl.operators(model)[1]
    _, feats = live.ex._pass(0.6, 1)
    vals = feats.select(1, live.channel).flatten()
    mu, sigma = float(op.mean[live.channel]), float(op.var[live.channel].sqrt())
    expected = np.histogram(widgets.sparsify_values(vals, mu, sigma, 0.6).numpy(), live.edges)[0]
    assert np.array_equal(live._hist_after.get_data().values, expected)
    assert [b.get_height() for b in live._bars] == pytest.approx([100 * v for v in live.ex.blocked(0.6).values()])
    assert all(float(op.alpha) == 0 for op in pl.operators(model))   # α restored after every update


def test_clean_accuracy_comes_from_the_same_pass_as_the_blocked_fractions():
    model, x, y = _tiny()
    ex = widgets.AlphaExplorer(model, x, y, n_batch=16, n_robust=0)
    ms.set_alpha(model, 0.4)
    with torch.no_grad():
        expected = float((model(x[:16]).argmax(1) == y[:16]).float().mean())
    ms.set_alpha(model, 0.0)
    assert ex.accuracy(0.4)["clean"] == expected


def test_pgd_indicator_counts_an_image_broken_at_any_iterate_and_drops_it():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5)).eval()
    x = torch.rand(32, 3, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps, steps = 0.05, 6
    # reference: every image attacked at every step; robust only if correct at every iterate
    g = torch.Generator().manual_seed(0)
    xa = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps).clamp(0, 1)
    ok = torch.ones(len(x), dtype=torch.bool)
    for _ in range(steps):
        xa.requires_grad_(True)
        logits = model(xa)
        ok &= logits.argmax(1) == y
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y, reduction="sum"), xa)
        xa = (xa.detach() + 2.5 * eps / steps * grad.sign()).clamp(x - eps, x + eps).clamp(0, 1)
    with torch.no_grad():
        ok &= model(xa).argmax(1) == y
    got = widgets.pgd_accuracy(model, x, y, eps=eps, steps=steps)
    assert got == float(ok.float().mean()) and 0.0 < got < 1.0


@pytest.mark.parametrize("moves", [[0.6], [0.6, 0.1, 0.9], [0.3, "identity", 0.7]])
def test_live_explorer_blitted_frame_is_the_full_draw(moves):
    """Each update restores the static background and draws only what moves with α; the PNG it makes equals a full
    Agg draw of the same figure, except the few pixels where a moving artist crosses an axis spine (a full draw puts
    the spine on top)."""
    import io

    import numpy as np
    from PIL import Image

    model, x, y = _tiny()
    live = widgets.LiveExplorer(model, x, y, alpha=0.2, n_batch=16, n_robust=4, pgd_steps=1, widgets=False)
    for m in moves:
        live.update(backward=m) if isinstance(m, str) else live.update(alpha=m)
    blitted = np.asarray(Image.open(io.BytesIO(live.png)))
    for artist in live._animated:
        artist.set_animated(False)
    full = np.asarray(Image.open(io.BytesIO(widgets._render_png(live._fig))))
    assert blitted.shape == full.shape
    differ = (np.abs(blitted.astype(int) - full.astype(int)).max(-1) > 1).mean()
    assert differ < 5e-4, f"{differ:.2%} of the pixels differ from a full draw"
