"""The registry's own PGD (margin/CE loss, restarts) and adv-lib's APGD and FMN (a second attack library):
threat model, determinism, strength on a non-robust model, the margin loss, restarts, FMN's ε projection."""
import copy
import functools

import pytest
import torch
import torch.nn as nn

from msparse.attacks.advlib_apgd import advlib_apgd
from msparse.attacks.advlib_fmn import advlib_fmn
from msparse.attacks.base import AttackConfig
from msparse.attacks.pgd_margin import _generator, _random_start, margin_loss, pgd_restarts
from msparse.attacks.registry import get_attack
from msparse.core.calibration import calibrate
from msparse.core.placement import backward_mode, set_alpha, sparsify
from msparse.errors import InputError, UnknownNameError

NAMES = ("pgd", "advlib-apgd", "advlib-fmn")
EPS = {"Linf": 8 / 255, "L2": 0.5}


# the tiny, briefly trained, non-robust model of test_attacks (4 classes, 3x8x8 images)
from test_attacks import make_arch, make_data, tiny_model  # noqa: E402


def attack(name, model, norm="Linf", eps=None, **kw):
    params = kw.pop("params", None)
    cfg = AttackConfig(eps=EPS[norm] if eps is None else eps, norm=norm, **{"n_iter": 10, **kw})
    return get_attack(name)(model, cfg, device="cpu", n_classes=4, params=params)


def robust(model, x_adv, y):
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def dist(a, x, norm):
    return (a - x).flatten(1).norm(p=float("inf") if norm == "Linf" else 2, dim=1)


# --- the registry entries ----------------------------------------------------------------------------

def test_registered_with_library_params_and_cost():
    pgd, apgd, fmn = (get_attack(n) for n in NAMES)
    assert (pgd.library, apgd.library, fmn.library) == ("msparse", "adv-lib", "adv-lib")
    assert dict(pgd.params) == {"loss": "margin", "step": 2.5}
    assert dict(apgd.params) == {"loss": "ce"} and dict(fmn.params) == {}
    assert all(c.needs_grad and set(c.norms) == {"Linf", "L2"} for c in (pgd, apgd, fmn))
    cfg = AttackConfig(eps=8 / 255, n_iter=100, n_restarts=2)
    assert pgd.cost(cfg, pgd.params) == pytest.approx(2 * (100 + 1 / 3))
    assert apgd.cost(cfg, apgd.params) == 2 * 101
    assert fmn.cost(cfg, fmn.params) == 100


def test_unknown_loss_or_norm_fails_when_built():
    m = tiny_model()
    with pytest.raises(UnknownNameError, match="margin, ce"):
        attack("pgd", m, params={"loss": "dlr"})
    with pytest.raises(UnknownNameError, match="ce, dlr"):
        attack("advlib-apgd", m, params={"loss": "margin"})
    with pytest.raises(InputError, match="step must be > 0"):
        attack("pgd", m, params={"step": -1.0})
    for name in NAMES:
        with pytest.raises(InputError, match="Linf"):
            get_attack(name)(m, AttackConfig(eps=1.0, norm="L1"), device="cpu")


# --- threat model, determinism, strength -----------------------------------------------------------------

@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("name", NAMES)
def test_within_eps_and_box_and_deterministic(name, norm):
    m = tiny_model()
    x, y = make_data(32, 2)
    x[:4] = x[:4].round()                      # pixels at 0 and 1: the box constraint binds
    state = torch.get_rng_state()
    a1 = attack(name, m, norm, seed=3)(x, y)
    assert torch.equal(torch.get_rng_state(), state)          # the caller's RNG is left alone
    a2 = attack(name, m, norm, seed=3)(x, y)
    assert torch.equal(a1, a2)
    assert a1.shape == x.shape and a1.min() >= 0 and a1.max() <= 1
    assert (dist(a1, x, norm) <= EPS[norm] * (1 + 1e-5)).all()
    assert (a1 != x).any()


@pytest.mark.parametrize("name", ["pgd", "advlib-apgd"])
def test_random_start_follows_the_seed(name):
    m = tiny_model()
    x, y = make_data(16, 2)
    a, b = (attack(name, m, seed=s, n_iter=2)(x, y) for s in (0, 1))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("name", NAMES + ("pgd[loss=ce]", "advlib-apgd[loss=dlr]"))
def test_breaks_a_non_robust_model(name, norm):
    m = tiny_model()
    x, y = make_data(64, 2)
    clean = robust(m, x, y).float().mean().item()
    params = None
    if "[" in name:
        name, p = name.rstrip("]").split("[")
        params = dict([p.split("=")])
    eps = {"Linf": 16 / 255, "L2": 0.75}[norm]   # the tiny model's images are 8x8: these are its "8/255, 0.5"
    rob = robust(m, attack(name, m, norm, eps=eps, n_iter=20, params=params)(x, y), y).float().mean().item()
    assert clean >= 0.7 and rob <= 0.25 * clean, (clean, rob)


# --- PGD: the margin loss, restarts, the active backward ------------------------------------------------

