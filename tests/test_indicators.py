"""Indicators of attack failure (msparse/attacks/indicators.py): the gradient indicator fires on models that
mask gradients on purpose (a sign() layer, MeanSparse with a huge α under its exact backward) and not on a
smooth CNN or under BPDA; incomplete optimisation fires on a cut attack and not on a generous one; every
indicator carries its threshold and reading."""

import math

import pytest
import torch
import torch.nn as nn

from msparse import MeanSparse
from msparse.attacks.indicators import READINGS, THRESHOLDS, attack_indicators, indicator_table
from msparse.core.placement import backward_mode, operators
from msparse.errors import InputError, UnknownNameError


class Sign(nn.Module):
    def forward(self, x):
        return torch.sign(x)


def cnn(*middle, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *middle, nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 3)).eval()


def images(n=6, seed=1):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def own_labels(model, x):
    """Labels the model gets right on every image, so every image is attacked."""
    with torch.no_grad():
        return model(x).argmax(1)


def masked_cnn(alpha=1e3):
    """A CNN whose only MeanSparse site blocks every feature (all replaced by 1): constant output, zero exact
    gradient."""
    op = MeanSparse(4)
    op.load_statistics(torch.ones(4), torch.ones(4), 10)   # mean 1: the ReLU after it passes BPDA gradients
    op.set_alpha(alpha)
    return cnn(op)


FAST = dict(steps=3, restarts=0, noise_draws=0, unconstrained=False)


def test_smooth_cnn_has_gradients():
    m = cnn()
    x = images()
    run = attack_indicators(m, x, own_labels(m, x), **FAST)
    ind = run["unavailable_gradients"]
    assert ind.value == 0.0 and not ind.fires and ind.n == len(x)


def test_sign_layer_masks_gradients():
    m = cnn(Sign())
    x = images()
    run = attack_indicators(m, x, own_labels(m, x), steps=3, restarts=0, noise_draws=0)
    assert run["unavailable_gradients"].value == 1.0 and run["unavailable_gradients"].fires
    # PGD cannot move without a gradient, not even with the whole box allowed
    assert run["unconstrained_attack_failure"].fires


def test_meansparse_huge_alpha_masks_exact_backward_but_not_bpda():
    m = masked_cnn()
    x = images()
    y = own_labels(m, x)
    with backward_mode(m, "exact"):
        direct = attack_indicators(m, x, y, **FAST)
    with backward_mode(m, "identity"):
        bpda = attack_indicators(m, x, y, **FAST)
    assert direct["unavailable_gradients"].fires and direct["unavailable_gradients"].value == 1.0
    assert not bpda["unavailable_gradients"].fires
    assert operators(m)[0].backward == "exact"   # restored by the context


def _linear_toy():
    """Two classes, logit gap 2·sum(x): the CE gradient has a constant sign, so L∞ PGD walks to a corner of
    the ε-ball and stops; with ε = 0.05 on images in [0.25, 0.75] no image can be broken."""
    lin = nn.Linear(16, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.ones(16), -torch.ones(16)]))
    m = nn.Sequential(nn.Flatten(), lin).eval()
    x = 0.25 + 0.5 * torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    return m, x, torch.zeros(5, dtype=torch.long)


def test_incomplete_optimization_fires_when_cut_and_not_at_a_generous_budget():
    m, x, y = _linear_toy()
    cut = attack_indicators(m, x, y, eps=0.05, steps=2, restarts=0, noise_draws=0, unconstrained=False)
    full = attack_indicators(m, x, y, eps=0.05, steps=40, restarts=0, noise_draws=0, unconstrained=False)
    assert cut.pgd_accuracy == full.pgd_accuracy == 1.0   # nothing broken: the loss trajectory decides
    assert cut["incomplete_optimization"].value == 1.0 and cut["incomplete_optimization"].fires
    assert full["incomplete_optimization"].value == 0.0 and not full["incomplete_optimization"].fires


def test_every_indicator_is_data_with_threshold_and_reading():
    m = cnn()
    x = images()
    surrogate = cnn(seed=3)
    run = attack_indicators(m, x, own_labels(m, x), steps=3, restarts=2, noise_draws=2, surrogate=surrogate)
    assert {i.name for i in run.indicators} == set(THRESHOLDS) == set(READINGS)
    for ind in run.indicators:
        assert ind.threshold == THRESHOLDS[ind.name] and ind.reading == READINGS[ind.name]
        assert ind.fires == (not math.isnan(ind.value) and ind.value > ind.threshold)
        assert 0.0 <= ind.value <= 1.0
    frame = run.frame()
    assert list(frame["name"]) == [i.name for i in run.indicators]
    assert {"value", "threshold", "fires", "reading", "rule"} <= set(frame.columns)
    assert not run["unconstrained_attack_failure"].fires   # a smooth model breaks in the whole box
    assert surrogate.training is False and m.training is False


def test_table_fires_only_for_direct_attack_on_the_masking_alpha():
    m = masked_cnn(alpha=0.0)
    x = images()
    y = own_labels(m, x)
    t = indicator_table(m, x, y, alphas=(0.0, 1e3), **FAST)
    grad = t[t.indicator == "unavailable_gradients"].set_index(["alpha", "mode"])["fires"]
    assert grad.to_dict() == {(0.0, "direct"): False, (0.0, "bpda"): False,
                              (1e3, "direct"): True, (1e3, "bpda"): False}
    assert set(t[t.indicator == "transfer_failure"].alpha) == {1e3}   # surrogate = the α = 0 network
    assert float(operators(m)[0].alpha) == 0.0                           # α restored
    with pytest.raises(UnknownNameError):
        indicator_table(m, x, y, modes=("sideways",))


@pytest.mark.parametrize("kw", [dict(eps=0.0), dict(steps=0), dict(restarts=-1), dict(step_size=-1.0)])
def test_bad_arguments_raise_input_error(kw):
    m = cnn()
    x = images(2)
    with pytest.raises(InputError):
        attack_indicators(m, x, own_labels(m, x), **kw)
