"""The adaptive attacks of the "Does MeanSparse work?" chapter: the smooth surrogate, gradient estimation, the
binarization test, their names and record keys; Holm's correction and the referee's verdict."""
import math

import pytest
import torch

from msparse.attacks.autoattack import run_attack
from msparse.attacks.base import Attack, AttackConfig, attack_params, parse_attack
from msparse.attacks.binarization import binarization_test
from msparse.attacks.gradest import GradientEstimation
from msparse.attacks.surrogate import TAUS, surrogate_backward
from msparse.core.operator import MeanSparse
from msparse.core.placement import operators, set_alpha
from msparse.errors import InputError
from msparse.evaluation.binarize import binarization_record
from msparse.evaluation.evaluate import evaluate
from msparse.evaluation.significance import holm
from msparse.evaluation.store import Store
from msparse.report import referee

from test_attacks import make_data, sparse_model, tiny_model


# --- names and keys ----------------------------------------------------------------------------

def test_new_names_parse_and_gradient_free_attacks_refuse_a_backward_mode():
    assert parse_attack("surrogate:apgd-ce") == [Attack("apgd-ce", "surrogate")]
    assert parse_attack("gradest") == [Attack("gradest")]
    assert [c.name for c in parse_attack("worst:apgd,surrogate:apgd-ce,gradest,square")] == [
        "apgd", "surrogate:apgd-ce", "gradest", "square"]
    for bad in ("bpda:square", "surrogate:gradest", "bpda:gradest"):
        with pytest.raises(InputError, match="uses no gradient"):
            parse_attack(bad)


def test_attack_params_leave_autoattack_keys_unchanged_and_key_the_new_attacks():
    for name in ("apgd", "bpda", "transfer", "aa", "worst", "square"):
        assert attack_params(parse_attack(name)) == {}
    assert attack_params(parse_attack("surrogate:apgd-ce")) == {"surrogate_taus": list(TAUS)}
    assert set(attack_params(parse_attack("worst:gradest,surrogate:apgd"))) == {"gradest", "surrogate_taus"}


# --- the surrogate backward ----------------------------------------------------------------------

def _op(alpha=0.5):
    op = MeanSparse(3)
    op.load_statistics(torch.tensor([0.0, 1.0, -1.0]), torch.tensor([1.0, 4.0, 0.25]), 100)
    op.set_alpha(alpha)
    return op


def test_surrogate_keeps_the_forward_bit_for_bit_and_has_the_relaxations_derivative():
    op = _op()
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 2
    exact = op(x)
    xs = x.clone().requires_grad_(True)
    tau = 0.1
    with surrogate_backward(op, tau):
        out = op(xs)
        out.sum().backward()
    assert torch.equal(out.detach(), exact)
    c = op.mean.view(1, 3, 1, 1)
    sd = op.var.sqrt().view(1, 3, 1, 1)
    m = torch.sigmoid((0.5 * sd - (x - c).abs()) / (tau * sd))
    expected = (1 - m) + (x - c).abs() * m * (1 - m) / (tau * sd)
    assert torch.allclose(xs.grad, expected, rtol=1e-5, atol=1e-6)
    inside = (x - c).abs() < 0.5 * sd
    assert (xs.grad[inside] > 0).all()          # the official backward is exactly 0 there
    assert not op._forward_hooks                # the hook is gone afterwards


