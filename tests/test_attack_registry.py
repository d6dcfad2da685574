"""The attack registry (msparse.attacks.registry): the contract every registered attack keeps, run on each of
:func:`list_attacks` on a tiny random model and a handful of images; the names, parameters and record keys of
:mod:`msparse.attacks.base` (unchanged for every attack string that existed before the registry); its readers."""
import pytest
import torch
import torch.nn as nn

from msparse.attacks.autoattack import run_attack
from msparse.attacks.base import (SEQUENCES, Attack, AttackConfig, attack_params, canonical_name, direct_equivalent,
                                  parse_attack)
from msparse.attacks.registry import (AttackMethod, get_attack, list_attacks, register_attack, resolve_params,
                                      unregister_attack)
from msparse.errors import InputError, UnknownNameError

N_CLASSES = 4
EPS = {"Linf": 8 / 255, "L2": 0.5}
#: a budget small enough for every attack to run in well under a second on 6 images of 3x8x8
SMALL = dict(n_iter=3, n_restarts=1, n_queries=20, n_target_classes=3)


def _model(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                             nn.Linear(32, N_CLASSES)).eval()


def _data(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, N_CLASSES, (n,), generator=g)


def _labelled(model, x):
    """Labels = the model's predictions, so every image is clean-correct and the attack has work to do."""
    with torch.no_grad():
        return model(x).argmax(1)


def _cfg(norm="Linf", seed=0, **kw):
    return AttackConfig(eps=EPS[norm], norm=norm, seed=seed, **{**SMALL, **kw})


def _run(name, norm="Linf", seed=0, params=None, model=None, x=None):
    model = model or _model()
    x = _data()[0] if x is None else x
    y = _labelled(model, x)
    method = get_attack(name)(model, _cfg(norm, seed), device="cpu", n_classes=N_CLASSES, params=params)
    return x, method(x, y)


def _cases():
    return [(a, n) for a in list_attacks() for n in get_attack(a).norms if n in EPS]


# --- the contract, per registered attack ---------------------------------------------------------

@pytest.mark.parametrize("name, norm", _cases())
def test_perturbation_is_within_eps_and_the_box(name, norm):
    x, adv = _run(name, norm)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert adv.min() >= 0 and adv.max() <= 1
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)
    assert (size <= EPS[norm] * (1 + 1e-4) + 1e-6).all(), (name, norm, float(size.max()))


@pytest.mark.parametrize("name", list_attacks())
def test_same_seed_same_output_and_the_callers_rng_untouched(name):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _, a = _run(name, seed=5)
    assert torch.equal(torch.rand(3), expected)
    _, b = _run(name, seed=5)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", list_attacks())
def test_robust_never_exceeds_clean(name):
    model = _model()
    x, y = _data(8, 3)
    clean = _labelled(model, x).eq(y)
    for attack in [Attack(name)] + ([Attack(name, "bpda")] if get_attack(name).needs_grad else []):
        out = run_attack(model, x, y, attack, _cfg(), batch_size=8, n_classes=N_CLASSES)
        assert not (out.robust & ~clean).any()
        assert torch.equal(out.robust, clean & (out.broken_by < 0))


