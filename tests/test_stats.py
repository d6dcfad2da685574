"""The statistics pass (the official code's calculate_statistics): exact float64 statistics, the official estimate, the pass's protocol."""

import numpy as np
import pytest
import torch
from torch import nn

import msparse as ms
import msparse.core.placement as pl
from msparse.core import kernels


def tiny_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5), nn.GELU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))


class TokenMixer(nn.Module):
    """(N, 3, H, W) → tokens (N, L, C) → GELU → mean: exercises the nlc layout."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, 6)
        self.act = nn.GELU()
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        tokens = self.embed(x.flatten(2).transpose(1, 2))
        return self.head(self.act(tokens).mean(1))


def site_inputs(model, x):
    """Inputs reaching each site of a sparsified model (all α = 0), concatenated over the batch: float64 numpy."""
    ops = pl.operators(model)
    grabbed = {id(op): [] for op in ops}
    handles = [op.register_forward_pre_hook(lambda m, a: grabbed[id(m)].append(a[0].detach().double().numpy()))
               for op in ops]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return [np.concatenate(grabbed[id(op)]) for op in ops]


def reference_stats(array, layout):
    axes = {"nchw": (0, 2, 3), "nhwc": (0, 1, 2), "nlc": (0, 1)}[layout]
    return array.mean(axis=axes), array.var(axis=axes)  # population variance


DATA = torch.rand(37, 3, 6, 6, generator=torch.Generator().manual_seed(1))


@pytest.fixture(params=["fused", "eager"])
def route(request):
    """Run a test through the fused statistics kernel (when built) and through the eager torch.var_mean route."""
    if request.param == "fused":
        if not kernels.available():
            pytest.skip(f"fused kernels unavailable: {kernels.info()['reason']}")
        yield "fused"
    else:
        with kernels.eager():
            yield "eager"


@pytest.mark.parametrize("batch_size", [37, 10, 7, 1])
def test_exact_statistics_equal_a_float64_reference_for_any_batch_size(batch_size, route):
    model = tiny_cnn()
    sites = ms.sparsify(model, "activations")
    summary = ms.calibrate(model, DATA, mode="exact", batch_size=batch_size)
    assert summary["n_samples"] == 37 and summary["n_batches"] == -(-37 // batch_size)
    for op, array, site in zip(pl.operators(model), site_inputs(model, DATA), sites):
        mean, var = reference_stats(array, site.layout)
        np.testing.assert_allclose(op.mean.numpy(), mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(op.var.numpy(), var, rtol=1e-5, atol=1e-7)
        assert int(op.n_samples) == 37


def test_exact_statistics_for_token_layout(route):
    model = TokenMixer()
    (site,) = ms.sparsify(model, "activations", layout="nlc", input_size=(3, 4, 4))
    assert site.channels == 6 and site.layout == "nlc"
    data = torch.rand(11, 3, 4, 4)
    ms.calibrate(model, data, batch_size=4)
    (array,) = site_inputs(model, data)
    mean, var = reference_stats(array, "nlc")
    (op,) = pl.operators(model)
    np.testing.assert_allclose(op.mean.numpy(), mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(op.var.numpy(), var, rtol=1e-5, atol=1e-7)


def test_official_mode_averages_per_batch_means_and_unbiased_variances(route):
    model = tiny_cnn()
    sites = ms.sparsify(model, "activations")
    ms.calibrate(model, DATA, mode="official", batch_size=10)  # batches of 10, 10, 10, 7
    arrays = site_inputs(model, DATA)
    for op, array, site in zip(pl.operators(model), arrays, sites):
        batches = [array[i:i + 10] for i in range(0, 37, 10)]
        mean = np.mean([b.mean(axis=(0, 2, 3)) for b in batches], axis=0)
        var = np.mean([b.var(axis=(0, 2, 3), ddof=1) for b in batches], axis=0)
        np.testing.assert_allclose(op.mean.numpy(), mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(op.var.numpy(), var, rtol=1e-5, atol=1e-7)
        exact_mean, exact_var = reference_stats(array, "nchw")
        assert not np.allclose(var, exact_var, rtol=1e-4)  # the two estimates really differ


def test_pass_runs_in_eval_mode_with_alpha_held_at_zero_and_restores_both():
    model = tiny_cnn()
    ms.sparsify(model, "activations")
    ms.calibrate(model, DATA)
    first = [op.var.clone() for op in pl.operators(model)]
    bn = model[1]
    running = bn.running_mean.clone()
    ms.set_alpha(model, 0.7)
    model.train()
    ms.calibrate(model, DATA)  # would see sparsified upstream features if α were not held at 0
    for op, var in zip(pl.operators(model), first):
        assert torch.allclose(op.var, var)
        assert float(op.alpha) == pytest.approx(0.7)
    assert model.training
    assert torch.equal(bn.running_mean, running)  # eval mode: BatchNorm statistics untouched


def test_accepts_pairs_and_dataloaders():
    model = tiny_cnn()
    ms.sparsify(model, "activations")
    y = torch.zeros(37, dtype=torch.long)
    ms.calibrate(model, (DATA, y))
    from_pair = [op.mean.clone() for op in pl.operators(model)]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(DATA, y), batch_size=8)
    summary = ms.calibrate(model, loader)
    assert summary["n_samples"] == 37
    for op, mean in zip(pl.operators(model), from_pair):
        assert torch.allclose(op.mean, mean, atol=1e-6)


def test_failed_pass_keeps_previous_statistics():
    model = tiny_cnn()
    ms.sparsify(model, "activations")
    ms.calibrate(model, DATA)
    before = [op.mean.clone() for op in pl.operators(model)]

    def broken():
        yield DATA[:5]
        raise OSError("disk went away")

    with pytest.raises(OSError):
        ms.calibrate(model, broken())
    for op, mean in zip(pl.operators(model), before):
        assert torch.equal(op.mean, mean) and op._collector is None


def test_bad_inputs():
    plain = tiny_cnn()
    with pytest.raises(ValueError, match="no MeanSparse sites.*sparsify"):
        ms.calibrate(plain, DATA)
    model = tiny_cnn()
    ms.sparsify(model, "activations")
    with pytest.raises(ValueError, match="unknown statistics mode"):
        ms.calibrate(model, DATA, mode="batch")
    with pytest.raises(ValueError, match="non-empty"):
        ms.calibrate(model, DATA[:0])
    with pytest.raises(ValueError, match="empty"):
        ms.calibrate(model, [])
    with pytest.raises(ValueError, match="batch_size"):
        ms.calibrate(model, DATA, batch_size=0)


def test_a_deep_site_that_overflows_leaves_every_site_untouched():
    """Statistics are written all or nothing: an overflow at the last site (float32 inf) updates no site."""
    model = tiny_cnn()
    ms.sparsify(model, "activations", input_size=(3, 8, 8))
    ms.calibrate(model, torch.rand(16, 3, 8, 8))
    before = [(op.mean.clone(), op.var.clone(), int(op.n_samples)) for op in pl.operators(model)]
    with torch.no_grad():
        model[3].weight.fill_(1e30)          # the conv feeding the last site: its activations overflow
    with pytest.raises(RuntimeError, match="not finite"):
        ms.calibrate(model, torch.rand(16, 3, 8, 8))
    for op, (m, v, n) in zip(pl.operators(model), before):
        assert torch.equal(op.mean, m) and torch.equal(op.var, v) and int(op.n_samples) == n


class Shifted(nn.Module):
    """An identity feature map whose activations have a huge mean and a tiny spread (|μ|/σ ≈ 1e5)."""

    def __init__(self):
        super().__init__()
        self.act = nn.Identity()

    def forward(self, x):
        return self.act(x).mean((1, 2, 3))


@pytest.mark.parametrize("channels_last", [False, True])
def test_large_mean_small_variance_is_exact_where_a_float32_sum_of_squares_fails(route, channels_last):
    g = torch.Generator().manual_seed(3)
    centre = torch.tensor([1000.0, -3000.0, 250.0]).view(1, 3, 1, 1)
    spread = torch.tensor([0.01, 0.03, 0.002]).view(1, 3, 1, 1)
    data = centre + spread * torch.randn(64, 3, 16, 16, generator=g)
    if channels_last:
        data = data.contiguous(memory_format=torch.channels_last)
    model = Shifted()
    (site,) = ms.sparsify(model, "activations", types=("Identity",), input_size=(3, 16, 16))
    ms.calibrate(model, data, batch_size=24)     # batches of 24, 24, 16
    (op,) = pl.operators(model)
    mean, var = reference_stats(data.double().numpy(), "nchw")
    np.testing.assert_allclose(op.mean.double().numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(op.var.double().numpy(), var, rtol=1e-6)
    # the naive float32 estimate E[x²] − E[x]² is far off here: the test above can fail
    naive = (data.square().mean((0, 2, 3)) - data.mean((0, 2, 3)).square()).double().numpy()
    assert np.abs(naive / var - 1).max() > 0.1


@pytest.mark.parametrize("mode", ["exact", "official"])
def test_fused_statistics_are_the_float64_references_float32_bits(mode):
    """Record keys hash the statistics' bits: the fused kernel (float64 sums around a shift) must store the same
    float32 values as the float64 reference route, or every stored record would be recomputed."""
    if not kernels.available():
        pytest.skip(f"fused kernels unavailable: {kernels.info()['reason']}")
    model = tiny_cnn()
    ms.sparsify(model, "activations")
    data = torch.rand(200, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    ms.calibrate(model, data, mode=mode, batch_size=64)
    fused = [(op.mean.clone(), op.var.clone()) for op in pl.operators(model)]
    with kernels.eager():
        ms.calibrate(model, data, mode=mode, batch_size=64)
    for (mean, var), op in zip(fused, pl.operators(model)):
        assert torch.equal(mean, op.mean) and torch.equal(var, op.var)
