"""msparse.models: the CIFAR ResNet-18 family, the registry, the shipped default, RobustBench loading."""
import json
import shutil
import socket

import pytest
import torch
import torch.nn as nn

import msparse.models.zoo as M
from msparse._io import sha256_file
from msparse.data.loading import load_data
from msparse.errors import ChecksumError, ModelLoadError
from msparse.models.registry import is_model, list_models, load_model, model_entries, model_entry
from msparse.models.resnet import ACTIVATIONS, ResNet18, activation_positions, resnet18
from msparse.training.metrics import accuracy, pgd_accuracy

RB_SMALL = "Addepalli2022Efficient_RN18"   # a RobustBench CIFAR-10 L-inf entry whose ResNet-18 builds fast


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ------------------------------------------------------------------ the family

@pytest.mark.parametrize("act", ACTIVATIONS)
def test_family_forward_shape_and_17_distinct_positions(act):
    model = resnet18(act, width=4).eval()
    out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10)
    pos = activation_positions(model)
    assert [i for i, _, _ in pos] == list(range(17))
    assert pos[0] == (0, "act", "stem")
    assert all(tag == "main_path" for i, _, tag in pos if i % 2 == 1)
    assert all(tag == "after_add" for i, _, tag in pos if i > 0 and i % 2 == 0)
    mods = dict(model.named_modules())
    instances = [mods[path] for _, path, _ in pos]
    assert len({id(m) for m in instances}) == 17          # one module instance per position


def test_positions_follow_forward_order():
    model = resnet18("gelu", width=4).eval()
    order = []
    for i, path, _ in activation_positions(model):
        dict(model.named_modules())[path].register_forward_hook(lambda m, a, o, i=i: order.append(i))
    model(torch.rand(1, 3, 32, 32))
    assert order == list(range(17))


def test_main_path_and_after_add_positions_are_where_the_spec_says():
    """act1 sees bn1's output; act2 sees bn2(conv2(.)) + shortcut."""
    model = resnet18("relu", width=4).eval()
    blk = model.layer2[0]
    seen = {}
    blk.bn1.register_forward_hook(lambda m, a, o: seen.__setitem__("bn1", o))
    blk.act1.register_forward_pre_hook(lambda m, a: seen.__setitem__("act1", a[0]))
    blk.bn2.register_forward_hook(lambda m, a, o: seen.__setitem__("bn2", o))
    blk.shortcut.register_forward_hook(lambda m, a, o: seen.__setitem__("sc", o))
    blk.act2.register_forward_pre_hook(lambda m, a: seen.__setitem__("act2", a[0]))
    model(torch.rand(1, 3, 32, 32))
    assert torch.equal(seen["act1"], seen["bn1"])
    assert torch.allclose(seen["act2"], seen["bn2"] + seen["sc"])


def test_parametric_activations_share_parameters_network_wide():
    for act, names in (("psilu", ["paf.a"]), ("pssilu", ["paf.a", "paf.b"])):
        model = resnet18(act, width=4).eval()
        assert sorted(k for k in model.state_dict() if "paf" in k or "act" in k) == names
        x = torch.rand(2, 3, 32, 32)
        y0 = model(x)
        with torch.no_grad():
            model.paf.a.fill_(3.0)
        assert not torch.allclose(model(x), y0)          # the one parameter acts at every position
        a = torch.tensor(3.0)
        t = torch.linspace(-3, 3, 7)
        if act == "psilu":
            assert torch.allclose(model.layer1[0].act2(t), t * torch.sigmoid(a * t))
        else:
            with torch.no_grad():
                model.paf.b.fill_(0.2)
            assert torch.allclose(model.layer4[1].act1(t), t * (torch.sigmoid(a * t) - 0.2) / 0.8)


def test_width_multiplier():
    small, full = resnet18("relu", 16), resnet18("relu", 64)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert full.layer4[1].conv2.weight.shape == (512, 512, 3, 3)
    assert small.layer4[1].conv2.weight.shape == (128, 128, 3, 3)
    assert 10e6 < n(full) < 12e6 and n(small) < n(full) / 10


def test_unknown_activation_is_an_error():
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        resnet18("tanh")


