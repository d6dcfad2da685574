"""The fused CPU kernels (msparse.core.kernels): bit-identical to the eager operator in forward and in both backward
modes, at the band edge, for every layout, centre and dtype; the route is reported and can be forced to eager."""

import contextlib
import os
import subprocess
import sys

import pytest
import torch

import msparse as ms
from msparse import MeanSparse
from msparse.core import kernels
from msparse.core.operator import kernel_info

pytestmark = pytest.mark.skipif(not kernels.available(), reason=f"fused kernels unavailable: {kernels.info()['reason']}")

SHAPES = {"nchw": (3, 6, 5, 7), "nhwc": (3, 5, 7, 6), "nlc": (3, 11, 6)}
CDIM = {"nchw": 1, "nhwc": 3, "nlc": 2}
C = 6


def make_op(layout, centre, backward, seed=0):
    g = torch.Generator().manual_seed(seed)
    op = MeanSparse(C, layout, centre, backward)
    var = torch.rand(C, generator=g) * 3
    var[0] = 4.0          # a channel whose threshold is exactly representable: 0.5 * 2 = 1
    var[1] = 0.0          # never blocked (strict inequality)
    mean = torch.randn(C, generator=g) * 2
    mean[0] = 1.0
    op.load_statistics(mean, var, 10)
    op.set_alpha(0.5)
    return op