def test_margin_loss_is_largest_other_logit_minus_true_logit():
    logits = torch.tensor([[3.0, 1.0, 2.5, -1.0],
                           [0.0, 4.0, 4.0, 1.0],
                           [1.0, 2.0, 3.0, 7.0]])
    y = torch.tensor([0, 1, 1])
    assert torch.equal(margin_loss(logits, y), torch.tensor([2.5 - 3.0, 4.0 - 4.0, 7.0 - 2.0]))
    z = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    t = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(margin_loss(z, t) > 0, z.argmax(1) != t)


def test_pgd_follows_the_loss_it_is_given():
    # margin and CE take different steps from the same start (same seed): the parameter reaches the attack
    m = tiny_model()
    x, y = make_data(16, 2)
    a = pgd_restarts(m, x, y, eps=4 / 255, n_iter=3, loss="margin")
    b = pgd_restarts(m, x, y, eps=4 / 255, n_iter=3, loss="ce")
    assert not torch.equal(a, b)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_restarts_never_leave_more_images_standing(norm):
    m = tiny_model()
    x, y = make_data(128, 5)
    eps = EPS[norm]                             # a budget that leaves some images standing
    r1 = robust(m, attack("pgd", m, norm, eps=eps, n_iter=10, n_restarts=1, seed=7)(x, y), y)
    r3 = robust(m, attack("pgd", m, norm, eps=eps, n_iter=10, n_restarts=3, seed=7)(x, y), y)
    assert 0 < r3.sum() < r1.sum() < len(x)    # the case is not trivial, and restarts do help here
    assert not (r3 & ~r1).any()                # robust with 3 restarts ⊆ robust with 1


def test_pgd_keeps_the_first_misclassified_point():
    # an image the random start already breaks is returned at its random start (no gradient step taken)
    m = tiny_model()
    x, y = make_data(64, 2)
    eps = 16 / 255
    start = (x + _random_start(tuple(x.shape), "Linf", eps, _generator(seed=0, restart=0))).clamp(0, 1)
    broken_at_start = ~robust(m, start, y)
    assert broken_at_start.any()
    out = pgd_restarts(m, x, y, eps=eps, n_iter=5, seed=0)
    assert torch.equal(out[broken_at_start], start[broken_at_start])


def test_pgd_uses_the_active_backward():
    # every activation inside the band: the exact gradient is zero, so PGD never leaves its random start;
    # through the identity backward (BPDA) it moves
    m = tiny_model()
    sparsify(m, "activations", input_size=(3, 8, 8))
    calibrate(m, make_data(128, 3)[0])
    set_alpha(m, 1e6)
    x, _ = make_data(8, 2)
    y = m(x).argmax(1)                      # the model is constant: nothing can be broken
    start = pgd_restarts(m, x, y, eps=8 / 255, n_iter=1, step=1e-9)
    direct = pgd_restarts(m, x, y, eps=8 / 255, n_iter=5)
    assert torch.allclose(direct, start, atol=1e-6)
    with backward_mode(m, "identity"):
        bpda = pgd_restarts(m, x, y, eps=8 / 255, n_iter=5)
    assert (dist(bpda, direct, "Linf") > 1e-3).all()


# --- FMN: a minimal-norm attack inside an ε threat model -----------------------------------------------

@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_fmn_returns_its_point_within_eps_and_the_projection_beyond(norm):
    from adv_lib.attacks.fast_minimum_norm import fmn

    m = tiny_model()
    x, y = make_data(64, 2)
    raw = fmn(m, x, y, norm=float("inf") if norm == "Linf" else 2, steps=10)
    d = dist(raw, x, norm)
    eps = d.median().item()                    # about half of FMN's points lie beyond ε
    out = advlib_fmn(m, x, y, eps=eps, norm=norm, n_iter=10)
    inside, beyond = d <= eps, d > eps
    assert inside.any() and beyond.any()
    assert torch.equal(out[inside], raw[inside])
    assert torch.allclose(dist(out[beyond], x[beyond], norm), torch.full((int(beyond.sum()),), eps), rtol=1e-5)
    delta, delta_raw = (out - x)[beyond].flatten(1), (raw - x)[beyond].flatten(1)
    if norm == "L2":                            # the same direction, scaled to ε
        assert torch.allclose(delta, delta_raw * (eps / delta_raw.norm(dim=1, keepdim=True)), atol=1e-6)
    else:                                       # each coordinate clipped to [-ε, ε]
        assert torch.allclose(delta, delta_raw.clamp(-eps, eps), atol=1e-6)


def test_advlib_apgd_restarts_never_leave_more_images_standing():
    m = tiny_model()
    x, y = make_data(128, 5)
    r1 = robust(m, advlib_apgd(m, x, y, eps=8 / 255, n_iter=10, n_restarts=1, seed=7), y)
    r3 = robust(m, advlib_apgd(m, x, y, eps=8 / 255, n_iter=10, n_restarts=3, seed=7), y)
    assert 0 < r3.sum() <= r1.sum() < len(x)
    assert not (r3 & ~r1).any()