def test_the_lead_preset_finds_17_sites_with_matching_tags():
    from msparse.core.placement import sparsify
    model = resnet18("gelu", width=4).eval()
    sites = sparsify(model, "ResNet-18/cifar10/Linf/v1")
    assert len(sites) == 17
    pos = activation_positions(model)
    for site, (i, path, tag) in zip(sorted(sites, key=lambda s: s.index), pos):
        assert site.index == i and site.module == path and tag in site.tags


# ------------------------------------------------------------------ the standard-training control

def test_pyautoattack_standard_model_loads_strictly_and_is_accurate_but_not_robust(no_network):
    model = load_model("pyautoattack/resnet18-standard")
    assert isinstance(model, ResNet18) and model.activation == "relu" and not model.training
    assert "not robust" in model.msparse_card["source"]
    x, y = load_data("cifar10", "test", n=100)
    assert accuracy(model, x, y) > 0.85
    assert pgd_accuracy(model, x[:20], y[:20], steps=3) < 0.15


# ------------------------------------------------------------------ the shipped default

def test_default_model_loads_offline_and_is_robust(no_network):
    model = load_model()
    card = model.msparse_card
    assert card["name"] == M.DEFAULT_MODEL and card["verified"]
    arch = card["card"]["architecture"]
    assert (model.activation, model.width) == (arch["activation"], arch["width"])
    x, y = load_data("cifar10", "test", n=200)
    assert accuracy(model, x, y) >= 0.55
    assert pgd_accuracy(model, x[:100], y[:100], steps=10) >= 0.25


def test_default_model_card_reports_the_required_numbers_on_exact_test_images():
    card = json.loads((M.ASSET_DIR / f"{M.DEFAULT_FILE}.json").read_text())
    ev = card["evaluation"]
    assert ev["n"] == 1000 and ev["data"]["exact"] and ev["data"]["indices"] == "0..999"
    assert ev["clean_accuracy"] >= 0.60 and ev["apgd_ce_accuracy"] >= 0.30
    assert ev["apgd_ce"]["iterations"] == 100 and ev["apgd_ce"]["restarts"] == 1 and ev["apgd_ce"]["seed"] == 0
    assert card["recipe"]["method"] == "pgd-at" and card["wall_time_s"] > 0 and card["device"]
    assert card["data"]["train"]["kind"] in ("jpeg", "official", "offline")
    assert (M.ASSET_DIR / card["weights"]["file"]).stat().st_size <= 5 * 2**20


def test_default_model_weights_are_verified(tmp_path, monkeypatch):
    for f in (f"{M.DEFAULT_FILE}.pt", f"{M.DEFAULT_FILE}.json"):
        shutil.copy(M.ASSET_DIR / f, tmp_path / f)
    pt = tmp_path / f"{M.DEFAULT_FILE}.pt"
    data = bytearray(pt.read_bytes())
    data[-100] ^= 0x01
    pt.write_bytes(bytes(data))
    monkeypatch.setattr(M, "ASSET_DIR", tmp_path)
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        load_model()


# ------------------------------------------------------------------ family checkpoints

def _save_family(tmp_path, act="gelu", width=4, name="resnet18-gelu-w4", card=True):
    model = resnet18(act, width).eval()
    folder = tmp_path / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()},
               folder / f"{name}.pt")
    if card:
        (folder / f"{name}.json").write_text(json.dumps({
            "architecture": {"activation": act, "width": width, "num_classes": 10},
            "weights": {"file": "model.pt", "sha256": sha256_file(folder / f"{name}.pt")}}))
    return model, folder / f"{name}.pt"


def test_family_checkpoint_from_model_dir_and_checkpoint_path(tmp_path):
    ref, path = _save_family(tmp_path)
    x = torch.rand(2, 3, 32, 32)
    m1 = load_model("resnet18-gelu-w4", model_dir=tmp_path)
    m2 = load_model(checkpoint=path)                      # architecture from the card
    assert m1.msparse_card["verified"] and m2.width == 4
    with torch.no_grad():
        expected = resnet18("gelu", 4).eval()
        expected.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                                  for k, v in ref.state_dict().items()})
        assert torch.allclose(m1(x), expected(x), atol=1e-6) and torch.allclose(m2(x), expected(x), atol=1e-6)