def edge_inputs(op, layout, seed=0):
    """Random entries plus, in every channel, the values c ± thr and their float neighbours 1 and 2 ulps away,
    computed in float32 like the operator (so some entries sit exactly on the band edge)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPES[layout], generator=g) * 2
    centre, thr = op._band_vectors(x)
    centre = centre.contiguous()
    moved = x.movedim(CDIM[layout], -1).reshape(-1, C).clone()
    edges = []
    for sign in (1, -1):
        v = centre + sign * thr
        edges += [v, torch.nextafter(v, v + 1), torch.nextafter(v, v - 1)]
        edges += [torch.nextafter(edges[-2], edges[-2] + 1), torch.nextafter(edges[-2], edges[-2] - 1)]
    edges.append(centre)
    moved[: len(edges)] = torch.stack(edges)
    shape = list(x.movedim(CDIM[layout], -1).shape)
    x = moved.reshape(shape).movedim(-1, CDIM[layout]).contiguous()
    on_edge = ((x - centre.view(view_shape(layout))).abs() == thr.view(view_shape(layout))).sum()
    assert on_edge > 0  # the strict inequality is really exercised
    return x


def view_shape(layout):
    shape = [1] * len(SHAPES[layout])
    shape[CDIM[layout]] = C
    return shape


def run(op, x, grad_out):
    x = x.clone().requires_grad_(True)
    out = op(x)
    out.backward(grad_out)
    return out.detach(), x.grad


def memory_formats(layout):
    return [False, True] if layout == "nchw" else [False]


@pytest.mark.parametrize("layout", list(SHAPES))
@pytest.mark.parametrize("centre", ["mean", "zero", "global"])
@pytest.mark.parametrize("backward", ["exact", "identity"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fused_equals_eager_bit_for_bit_with_gradients_at_the_band_edge(layout, centre, backward, dtype, monkeypatch):
    calls = []
    real = kernels.sparsify
    monkeypatch.setattr(kernels, "sparsify", lambda *a, **k: calls.append(1) or real(*a, **k))
    for seed in range(3):
        op = make_op(layout, centre, backward, seed)
        x = edge_inputs(op, layout, seed).to(dtype)
        grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 7)).to(dtype)
        grad_out.view(-1)[:5] = torch.tensor([0.0, -0.0, float("nan"), float("inf"), 1e-40]).to(dtype)
        for channels_last in memory_formats(layout):
            xx = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            out, grad = run(op, xx, grad_out)
            with torch.no_grad():
                out_nograd = op(xx)
            with kernels.eager():
                ref, ref_grad = run(op, xx, grad_out)
            assert out.dtype == dtype and out.stride() == ref.stride()
            assert torch.equal(out, ref) and torch.equal(out_nograd, ref)
            same_bits = grad.contiguous().view(-1).view(torch.uint8) == ref_grad.contiguous().view(-1).view(torch.uint8)
            assert bool(same_bits.all())  # signed zeros and NaN payloads included
            assert op.blocked_fraction(xx) == pytest.approx(float(op.band(xx)[0].float().mean()), abs=0)
    assert calls  # the fused route really ran


def test_band_edge_is_kept_and_zero_variance_channel_untouched():
    op = make_op("nchw", "mean", "exact")
    x = torch.tensor([0.0, 2.0, 1.5, 0.25, float("nan"), float("inf")]).view(1, 1, 1, 6).expand(1, C, 1, 6).contiguous()
    out = op(x)
    assert out[0, 0].flatten().tolist()[:4] == [0.0, 2.0, 1.0, 1.0]  # |x − 1| == 1 is not blocked
    assert torch.isnan(out[0, 0, 0, 4]) and out[0, 0, 0, 5] == float("inf")
    assert torch.allclose(out[0, 1], x[0, 1], rtol=0, atol=0, equal_nan=True)


def test_non_dense_inputs_take_the_eager_route_with_the_same_result():
    op = make_op("nchw", "mean", "exact")
    x = torch.randn(4, C, 8, 8)[:, :, ::2, 1::2]   # a strided view: not walked by the kernels
    assert kernels.channel_view(x, 1) is None
    with kernels.eager():
        ref = op(x)
    assert torch.equal(op(x), ref)


def test_exact_backward_with_an_expanded_gradient_falls_back_inside_the_function():
    op = make_op("nhwc", "mean", "exact")
    x = edge_inputs(op, "nhwc").requires_grad_(True)
    op(x).sum().backward()       # sum's gradient is an expanded (stride 0) tensor
    blocked, _ = op.band(x.detach())
    assert torch.equal(x.grad, (~blocked).float())


def test_alpha_zero_is_still_the_input_object():
    op = make_op("nlc", "mean", "exact")
    op.set_alpha(0.0)
    x = torch.randn(SHAPES["nlc"])
    assert op(x) is x


def test_kernel_info_reports_the_route():
    info = kernel_info()
    assert info["fused"] and info["reason"] == "ok" and os.path.exists(info["library"])
    with kernels.eager():
        assert not kernel_info()["fused"] and "forced" in kernel_info()["reason"]
    assert kernel_info()["fused"]


def test_msparse_fused_0_forces_the_eager_route_in_a_fresh_process():
    code = ("import torch, msparse as ms; from msparse.core.operator import kernel_info; "
            "op = ms.MeanSparse(2); op.load_statistics(torch.zeros(2), torch.ones(2), 1); op.set_alpha(0.5); "
            "y = op(torch.tensor([0.1, 2.0]).view(1, 2, 1, 1)); i = kernel_info(); "
            "print(i['fused'], i['reason'], y.flatten().tolist())")
    env = {**os.environ, "MSPARSE_FUSED": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False disabled by MSPARSE_FUSED=0 [0.0, 2.0]"


def test_a_missing_compiler_is_reported_and_the_operator_still_works(monkeypatch, tmp_path):
    monkeypatch.setenv("MSPARSE_KERNEL_DIR", str(tmp_path))   # an empty cache: a build would be needed
    monkeypatch.setattr(kernels, "_compiler", lambda: None)
    saved = dict(kernels._state)
    try:
        kernels._reset()
        assert kernel_info() == {"fused": False, "route": "eager", "reason": "no C++ compiler found ($CXX, c++, g++, "
                                 "clang++)", "build_seconds": None, "library": None}
        op = make_op("nchw", "mean", "identity")
        x = edge_inputs(op, "nchw")
        blocked, centre = op.band(x)
        assert torch.equal(op(x), torch.where(blocked, centre, x))
    finally:
        kernels._state.update(saved)


def test_fused_model_forward_equals_eager_on_a_sparsified_network():
    from msparse.models.resnet import resnet18

    torch.manual_seed(0)
    model = resnet18("gelu", width=8).eval().to(memory_format=torch.channels_last)
    ms.sparsify(model, "ResNet-18/cifar10/Linf/v1")
    x = torch.rand(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    ms.calibrate(model, x)
    ms.set_alpha(model, 0.3)
    xa = x.clone().requires_grad_(True)
    out = model(xa)
    out.logsumexp(1).sum().backward()
    with kernels.eager():
        xb = x.clone().requires_grad_(True)
        ref = model(xb)
        ref.logsumexp(1).sum().backward()
    assert torch.equal(out, ref) and torch.equal(xa.grad, xb.grad)


# -- output buffers: reused only when nothing else refers to them ---------------------------------------------------
def _reuse_op():
    op = make_op("nchw", "mean", "exact")
    kernels.release_buffers()
    return op, torch.randn(2, C, 16, 16)


def test_an_operator_writes_its_next_output_into_its_last_buffer_once_that_is_free():
    op, x = _reuse_op()
    with torch.no_grad():
        first = op(x)
        ptr = first.data_ptr()
        del first
        again = op(x)
    assert again.data_ptr() == ptr
    with kernels.eager():
        assert torch.equal(again, op(x))


@pytest.mark.parametrize("hold", ["tensor", "view", "numpy", "saved for backward"])
def test_a_buffer_still_referred_to_is_never_overwritten(hold):
    op, x = _reuse_op()
    if hold == "saved for backward":
        xr = x.clone().requires_grad_(True)
        first = op(xr)
        graph = first.sin()                     # sin saves its input: first's storage, for the backward
        kept = first.detach().clone()
        first = first.view_as(first)
    else:
        with torch.no_grad():
            first = op(x)
        kept = first.clone()
    holder = {"tensor": first, "view": first.view(-1) if hold == "view" else None,
              "numpy": first.detach().numpy() if hold == "numpy" else None}
    if hold != "tensor":
        ptr = first.data_ptr()
        del first
        holder.pop("tensor")
    else:
        ptr = first.data_ptr()
    with torch.no_grad():
        second = op(x * 3 + 1)                  # different values: an overwrite would show
    assert second.data_ptr() != ptr
    held = {"tensor": lambda: holder["tensor"], "view": lambda: holder["view"].view(kept.shape),
            "numpy": lambda: torch.from_numpy(holder["numpy"]), "saved for backward": lambda: None}[hold]()
    if held is not None:
        assert torch.equal(held, kept)
    else:
        graph.sum().backward()                  # the saved input is intact: the gradient is cos(first) off the band
        assert torch.equal(xr.grad, torch.where(op.band(x)[0], 0.0, kept.cos()))


def test_repeated_backward_passes_through_reused_buffers_equal_eager():
    op, x = _reuse_op()
    for _ in range(3):
        grads = []
        for route in (contextlib.nullcontext, kernels.eager):
            with route():
                xr = x.clone().requires_grad_(True)
                out = op(xr)
                (out * out).sum().backward()
                grads.append((out.detach(), xr.grad))
        assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_buffers_follow_inference_mode_and_the_memory_bound(monkeypatch):
    op, x = _reuse_op()
    with torch.inference_mode():
        assert op(x).is_inference()
    out = op(x)                                 # an inference buffer is never handed out in normal mode
    assert not out.is_inference()
    (op(x.clone().requires_grad_(True)) ** 2).sum().backward()
    monkeypatch.setenv("MSPARSE_REUSE_MB", "0")
    kernels.release_buffers()
    with torch.no_grad():
        op(x)
        second = op(x)
        assert not kernels._buffers                     # nothing kept: every output freshly allocated
    with kernels.eager():
        assert torch.equal(second, op(x))


def test_kept_bytes_are_counted_and_given_back_when_an_operator_is_collected():
    import gc

    kernels.release_buffers()
    assert kernels._held[0] == 0
    op, x = _reuse_op()
    with torch.no_grad():
        op(x)
    assert kernels._held[0] == x.numel() * 4
    (op(x.clone().requires_grad_(True)) ** 2).sum().backward()     # out (replaced), mask and grad slots
    assert kernels._held[0] == x.numel() * (4 + 1 + 4)
    del op
    gc.collect()
    assert kernels._held[0] == 0 and not kernels._buffers


@pytest.mark.parametrize("bad", ["lots", "-1", "nan"])
def test_a_bad_reuse_budget_is_a_clear_error(monkeypatch, bad):
    from msparse.errors import InputError

    op, x = _reuse_op()
    monkeypatch.setenv("MSPARSE_REUSE_MB", bad)
    with torch.no_grad(), pytest.raises(InputError, match="MSPARSE_REUSE_MB must be a number of megabytes"):
        op(x)
