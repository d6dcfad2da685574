"""Running attacks (msparse.attacks.autoattack over the registry): names, equivalence with AutoAttack itself, BPDA,
transfer, checks."""
import copy
import functools

import pytest
import torch
import torch.nn as nn

import msparse.attacks.autoattack as atk
from msparse.attacks.autoattack import run_attack
from msparse.attacks._pyautoattack import set_apgd_iters
from msparse.attacks.base import SEQUENCES, Attack, AttackConfig, canonical_name, parse_attack
from msparse.attacks.diagnostics import input_gradient, zero_gradient_fraction
from msparse.core.calibration import calibrate
from msparse.core.placement import backward_mode, base_model, operators, set_alpha, set_backward, sparsify


# --- a tiny, briefly trained, attackable model (4 classes, 3x8x8 images) --------------------------

def make_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.5 + 0.1 * torch.randn(n, 3, 8, 8, generator=g)
    for k in range(4):
        r, c = divmod(k, 2)
        x[y == k, k % 3, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 0.25
    return x.clamp(0, 1), y


def make_arch():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


@functools.lru_cache(maxsize=1)
def _trained_state():
    torch.manual_seed(0)
    m = make_arch()
    x, y = make_data(256, 1)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        i = torch.randint(0, 256, (64,), generator=g)
        loss = nn.functional.cross_entropy(m(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return copy.deepcopy(m.state_dict())


def tiny_model():
    m = make_arch()
    m.load_state_dict(_trained_state())
    return m.eval()


def sparse_model(alpha=0.3):
    m = tiny_model()
    sparsify(m, "activations", input_size=(3, 8, 8))
    calibrate(m, make_data(128, 3)[0])
    set_alpha(m, alpha)
    return m


CFG = AttackConfig(eps=8 / 255, n_iter=10, n_target_classes=3)


# --- names ------------------------------------------------------------------------------------

def test_parse_attack_presets_shorthands_and_worst_case():
    assert parse_attack("apgd-ce") == [Attack("apgd-ce")]
    assert parse_attack("APGD").pop().attacks == ("apgd-ce", "apgd-dlr")
    assert parse_attack("aa")[0].attacks == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert parse_attack("bpda") == [Attack("apgd-ce+t", "bpda")]
    assert parse_attack("transfer") == [Attack("apgd", "transfer")]
    w = parse_attack("worst:apgd,bpda,bpda:apgd-ce+t")
    assert w == [Attack("apgd"), Attack("apgd-ce+t", "bpda")]          # duplicates collapse
    assert canonical_name(w) == "worst:apgd,bpda:apgd-ce+t"


@pytest.mark.parametrize("bad, msg", [
    ("nosuch", "unknown attack 'nosuch'; choose from"),
    ("blackbox:apgd", "prefix 'blackbox'"),
    ("bpda:nosuch", "unknown attack 'bpda:nosuch'"),
    ("worst:", "at least one component"),
    ("worst:apgd,worst:aa", "cannot be nested"),
    ("", "non-empty"),
    ("bpda:none", "nothing to craft"),
])
def test_parse_attack_errors_are_clear(bad, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        parse_attack(bad)


# --- equivalence with AutoAttack ---------------------------------------------------------------

@pytest.mark.parametrize("preset", ["apgd-ce", "apgd", "apgd-ce+t"])
def test_driver_matches_autoattack_run_standard_evaluation(preset):
    """Our orchestration of the registry's AutoAttack components gives the same per-example robustness as
    AutoAttack.run_standard_evaluation on the same batch and seed."""
    from pyautoattack import AutoAttack
    model = tiny_model()
    x, y = make_data(32, 2)
    out = run_attack(model, x, y, Attack(preset), CFG, batch_size=32)
    aa = AutoAttack(model, attacks=list(SEQUENCES.get(preset, (preset,))), version="custom", eps=CFG.eps,
                    seed=0, device="cpu")
    aa.apgd.n_restarts = 1
    aa.apgd_targeted.n_target_classes = CFG.n_target_classes
    set_apgd_iters(aa.apgd, CFG.n_iter)
    set_apgd_iters(aa.apgd_targeted, CFG.n_iter)
    aa.verbose = False
    with atk.capture_autoattack_log():
        x_adv, y_adv = aa.run_standard_evaluation(x, y, batch_size=32)
    assert torch.equal(out.robust, y_adv.eq(y))
    assert 0 < int(out.robust.sum()) < int(model(x).argmax(1).eq(y).sum())  # attack did something


def test_aa_is_autoattack_standard_version_image_for_image():
    """``aa``: the registry's four components in sequence = ``AutoAttack(version='standard')`` with the same
    budget overrides (small here so that the test is fast), the adversarial images included."""
    from pyautoattack import AutoAttack
    cfg = AttackConfig(eps=8 / 255, n_iter=5, n_target_classes=3, n_queries=30)
    model = tiny_model()
    x, y = make_data(24, 2)
    out = run_attack(model, x, y, Attack("aa"), cfg, batch_size=24, n_classes=4, keep_adv=True)
    aa = AutoAttack(model, version="standard", eps=cfg.eps, seed=0, device="cpu")
    aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = cfg.n_target_classes
    set_apgd_iters(aa.apgd, cfg.n_iter)
    set_apgd_iters(aa.apgd_targeted, cfg.n_iter)
    aa.fab.n_iter = cfg.n_iter
    aa.square.n_queries = cfg.n_queries
    aa.verbose = False
    with atk.capture_autoattack_log():
        x_adv, y_adv = aa.run_standard_evaluation(x, y, batch_size=24)
    assert torch.equal(out.robust, y_adv.eq(y))
    assert torch.equal(out.x_adv, x_adv)
    assert 0 < int(out.robust.sum()) < int(model(x).argmax(1).eq(y).sum())


def test_run_attack_leaves_global_rng_untouched():
    model = tiny_model()
    x, y = make_data(16, 2)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_attack(model, x, y, Attack("apgd-ce"), CFG, batch_size=16)
    assert torch.equal(torch.rand(3), expected)


def test_robust_implies_clean_and_broken_by_is_consistent():
    model = tiny_model()
    x, y = make_data(32, 2)
    clean = model(x).argmax(1).eq(y)
    out = run_attack(model, x, y, Attack("apgd"), CFG, batch_size=32)
    assert not (out.robust & ~clean).any()
    assert torch.equal(out.robust, clean & (out.broken_by < 0))
    assert set(out.broken_by.tolist()) <= {-1, 0, 1}


# --- BPDA ---------------------------------------------------------------------------------------

def test_bpda_gives_gradients_where_exact_backward_gives_zero():
    model = sparse_model(alpha=1e6)   # every activation of every site inside the band
    x, y = make_data(8, 2)
    g_exact = input_gradient(model, x, y)
    assert torch.count_nonzero(g_exact) == 0
    assert zero_gradient_fraction(model, x, y) == 1.0
    with backward_mode(model, "identity"):
        g_bpda = input_gradient(model, x, y)
    assert (g_bpda.flatten(1).abs().sum(1) > 0).all()
    assert zero_gradient_fraction(model, x, y) == 1.0          # mode restored


def test_fully_masked_model_survives_exact_attack_and_autoattack_flags_zero_gradients():
    model = sparse_model(alpha=1e6)
    # with every feature blocked the model is constant; label every image with its prediction
    x, y = make_data(16, 2)
    pred = model(x).argmax(1)
    out_exact = run_attack(model, x, pred, Attack("apgd-ce"), CFG, batch_size=16)
    assert out_exact.robust.all()          # nothing can change a constant function
    assert any("zero gradient" in m for m in run_attack(
        model, x, pred, Attack("apgd-dlr"), CFG, batch_size=16).messages)


def test_backward_mode_and_alpha_restored_even_on_error(monkeypatch):
    model = sparse_model(alpha=0.3)
    set_backward(model, "exact")
    x, y = make_data(8, 2)

    def boom(*a, **k):
        raise RuntimeError("simulated failure inside the attack")
    monkeypatch.setattr(atk, "_sequence", boom)
    for mode in ("bpda", "transfer"):
        with pytest.raises(RuntimeError, match="simulated failure"):
            run_attack(model, x, y, Attack("apgd-ce", mode), CFG, batch_size=8)
        ops = operators(model)
        assert all(m.backward == "exact" for m in ops)
        assert all(float(m.alpha) == pytest.approx(0.3) for m in ops)


def test_base_model_context_is_the_unsparsified_model():
    model = sparse_model(alpha=0.5)
    plain = tiny_model()
    x, _ = make_data(8, 2)
    assert not torch.equal(model(x), plain(x))
    with base_model(model):
        assert torch.equal(model(x), plain(x))
    assert not torch.equal(model(x), plain(x))


def test_transfer_uses_images_crafted_on_the_base_model():
    model = sparse_model(alpha=0.2)
    x, y = make_data(32, 2)
    out = run_attack(model, x, y, Attack("apgd-ce", "transfer"), CFG, batch_size=32, keep_adv=True)
    with base_model(model):
        base_out = run_attack(model, x, y, Attack("apgd-ce"), CFG, batch_size=32, keep_adv=True)
    # the same images (crafted on the base) evaluated on the sparsified model
    assert torch.allclose(out.x_adv, base_out.x_adv)
    expected = model(x).argmax(1).eq(y) & model(out.x_adv).argmax(1).eq(y)
    assert torch.equal(out.robust, expected)


# --- AutoAttack's own checks --------------------------------------------------------------------

class _Noisy(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + 0.5 * torch.randn(len(x), 4)


def test_autoattack_checks_flag_a_randomised_model():
    x, y = make_data(16, 2)
    _, msgs = atk.autoattack_checks(_Noisy(tiny_model()), x, y, ["apgd-ce"], CFG)
    assert any("randomized defense" in m for m in msgs)
    n_cls, msgs = atk.autoattack_checks(tiny_model(), x, y, ["apgd-ce", "apgd-t"], CFG)
    assert n_cls == 4 and msgs == []


def test_autoattack_checks_flag_probability_outputs():
    x, y = make_data(16, 2)
    model = nn.Sequential(tiny_model(), nn.Softmax(dim=1))
    _, msgs = atk.autoattack_checks(model, x, y, ["apgd-ce"], CFG)
    assert any("probability distribution" in m for m in msgs)


def test_square_check_reports_square_success():
    msgs = atk.square_check({"clean": 0.9, "apgd-ce": 0.6, "square": 0.5})
    assert msgs and "Square Attack has decreased" in msgs[0]
    assert atk.square_check({"clean": 0.9, "apgd-ce": 0.6, "square": 0.6}) == []