def test_family_checkpoint_errors(tmp_path):
    _, path = _save_family(tmp_path)
    with pytest.raises(ModelLoadError, match="activation=relu"):
        load_model("resnet18-relu-w4", checkpoint=path)   # the card says gelu
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        load_model("resnet18-gelu-w4", model_dir=tmp_path)
    path.with_suffix(".json").unlink()                    # without a card only a broken file is detectable
    path.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(ModelLoadError, match="corrupted or not a PyTorch checkpoint"):
        load_model("resnet18-gelu-w4", model_dir=tmp_path)


def test_family_checkpoint_of_the_wrong_width_is_rejected(tmp_path):
    _, path = _save_family(tmp_path, card=False)
    with pytest.raises(ModelLoadError, match="do not fit resnet18 activation=gelu width=8"):
        load_model("resnet18-gelu-w8", checkpoint=path)
    with pytest.raises(ModelLoadError, match="no model card"):
        load_model(checkpoint=path)


# ------------------------------------------------------------------ RobustBench

def test_robustbench_model_loads_from_a_local_file_without_network(tmp_path, no_network):
    arch = load_model(RB_SMALL, pretrained=False)
    folder = tmp_path / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save(arch.state_dict(), folder / f"{RB_SMALL}.pt")
    model = load_model(RB_SMALL, model_dir=tmp_path)
    assert not model.training and model.msparse_card["source"].startswith("RobustBench")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), arch.eval()(x))


def test_robustbench_missing_file_is_an_error_and_leaves_nothing(tmp_path, no_network):
    with pytest.raises(ModelLoadError) as e:
        load_model(RB_SMALL, model_dir=tmp_path)
    msg = str(e.value)
    assert f"{tmp_path}/cifar10/Linf/{RB_SMALL}.pt" in msg and "download=True" in msg
    assert not list(tmp_path.rglob("*.pt"))


def test_robustbench_corrupted_file(tmp_path):
    folder = tmp_path / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    (folder / f"{RB_SMALL}.pt").write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(ModelLoadError, match="corrupted"):
        load_model(RB_SMALL, model_dir=tmp_path)


def test_unknown_model_and_wrong_dataset_or_threat_model():
    with pytest.raises(ModelLoadError, match="Did you mean 'Peng2023Robust'"):
        load_model("Peng2023Robustt")
    with pytest.raises(ModelLoadError, match="not in RobustBench's cifar10/L2 zoo"):
        load_model(RB_SMALL, threat_model="L2")            # exists for L-inf only
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_model(RB_SMALL, dataset="mnist")
    with pytest.raises(ValueError, match="unknown threat model 'L3'"):
        load_model(RB_SMALL, threat_model="L3")
    with pytest.raises(ModelLoadError, match="CIFAR-10 L-inf model"):
        load_model(dataset="cifar100")


def test_list_models():
    names = list_models()
    assert names[:2] == [M.DEFAULT_MODEL, M.STANDARD_MODEL]
    assert "Peng2023Robust" in names and RB_SMALL in names
    assert M.DEFAULT_MODEL not in list_models("imagenet", "Linf")


def test_pssilu_b_starts_where_its_gradient_is_not_zero():
    # |b| has zero gradient at b = 0: starting there, PSSiLU would silently train as PSiLU
    model = resnet18("pssilu", width=4)
    assert model.paf.b.item() == pytest.approx(1e-8)
    model(torch.rand(4, 3, 32, 32)).square().mean().backward()
    assert model.paf.b.grad is not None and model.paf.b.grad.abs().item() > 0


# ------------------------------------------------------------------ the registry

@pytest.mark.parametrize("entry", model_entries(), ids=lambda e: e.key)
def test_every_registry_entry_owns_its_names_and_builds_its_architecture(entry):
    """One table decides what a name means: each entry owns its example and every name it lists, and builds
    the architecture with random weights (nothing read or downloaded)."""
    assert model_entry(entry.example) is entry and is_model(entry.example)
    listed = entry.names("cifar10", "Linf")
    if entry.kind == "robustbench":
        assert entry.example in listed and entry.example in list_models()
        assert entry.example not in list_models(include_robustbench=False)
    else:
        assert all(model_entry(n) is entry for n in listed)
        assert set(listed) <= set(list_models(include_robustbench=False))
    model = load_model(entry.example, pretrained=False)
    assert isinstance(model, nn.Module) and not model.training
    assert model.msparse_card["verified"] is False and model.msparse_card["sha256"] is None
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_the_registry_has_one_default_and_refuses_unknown_names():
    defaults = [e for e in model_entries() if e.default]
    assert len(defaults) == 1 and model_entry(None) is defaults[0] and defaults[0].key == M.DEFAULT_MODEL
    assert [e.kind for e in model_entries()][-1] == "robustbench"       # RobustBench is the fallback
    assert not is_model("no-such-model") and not is_model("resnet18-tanh")
    with pytest.raises(ModelLoadError, match="unknown model 'no-such-model'"):
        model_entry("no-such-model")
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        load_model("resnet18-tanh")
    with pytest.raises(ValueError, match="not a family name"):
        load_model(M.STANDARD_MODEL, checkpoint="x.pt")