def _other(value):
    """A value of the same type as ``value`` that differs from it."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    return value + "x"


def _plan_key(attack):
    from msparse.evaluation.evaluate import evaluation_plan

    x, y = _data()
    return evaluation_plan(_model(), x, y, attack, n_iter=3).key


@pytest.mark.parametrize("name", [a for a in list_attacks() if get_attack(a).params])
def test_every_declared_parameter_enters_the_record_key(name):
    cls = get_attack(name)
    base_params, base_key = attack_params(parse_attack(name)), _plan_key(name)
    assert base_params[name] == dict(cls.params)
    for k, v in cls.params.items():
        spec = f"{name}[{k}={_other(v)}]"
        comps = parse_attack(spec)
        assert canonical_name(comps) == spec and parse_attack(canonical_name(comps)) == comps
        got = attack_params(comps)
        assert got[name][k] == _other(v) and got != base_params
        assert _plan_key(spec) != base_key
        # the default written out is the default: same name, same key
        assert canonical_name(parse_attack(f"{name}[{k}={v}]")) == name


@pytest.mark.parametrize("name", list_attacks())
def test_an_undeclared_parameter_is_an_error(name):
    declared = ", ".join(get_attack(name).params) or "none"
    with pytest.raises(InputError, match=f"no parameter 'bogus'; declared parameters: {declared}"):
        parse_attack(f"{name}[bogus=1]")
    with pytest.raises(InputError, match="no parameter 'bogus'"):
        get_attack(name)(_model(), _cfg(), device="cpu", params={"bogus": 1})


@pytest.mark.parametrize("name", list_attacks())
def test_gradient_free_attacks_refuse_a_backward_mode(name):
    if get_attack(name).needs_grad:
        for mode in ("bpda", "surrogate", "transfer"):
            assert parse_attack(f"{mode}:{name}") == [Attack(name, mode)]
    else:
        for mode in ("bpda", "surrogate"):
            with pytest.raises(InputError, match="uses no gradient"):
                parse_attack(f"{mode}:{name}")
        assert parse_attack(f"transfer:{name}") == [Attack(name, "transfer")]


@pytest.mark.parametrize("name", list_attacks())
def test_an_undeclared_norm_is_refused_before_anything_runs(name):
    cls = get_attack(name)
    missing = [n for n in ("Linf", "L2", "L1") if n not in cls.norms]
    for norm in missing:
        cfg = AttackConfig(eps=0.5, norm=norm, **SMALL)
        with pytest.raises(InputError, match=name):
            cls(_model(), cfg, device="cpu")


@pytest.mark.parametrize("name", list_attacks())
def test_every_attack_has_a_positive_cost_and_a_summary(name):
    cls = get_attack(name)
    assert cls.summary and cls.library
    assert cls.cost(_cfg(), dict(cls.params)) > 0


# --- names and keys: unchanged for every attack string that existed before the registry --------------

#: computed with the code before the registry (git 0e87c64): name -> [canonical name, attack_params,
#: attacks per component, canonical name of the direct equivalent]
_G = {"pairs": 32, "smoothing": 0.25, "step_first": 0.25, "step_last": 0.02}   # gradest's PARAMS
_TAUS = [0.3, 0.1, 0.03]
TODAY = {
    'none': ['none', {}, [[]], 'none'],
    'apgd-ce': ['apgd-ce', {}, [['apgd-ce']], 'apgd-ce'],
    'apgd-dlr': ['apgd-dlr', {}, [['apgd-dlr']], 'apgd-dlr'],
    'apgd': ['apgd', {}, [['apgd-ce', 'apgd-dlr']], 'apgd'],
    'apgd-t': ['apgd-t', {}, [['apgd-t']], 'apgd-t'],
    'apgd-ce+t': ['apgd-ce+t', {}, [['apgd-ce', 'apgd-t']], 'apgd-ce+t'],
    'fab-t': ['fab-t', {}, [['fab-t']], 'fab-t'],
    'square': ['square', {}, [['square']], 'square'],
    'aa': ['aa', {}, [['apgd-ce', 'apgd-t', 'fab-t', 'square']], 'aa'],
    'gradest': ['gradest', {'gradest': _G}, [['gradest']], 'gradest'],
    'bpda': ['bpda:apgd-ce+t', {}, [['apgd-ce', 'apgd-t']], 'apgd-ce+t'],
    'transfer': ['transfer:apgd', {}, [['apgd-ce', 'apgd-dlr']], 'apgd'],
    'worst':
        ['worst:apgd,bpda:apgd-ce+t,transfer:apgd', {}, [['apgd-ce', 'apgd-dlr'], ['apgd-ce', 'apgd-t'], ['apgd-ce', 'apgd-dlr']], 'worst:apgd,apgd-ce+t'],
    'bpda:apgd': ['bpda:apgd', {}, [['apgd-ce', 'apgd-dlr']], 'apgd'],
    'bpda:aa': ['bpda:aa', {}, [['apgd-ce', 'apgd-t', 'fab-t', 'square']], 'aa'],
    'surrogate:apgd-ce': ['surrogate:apgd-ce', {'surrogate_taus': _TAUS}, [['apgd-ce']], 'apgd-ce'],
    'surrogate:apgd': ['surrogate:apgd', {'surrogate_taus': _TAUS}, [['apgd-ce', 'apgd-dlr']], 'apgd'],
    'transfer:aa': ['transfer:aa', {}, [['apgd-ce', 'apgd-t', 'fab-t', 'square']], 'aa'],
    'transfer:gradest': ['transfer:gradest', {'gradest': _G}, [['gradest']], 'gradest'],
    'transfer:square': ['transfer:square', {}, [['square']], 'square'],
    'worst:apgd,bpda,transfer':
        ['worst:apgd,bpda:apgd-ce+t,transfer:apgd', {}, [['apgd-ce', 'apgd-dlr'], ['apgd-ce', 'apgd-t'], ['apgd-ce', 'apgd-dlr']], 'worst:apgd,apgd-ce+t'],
    'worst:apgd,surrogate:apgd-ce,gradest':
        ['worst:apgd,surrogate:apgd-ce,gradest', {'surrogate_taus': _TAUS, 'gradest': _G}, [['apgd-ce', 'apgd-dlr'], ['apgd-ce'], ['gradest']], 'worst:apgd,apgd-ce,gradest'],
    'worst:gradest,square':
        ['worst:gradest,square', {'gradest': _G}, [['gradest'], ['square']], 'worst:gradest,square'],
    'bpda:apgd-ce+t': ['bpda:apgd-ce+t', {}, [['apgd-ce', 'apgd-t']], 'apgd-ce+t'],
    'surrogate:aa': ['surrogate:aa', {'surrogate_taus': _TAUS}, [['apgd-ce', 'apgd-t', 'fab-t', 'square']], 'aa'],
    'worst:aa,bpda:aa,surrogate:apgd-ce+t,transfer:aa':
        ['worst:aa,bpda:aa,surrogate:apgd-ce+t,transfer:aa', {'surrogate_taus': _TAUS}, [['apgd-ce', 'apgd-t', 'fab-t', 'square'], ['apgd-ce', 'apgd-t', 'fab-t', 'square'], ['apgd-ce', 'apgd-t'], ['apgd-ce', 'apgd-t', 'fab-t', 'square']], 'worst:aa,apgd-ce+t'],
    ' APGD-CE ': ['apgd-ce', {}, [['apgd-ce']], 'apgd-ce'],
    'worst:apgd,apgd': ['apgd', {}, [['apgd-ce', 'apgd-dlr']], 'apgd'],
}


@pytest.mark.parametrize("spec", list(TODAY))
def test_names_and_record_key_params_are_todays(spec):
    c = parse_attack(spec)
    assert [canonical_name(c), attack_params(c), [list(x.attacks) for x in c],
            canonical_name(direct_equivalent(c))] == TODAY[spec]


def test_sequences_are_data_built_from_registry_names():
    for name, seq in SEQUENCES.items():
        assert all(a in list_attacks() for a in seq), name
        assert parse_attack(name)[0].attacks == seq
    for a in list_attacks():
        assert parse_attack(a)[0].attacks == (a,)


def test_worst_splits_on_commas_outside_brackets_and_params_are_canonical():
    comps = parse_attack("worst:gradest[step_first=0.5, pairs=8],apgd,gradest[pairs=32]")
    assert [c.name for c in comps] == ["gradest[pairs=8,step_first=0.5]", "apgd", "gradest"]
    assert comps[0].params == (("pairs", 8), ("step_first", 0.5))
    p = attack_params(comps)["gradest"]
    assert [d["pairs"] for d in p] == [8, 32]           # one attack, two settings: both keyed, in order
    assert parse_attack("GRADEST[]") == [Attack("gradest")]


@pytest.mark.parametrize("bad, err, msg", [
    ("gradest[pairs=many]", InputError, "pairs='many' is not an int"),
    ("gradest[pairs]", InputError, "written k=v"),
    ("gradest[pairs=8,pairs=9]", InputError, "given twice"),
    ("apgd[loss=ce]", InputError, "only a registered attack takes parameters"),
    ("nosuch[k=1]", UnknownNameError, "unknown attack"),
    ("gradest[pairs=8", UnknownNameError, "unknown attack"),
    ("bpda:gradest[pairs=8]", InputError, "uses no gradient"),
])
def test_parameter_errors_are_clear(bad, err, msg):
    with pytest.raises(err, match=msg.replace("[", r"\[")):
        parse_attack(bad)


def test_unknown_names_list_the_registry():
    with pytest.raises(UnknownNameError) as e:
        get_attack("nosuch")
    assert all(a in str(e.value) for a in list_attacks())
    with pytest.raises(UnknownNameError) as e:
        parse_attack("nosuch")
    assert all(a in str(e.value) for a in list_attacks() + list(SEQUENCES))


# --- registration ----------------------------------------------------------------------------------

class _Shift(AttackMethod):
    """Moves every pixel by +ε·sign(0.5 − x) (no model needed): the smallest attack that keeps the contract."""
    name = "test-shift"
    needs_grad = False
    params = {"scale": 1.0}
    library = "msparse"
    summary = "test attack"

    def perturb(self, x, y):
        return (x + self.params["scale"] * self.cfg.eps * torch.sign(0.5 - x)).clamp(0, 1)


@pytest.fixture
def shift():
    cls = register_attack(_Shift)
    yield cls
    unregister_attack(cls.name)


def test_registration_rules(shift):
    assert "test-shift" in list_attacks() and get_attack("test-shift") is _Shift
    with pytest.raises(InputError, match="already registered"):
        register_attack(_Shift)
    for bad in ("apgd", "bpda", "eps", "Bad Name"):
        with pytest.raises(InputError):
            register_attack(type("X", (AttackMethod,), {"name": bad}))
    with pytest.raises(InputError, match="must be a bool, int"):
        register_attack(type("X", (AttackMethod,), {"name": "x-list", "params": {"k": [1]}}))
    with pytest.raises(UnknownNameError):
        unregister_attack("nosuch")
    assert resolve_params(_Shift, {"scale": "2"}) == {"scale": 2.0}
    assert resolve_params(_Shift, {"scale": 2}) == {"scale": 2.0}


def test_a_registered_attack_runs_through_every_route(shift):
    from test_attacks import sparse_model, make_data

    model = sparse_model(0.3)
    x, y = make_data(8, 2)
    for spec in ("test-shift", "test-shift[scale=0.5]", "transfer:test-shift", "worst:apgd-ce,test-shift"):
        for c in parse_attack(spec):
            out = run_attack(model, x, y, c, AttackConfig(eps=8 / 255, **SMALL), batch_size=8, n_classes=4)
            assert out.robust.shape == (8,)
    with pytest.raises(InputError, match="uses no gradient"):
        parse_attack("bpda:test-shift")
