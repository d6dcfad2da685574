"""Placement (the official code's add_custom_layer and hand-edited architectures):
sites, their order and shapes, the inverse, α and backward switches, bad models."""

import copy

import pytest
import torch
from torch import nn

import msparse as ms
import msparse.core.placement as pl


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.SiLU()
        self.conv2, self.bn2, self.act2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.SiLU()

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(out)) + x)


class SqueezeExcitation(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc1, self.relu, self.fc2, self.gate = nn.Conv2d(c, 2, 1), nn.ReLU(), nn.Conv2d(2, c, 1), nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class Net(nn.Module):
    def __init__(self, se=False):
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.bn, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.blocks = nn.Sequential(Block(4), Block(4))
        self.se = SqueezeExcitation(4) if se else nn.Identity()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.se(self.blocks(self.act(self.bn(self.stem(x)))))
        return self.head(x.mean((2, 3)))


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.relu(self.conv(x)).mean((1, 2, 3))


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.act = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.ReLU()

    def forward(self, x):
        return self.act(self.b(self.act(self.a(x))))


X = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def calibrated(model, placement="activations", alpha=0.0, **kw):
    sites = ms.sparsify(model, placement, **kw)
    ms.calibrate(model, X)
    ms.set_alpha(model, alpha)
    return sites


def test_sites_are_listed_in_forward_order_with_their_channels_and_layout():
    model = Net()
    sites = ms.sparsify(model, "activations")
    assert [s.name for s in sites] == [
        "act.msparse_in", "blocks.0.act1.msparse_in", "blocks.0.act2.msparse_in",
        "blocks.1.act1.msparse_in", "blocks.1.act2.msparse_in"]
    assert [s.index for s in sites] == list(range(5))
    assert {s.channels for s in sites} == {4} and {s.layout for s in sites} == {"nchw"}
    assert pl.sites(model) == sites


def test_model_state_dict_keys_are_unchanged_and_alpha_zero_changes_nothing():
    model = Net()
    before = model.state_dict()
    reference = model.eval()(X)
    calibrated(model)
    after = model.state_dict()
    assert set(before) <= set(after)
    assert all(".msparse_in." in k for k in set(after) - set(before))
    assert torch.equal(model(X), reference)


def test_unsparsify_is_the_inverse():
    model = Net().eval()
    reference = model(X)
    keys = set(model.state_dict())
    calibrated(model, alpha=0.5)
    assert not torch.equal(model(X), reference)
    pl.unsparsify(model)
    assert pl.sites(model) == [] and set(model.state_dict()) == keys
    assert torch.equal(model(X), reference)
    assert len(ms.sparsify(model, "activations")) == 5  # and can be sparsified again


def test_sparsifying_twice_is_an_error():
    model = Net()
    ms.sparsify(model, "activations")
    with pytest.raises(RuntimeError, match="already sparsified"):
        ms.sparsify(model, "activations")


def test_squeeze_excitation_is_skipped_by_default_and_the_rule_can_be_overridden():
    assert len(ms.sparsify(Net(se=True), "activations")) == 5
    sites = ms.sparsify(Net(se=True), "activations", skip=None)
    assert len(sites) == 6 and sites[-1].name == "se.relu.msparse_in" and sites[-1].channels == 2


def test_activation_types_are_configurable():
    assert [s.name for s in ms.sparsify(Net(), "activations", types=[nn.ReLU])] == ["act.msparse_in"]
    assert len(ms.sparsify(Net(), "activations", types=["SiLU"])) == 4


def test_rules_place_sites_on_outputs_with_tags():
    rules = [pl.Rule(where="input", classes=("SiLU",), names=("act1",), tags=("main_path",)),
             pl.Rule(where="output", classes=("Block",), tags=("after_add",))]
    sites = ms.sparsify(Net(), rules)
    assert [(s.name, sorted(s.tags)) for s in sites] == [
        ("blocks.0.act1.msparse_in", ["main_path"]), ("blocks.0.msparse_out", ["after_add"]),
        ("blocks.1.act1.msparse_in", ["main_path"]), ("blocks.1.msparse_out", ["after_add"])]


def test_set_alpha_everywhere_per_site_or_as_a_sequence():
    model = Net()
    sites = calibrated(model)
    ops = pl.operators(model)
    ms.set_alpha(model, 0.3)
    assert [float(op.alpha) for op in ops] == pytest.approx([0.3] * 5)
    ms.set_alpha(model, {sites[1].name: 0.2, 3: 0.1})  # by name or index; the others go to 0
    assert [float(op.alpha) for op in ops] == pytest.approx([0, 0.2, 0, 0.1, 0])
    ms.set_alpha(model, [0.1, 0.2, 0.3, 0.4, 0.5])
    assert [float(op.alpha) for op in ops] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_set_alpha_rejects_bad_values_and_keys_without_changing_anything():
    model = Net()
    calibrated(model, alpha=0.25)
    for bad in (-0.1, float("nan"), {0: -1.0}, [0.1, 0.2]):
        with pytest.raises(ValueError):
            ms.set_alpha(model, bad)
    with pytest.raises(KeyError, match="no site 'blocks.9.act1.msparse_in'"):
        ms.set_alpha(model, {"blocks.9.act1.msparse_in": 0.2})
    assert [float(op.alpha) for op in pl.operators(model)] == pytest.approx([0.25] * 5)


def test_switches_need_a_sparsified_model():
    for call in (lambda: ms.set_alpha(Net(), 0.2), lambda: ms.set_backward(Net(), "identity")):
        with pytest.raises(ValueError, match="sparsify"):
            call()


def test_backward_mode_switches_on_the_built_model():
    model = Net().eval()
    calibrated(model, alpha=1.0)  # roughly 70% of features blocked
    site = pl.operators(model)[1]  # before blocks.0.act1, a SiLU (nonzero derivative everywhere)
    grads = {}

    def keep_gradient(module, args, out):
        if out.requires_grad:
            out.register_hook(lambda g: grads.update(site=g))

    model.blocks[0].bn1.register_forward_hook(keep_gradient)

    def gradients():
        x = X.clone().requires_grad_(True)
        model(x).sum().backward()
        return x.grad, grads["site"]

    with torch.no_grad():
        stem = model.act(model.bn(model.stem(X)))  # hooks apply the stem site too
        band, _ = site.band(model.blocks[0].bn1(model.blocks[0].conv1(stem)))
    exact_input, exact_site = gradients()
    assert torch.all(exact_site[band] == 0)  # exact mode: no gradient inside the band
    ms.set_backward(model, "identity")
    identity_input, identity_site = gradients()
    assert (identity_site[band] != 0).float().mean() > 0.2  # BPDA: the gradient passes the band
    assert identity_input.abs().sum() > exact_input.abs().sum()
    ms.set_backward(model, "exact")
    assert torch.equal(gradients()[0], exact_input)
    with pytest.raises(ValueError, match="unknown backward mode"):
        ms.set_backward(model, "bpda")


def test_centre_switch():
    model = Net().eval()
    calibrated(model, alpha=0.5)
    mean_out = model(X)
    pl.set_centre(model, "zero")
    assert not torch.equal(model(X), mean_out)
    pl.set_centre(model, "mean")
    assert torch.equal(model(X), mean_out)


def test_blocked_fractions_per_site():
    model = Net()
    sites = calibrated(model, alpha=0.0)
    assert pl.blocked_fractions(model, X) == {s.name: 0.0 for s in sites}
    ms.set_alpha(model, 0.5)
    fractions = pl.blocked_fractions(model, X)
    assert set(fractions) == {s.name for s in sites} and all(0 < f < 1 for f in fractions.values())


def test_deep_copy_is_independent():
    model = Net().eval()
    calibrated(model, alpha=0.5)
    twin = copy.deepcopy(model)
    assert torch.equal(twin(X), model(X))
    ms.set_alpha(twin, 0.0)
    assert not torch.equal(twin(X), model(X))
    assert len(pl.sites(twin)) == 5


def test_functional_activations_give_a_clear_error():
    with pytest.raises(ValueError, match="no activation modules.*functional"):
        ms.sparsify(Functional(), "activations")


def test_shared_activation_module_is_refused_and_leaves_the_model_untouched():
    model = Shared()
    with pytest.raises(ValueError, match="runs 2 times per forward"):
        ms.sparsify(model, "activations", input_size=(3, 9, 9))
    assert pl.sites(model) == [] and not model.act._forward_pre_hooks


def test_wrong_probe_input_size_is_explained():
    with pytest.raises(RuntimeError, match="probe forward.*input_size"):
        ms.sparsify(Net(), "activations", input_size=(1, 8, 8))


def test_declared_layout_must_fit_the_tensor():
    with pytest.raises(ValueError, match="does not fit the declared layout 'nlc'"):
        ms.sparsify(Net(), "activations", layout="nlc")


class WideAsChannels(nn.Module):
    """Conv 3→8 on 8×8 images: the (1, 8, 8, 8) tensor has as many columns as channels, so 'nhwc' fits its rank
    and even its channel count at the probe size."""

    def __init__(self, residual=False):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.residual = residual

    def forward(self, x):
        y = self.bn(self.conv(x))
        return self.act(y + x.mean(1, keepdim=True) if self.residual else y).mean((1, 2, 3))


class ChannelsLastMlp(nn.Module):
    """ConvNeXt-style block: an NCHW map permuted to (N, H, W, C), Linear → GELU → Linear, permuted back."""

    def __init__(self, c=4):
        super().__init__()
        self.conv, self.fc1, self.act, self.fc2 = nn.Conv2d(3, c, 3, padding=1), nn.Linear(c, 4 * c), nn.GELU(), \
            nn.Linear(4 * c, c)

    def forward(self, x):
        y = self.conv(x).permute(0, 2, 3, 1)
        return self.fc2(self.act(self.fc1(y))).permute(0, 3, 1, 2).mean((1, 2, 3))


@pytest.mark.parametrize("residual", [False, True], ids=["after-batchnorm", "after-residual-sum"])
def test_nhwc_declared_on_an_nchw_tensor_is_refused_naming_site_layout_and_shape(residual):
    """Before: the site ran silently with per-column statistics (channels=8 = the width)."""
    model = WideAsChannels(residual)
    with pytest.raises(ms.errors.InputError) as info:
        ms.sparsify(model, "activations", layout="nhwc", input_size=(3, 8, 8))
    msg = str(info.value)
    assert "'act.msparse_in'" in msg and "'nhwc'" in msg and "(1, 8, 8, 8)" in msg
    assert ("BatchNorm2d 'bn'" in msg and "declare layout 'nchw'" in msg) if not residual else \
        ("changes with the input size" in msg and "'nchw' for (N, C, H, W)" in msg)
    assert pl.sites(model) == [] and model.training and not model.act._forward_pre_hooks
    assert [s.channels for s in ms.sparsify(model, "activations", input_size=(3, 8, 8))] == [8]


def test_nchw_declared_on_a_linear_output_is_refused():
    with pytest.raises(ms.errors.InputError, match=r"output of Linear 'fc1'.*declare layout 'nhwc'"):
        ms.sparsify(ChannelsLastMlp(), "activations", input_size=(3, 4, 4))


def test_channels_last_mlp_and_tokens_keep_their_declared_layouts():
    (site,) = ms.sparsify(ChannelsLastMlp(), "activations", layout="nhwc", input_size=(3, 4, 4))
    assert (site.layout, site.channels) == ("nhwc", 16)
    tokens = nn.Sequential(nn.Flatten(2), nn.Unflatten(1, (3, 1)), nn.Flatten(1, 2))  # (N, 3, H*W)
    model = nn.Sequential(tokens, nn.Linear(16, 6), nn.GELU())                      # tokens (N, 3, 6), C = 6
    (site,) = ms.sparsify(model, "activations", layout="nlc", input_size=(3, 4, 4))
    assert (site.layout, site.channels) == ("nlc", 6)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown placement.*Did you mean.*'Peng2023Robust/cifar10/Linf/v2'"):
        ms.sparsify(Net(), "Peng2023Robust/cifar10/Linf/v3")