# ------------------------------------------------------------------ the front door (msparse.models.front)

def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["msparse/default", "random:resnet18-gelu-w16", "msparse/resnet18-gelu-w8-pgdat"])
def test_cli_experiments_and_verification_get_one_model_and_placement_per_name(name):
    """The three callers that load a model by name (``--model``, ``setup``, the record checker) go through
    :func:`msparse.models.front.resolve`: same weights, same default placement, ``random:`` names included."""
    from msparse.cli import loading as cli
    from msparse.core.placement import sites, sparsify, unsparsify
    from msparse.evaluation.verify import Rebuilder
    from msparse.experiments import setup as es
    from msparse.models import resolve

    model, placement = resolve(name)
    assert placement == "ResNet-18/cifar10/Linf/v1"
    from_cli = cli.load_model_arg(name, None, "cpu")
    assert _same_weights(from_cli, model)
    assert cli.resolve_placement("auto", from_cli, name, "cifar10", "Linf") == placement
    from_setup = es.load(name)
    assert _same_weights(from_setup, model) and es.default_placement(from_setup, name) == placement
    rebuilt = Rebuilder().model(name)
    expected = [s.name for s in sparsify(resolve(name)[0], placement)]
    assert [s.name for s in sites(rebuilt)] == expected
    assert _same_weights(unsparsify(rebuilt), model)


def test_default_placement_is_the_papers_preset_by_name_random_weights_included():
    """A RobustBench name with a preset in :data:`msparse.PRESETS` gets it (v1 first) for every caller, also as
    ``random:<name>`` (the same architecture); the project's ResNet-18 family gets the ResNet-18 preset on
    CIFAR-10 L∞ only; anything else gets ``activations``."""
    from msparse.cli import loading as cli
    from msparse.experiments import setup as es
    from msparse.models import default_placement

    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert default_placement(other, "Peng2023Robust") == "Peng2023Robust/cifar10/Linf/v1"
    assert default_placement(other, "random:Peng2023Robust") == "Peng2023Robust/cifar10/Linf/v1"
    assert default_placement(other, "Wang2023Better_WRN-70-16", "cifar100") == "Wang2023Better_WRN-70-16/cifar100/Linf/v2"
    assert es.default_placement(other, "Peng2023Robust") == "Peng2023Robust/cifar10/Linf/v1"
    assert cli.resolve_placement("auto", other, "random:Peng2023Robust", "cifar10", "Linf") == \
        "Peng2023Robust/cifar10/Linf/v1"
    assert default_placement(other, "no-such-model") == default_placement(other) == "activations"
    family = resnet18("gelu", width=4)
    assert default_placement(family) == "ResNet-18/cifar10/Linf/v1"
    assert default_placement(family, None, "cifar100") == "activations"


def test_front_door_loads_a_checkpoint_file_by_its_path(tmp_path):
    """A ``*.pt`` name is a family checkpoint with its card beside it: the same model as its registry name."""
    from msparse.models import resolve
    from msparse.models.front import load

    src = M.shipped_family()["msparse/resnet18-gelu-w8-pgdat"]
    model, placement = resolve(str(src))
    assert _same_weights(model, load("msparse/resnet18-gelu-w8-pgdat"))
    assert placement == "ResNet-18/cifar10/Linf/v1"


def test_front_door_refuses_malformed_random_names():
    from msparse.errors import InputError
    from msparse.models.front import load

    with pytest.raises(InputError, match="write random:<model name>"):
        load("random:")
    with pytest.raises(InputError, match="random weights; do not pass a checkpoint"):
        load("random:resnet18-gelu-w16", checkpoint="x.pt")
    with pytest.raises(ModelLoadError, match="unknown model 'no-such-model'"):
        load("random:no-such-model")
