"""The MeanSparse operator (the official code's MeanSparse module): forward semantics, layouts, centres, both backward modes, bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from msparse import MeanSparse

LAYOUT_SHAPES = {"nchw": (2, 3, 4, 5), "nhwc": (2, 4, 5, 3), "nlc": (2, 7, 3)}
CHANNEL_DIM = {"nchw": 1, "nhwc": 3, "nlc": 2}


def make_op(mean, var, alpha, layout="nchw", centre="mean", backward="exact"):
    op = MeanSparse(len(mean), layout=layout, centre=centre, backward=backward)
    op.load_statistics(torch.tensor(mean, dtype=torch.float32), torch.tensor(var, dtype=torch.float32), 10)
    op.set_alpha(alpha)
    return op


def broadcast(values, layout):
    shape = [1] * len(LAYOUT_SHAPES[layout])
    shape[CHANNEL_DIM[layout]] = -1
    return torch.tensor(values, dtype=torch.float32).view(shape)


floats = st.floats(-4, 4, allow_nan=False, width=32)
stats = st.lists(st.tuples(floats, st.floats(0, 3, width=32)), min_size=3, max_size=3)


@settings(max_examples=60, deadline=None)
@given(stats=stats, alpha=st.floats(0.01, 3), layout=st.sampled_from(list(LAYOUT_SHAPES)),
       seed=st.integers(0, 2**16))
def test_blocks_exactly_the_strict_band_and_replaces_it_by_the_channel_mean(stats, alpha, layout, seed):
    mean, var = [m for m, _ in stats], [v for _, v in stats]
    op = make_op(mean, var, alpha, layout)
    x = torch.randn(LAYOUT_SHAPES[layout], generator=torch.Generator().manual_seed(seed)) * 2
    out = op(x)
    mu = broadcast(mean, layout)
    threshold = op.alpha * torch.sqrt(broadcast(var, layout))
    inside = (x - mu).abs() < threshold
    assert torch.equal(out[inside], mu.expand_as(x)[inside])
    assert torch.equal(out[~inside], x[~inside])


@settings(max_examples=30, deadline=None)
@given(stats=stats, layout=st.sampled_from(list(LAYOUT_SHAPES)))
def test_alpha_zero_is_the_exact_identity(stats, layout):
    op = make_op([m for m, _ in stats], [v for _, v in stats], 0.0, layout)
    x = torch.randn(LAYOUT_SHAPES[layout])
    assert op(x) is x


def test_alpha_zero_needs_no_statistics():
    op = MeanSparse(3)
    x = torch.randn(2, 3, 4, 4)
    assert op(x) is x


def test_band_edge_is_not_blocked():
    # |x - mean| == alpha * sigma exactly: strict inequality keeps x (official code uses "<")
    op = make_op([1.0], [4.0], 0.5)  # threshold = 0.5 * 2 = 1
    x = torch.tensor([0.0, 2.0, 1.5, 0.25]).view(1, 1, 1, 4)
    assert op(x).flatten().tolist() == [0.0, 2.0, 1.0, 1.0]


def test_zero_variance_channel_is_never_blocked():
    op = make_op([0.5], [0.0], 1.0)
    x = torch.full((1, 1, 2, 2), 0.5)
    assert torch.equal(op(x), x)


def test_channels_are_independent():
    op = make_op([0.0, 10.0], [1.0, 1.0], 0.5)
    x = torch.tensor([0.1, 10.1]).view(1, 2, 1, 1)
    assert op(x).flatten().tolist() == pytest.approx([0.0, 10.0])
    x = torch.tensor([10.1, 0.1]).view(1, 2, 1, 1)
    assert op(x).flatten().tolist() == pytest.approx([10.1, 0.1])


@pytest.mark.parametrize("centre, expected", [("mean", [2.0, 4.0]), ("zero", [0.0, 0.0]), ("global", [3.0, 3.0])])
def test_centre_reference_is_both_band_centre_and_replacement(centre, expected):
    op = make_op([2.0, 4.0], [1.0, 1.0], 0.5, centre=centre)
    centre_values = torch.tensor(expected).view(1, 2, 1, 1)
    x = centre_values + 0.25  # inside a band of half-width 0.5 around the reference
    assert op(x).flatten().tolist() == pytest.approx(expected)
    x = centre_values + 0.75  # outside
    assert torch.equal(op(x), x)


def inputs_in_and_out_of_band():
    op_stats = ([0.0, 1.0], [1.0, 1.0])
    # channel 0: 0.1 inside, 2.0 outside; channel 1: 1.2 inside, -1.0 outside (alpha 0.5)
    x = torch.tensor([[0.1, 2.0], [1.2, -1.0]]).view(1, 2, 1, 2).requires_grad_(True)
    inside = torch.tensor([[True, False], [True, False]]).view(1, 2, 1, 2)
    return op_stats, x, inside


def test_exact_backward_is_zero_inside_the_band_and_one_outside():
    (mean, var), x, inside = inputs_in_and_out_of_band()
    op = make_op(mean, var, 0.5, backward="exact")
    op(x).sum().backward()
    assert torch.equal(x.grad, (~inside).float())


def test_identity_backward_passes_the_gradient_everywhere():
    (mean, var), x, inside = inputs_in_and_out_of_band()
    op = make_op(mean, var, 0.5, backward="identity")
    out = op(x)
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    # forward is the same in both modes
    exact = make_op(mean, var, 0.5, backward="exact")
    assert torch.equal(out.detach(), exact(x.detach()))


def test_backward_mode_switches_on_a_built_operator():
    (mean, var), x, inside = inputs_in_and_out_of_band()
    op = make_op(mean, var, 0.5)
    op.set_backward("identity")
    op(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_no_gradient_reaches_statistics_or_alpha():
    op = make_op([0.0], [1.0], 0.5)
    assert not any(p.requires_grad for p in op.parameters())
    assert {name for name, _ in op.named_buffers()} == {"mean", "var", "alpha", "n_samples"}


def test_state_dict_round_trip_keeps_alpha_and_calibration():
    op = make_op([1.0, 2.0], [1.0, 4.0], 0.3)
    copy = MeanSparse(2)
    copy.load_state_dict(op.state_dict())
    assert copy.calibrated and float(copy.alpha) == pytest.approx(0.3)
    x = torch.randn(3, 2, 4, 4)
    assert torch.equal(copy(x), op(x))


def test_blocked_fraction():
    op = make_op([0.0], [1.0], 0.5)
    x = torch.tensor([0.1, 0.2, 3.0, -3.0]).view(1, 1, 2, 2)
    assert op.blocked_fraction(x) == 0.5


@pytest.mark.parametrize("alpha", [-0.1, float("nan"), float("inf"), "big", None])
def test_bad_alpha_is_rejected(alpha):
    op = MeanSparse(2)
    with pytest.raises(ValueError, match="alpha must be"):
        op.set_alpha(alpha)


def test_use_before_statistics_is_a_clear_error():
    op = MeanSparse(2)
    op.set_alpha(0.2)
    with pytest.raises(RuntimeError, match="no statistics.*msparse.calibrate"):
        op(torch.randn(1, 2, 3, 3))


@pytest.mark.parametrize("layout, shape", [("nchw", (1, 3, 4, 4)), ("nchw", (1, 2, 4)), ("nhwc", (1, 2, 4, 4)),
                                           ("nlc", (1, 4, 2, 2))])
def test_layout_or_channel_mismatch_is_a_clear_error(layout, shape):
    op = make_op([0.0, 0.0], [1.0, 1.0], 0.5, layout=layout)
    with pytest.raises(ValueError, match="expects layout"):
        op(torch.randn(shape))


@pytest.mark.parametrize("kwargs, message", [({"layout": "nwhc"}, "unknown layout"),
                                             ({"centre": "median"}, "unknown centre"),
                                             ({"backward": "bpda"}, "unknown backward mode"),
                                             ({"channels": 0}, "positive integer")])
def test_bad_constructor_arguments(kwargs, message):
    kwargs = {"channels": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        MeanSparse(**kwargs)


def test_bad_statistics_are_rejected():
    op = MeanSparse(2)
    with pytest.raises(ValueError, match="do not fit"):
        op.load_statistics(torch.zeros(3), torch.ones(3), 5)
    with pytest.raises(ValueError, match="finite"):
        op.load_statistics(torch.zeros(2), torch.tensor([1.0, math.nan]), 5)


def test_bfloat16_input_keeps_its_dtype():
    op = make_op([0.0], [1.0], 0.5)
    x = torch.tensor([0.1, 2.0]).view(1, 1, 1, 2).bfloat16()
    out = op(x)
    assert out.dtype == torch.bfloat16 and out.flatten().tolist() == [0.0, 2.0]


def test_alpha_has_one_source_of_truth_the_buffer():
    """Writing the buffer directly (or loading a state dict) changes what forward computes and what a record's
    key says alike: the two can never disagree."""
    op = MeanSparse(2, "nchw")
    op.load_statistics(torch.zeros(2), torch.ones(2), 10)
    x = torch.tensor([0.1, 2.0]).view(1, 2, 1, 1)
    assert torch.equal(op(x), x)                        # α = 0: identity
    op.alpha.fill_(0.5)                                 # not through set_alpha
    assert torch.equal(op(x), torch.tensor([0.0, 2.0]).view(1, 2, 1, 1))
    op.load_state_dict({**op.state_dict(), "alpha": torch.tensor(0.0)})
    assert torch.equal(op(x), x)


def test_centre_and_backward_are_checked_on_every_assignment():
    op = MeanSparse(2, "nchw")
    with pytest.raises(ValueError, match="unknown centre 'median'"):
        op.centre = "median"
    with pytest.raises(ValueError, match="unknown backward mode 'Identity'"):
        op.backward = "Identity"
    op.centre, op.backward = "zero", "identity"
    assert (op.centre, op.backward) == ("zero", "identity")