def test_surrogate_leaves_sites_at_alpha_zero_alone():
    op = _op(alpha=0.0)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    with surrogate_backward(op, 0.1):
        op(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_surrogate_attack_breaks_points_the_masked_gradient_cannot_reach():
    m = sparse_model(alpha=1.5)                 # a wide band: the official gradient is mostly zero
    x, y = make_data(48, 7)
    cfg = AttackConfig(eps=16 / 255, n_iter=10, n_target_classes=3)
    direct = run_attack(m, x, y, Attack("apgd-ce"), cfg, batch_size=48)
    surr = run_attack(m, x, y, Attack("apgd-ce", "surrogate"), cfg, batch_size=48)
    assert int(surr.robust.sum()) <= int(direct.robust.sum())
    assert (surr.robust <= direct.robust | ~direct.robust).all()


# --- gradient estimation -------------------------------------------------------------------------

def test_gradient_estimation_stays_in_the_ball_is_deterministic_and_breaks_an_undefended_model():
    m = tiny_model()
    x, y = make_data(24, 5)
    atk = GradientEstimation(m, eps=16 / 255, n_iter=15, seed=3)
    adv = atk.perturb(x, y)
    assert (adv - x).abs().max() <= 16 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(adv, GradientEstimation(m, eps=16 / 255, n_iter=15, seed=3).perturb(x, y))
    with torch.no_grad():
        clean_ok = m(x).argmax(1).eq(y)
        adv_ok = m(adv).argmax(1).eq(y)
    assert int(adv_ok.sum()) < int(clean_ok.sum())          # it finds adversarial examples
    assert atk.queries() == 1 + 15 * 65


def test_gradient_estimation_through_evaluate_is_keyed_and_refuses_l2():
    m = tiny_model()
    x, y = make_data(16, 5)
    r = evaluate(m, x, y, "gradest", eps=8 / 255, n_iter=3, store=False, diagnostics=False)
    assert r.robust_acc <= r.clean_acc
    with pytest.raises(InputError, match="L∞"):
        evaluate(m, x, y, "gradest", eps=0.5, norm="L2", n_iter=3, store=False, diagnostics=False)


# --- the binarization test -------------------------------------------------------------------------

def test_binarization_test_passes_on_the_undefended_model_and_exposes_the_masked_gradient():
    x, _ = make_data(6, 11)
    base = binarization_test(tiny_model(), x, "apgd-ce", eps=16 / 255, n_iter=20)
    assert base.valid >= 4 and base.pass_rate == 1.0
    masked = sparse_model(alpha=3.0)           # nearly every activation blocked: zero official gradient
    direct = binarization_test(masked, x, "apgd-ce", eps=16 / 255, n_iter=20)
    bpda = binarization_test(masked, x, "bpda:apgd-ce", eps=16 / 255, n_iter=20)
    assert direct.valid == bpda.valid
    assert bpda.passed >= direct.passed


def test_binarization_record_is_reused_from_the_store(tmp_path):
    m = tiny_model()
    x, y = make_data(3, 11)
    st = Store(tmp_path)
    rec = binarization_record(m, x, y, "apgd-ce", eps=16 / 255, n_iter=5, store=st)
    assert rec["spec"]["kind"] == "binarization" and len(rec["result"]["flags"]) == 3
    assert st.get(rec["key"]) is not None
    again = binarization_record(m, x, y, "apgd-ce", eps=16 / 255, n_iter=5, store=st)
    assert again["provenance"] == rec["provenance"]      # read back, not recomputed


# --- Holm and the referee ------------------------------------------------------------------------

def test_holm_matches_the_step_down_rule():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == [] and holm([0.5]) == [0.5]
    assert holm([0.9, 0.8]) == [1.0, 1.0]          # capped at 1, and never below a smaller p's
    with pytest.raises(InputError):
        holm([1.5])


def _flags(n_both, n_gain, n_loss, n_none):
    base = "1" * n_both + "0" * n_gain + "1" * n_loss + "0" * n_none
    new = "1" * n_both + "1" * n_gain + "0" * n_loss + "0" * n_none
    return base, new


@pytest.mark.parametrize("direct,worst,p_adj,phrase", [
    ((80, 30, 0, 90), (80, 30, 0, 90), None, "reproduced"),
    ((80, 30, 0, 90), (80, 30, 0, 90), 0.2, "inconclusive at this n"),      # not significant after Holm
    ((80, 30, 0, 90), (80, 2, 3, 115), None, "broken by an adaptive attack"),
    ((80, 0, 30, 90), (80, 0, 30, 90), None, "not reproduced"),
    ((80, 3, 1, 116), (80, 3, 1, 116), None, "inconclusive at this n"),
])
def test_referee_verdict_phrases(direct, worst, p_adj, phrase):
    v = referee.referee_verdict(*_flags(*direct), *_flags(*worst), p_adjusted=p_adj)
    assert v.phrase == phrase
    assert v.phrase in referee.REFEREE_PHRASES
    if phrase.startswith("inconclusive"):
        assert "detects about" in v.reason()
    if p_adj is not None:
        assert "Holm-adjusted" in v.reason() and not math.isnan(p_adj)


def test_autoattack_dynamic_defence_check_is_not_raised_by_an_active_site():
    """pyautoattack's check counts calls of functions named ``backward``/``grad`` during one forward pass; the
    operator's forward must not make any (it once read its backward mode through a property named ``backward``)."""
    import msparse as ms
    from msparse.attacks.autoattack import autoattack_checks

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(1),
                            torch.nn.Flatten(), torch.nn.Linear(4, 10)).eval()
    ms.sparsify(m, "activations", input_size=(3, 8, 8))
    x = torch.rand(16, 3, 8, 8)
    ms.calibrate(m, x)
    for backward in ("exact", "identity"):
        ms.set_alpha(m, 0.5)
        ms.set_backward(m, backward)
        _, messages = autoattack_checks(m, x, torch.zeros(16, dtype=torch.long), ["apgd-ce"], AttackConfig(eps=8 / 255),
                                        randomized=False)
        assert not [w for w in messages if "dynamic" in w], (backward, messages)
