"""ANCRA's reverse attention (Zhou et al. 2023): RA blocks in layer4, their loss terms, training and loading."""
import json

import pytest
import torch
import torch.nn.functional as F

import msparse as ms
import msparse.core.placement as pl
from msparse.models.resnet import activation_positions
from msparse.errors import ModelLoadError
from msparse.models.registry import load_model
from msparse.models.resnet import BasicBlock, RAAuxPath, RABlock, resnet18
from msparse.training.config import TrainConfig
from msparse.training.loop import train
from msparse.training.losses import training_loss


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    return torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 5])


def test_ra_block_reweights_channels_by_the_classifier_row_of_the_label_or_of_its_own_prediction():
    torch.manual_seed(0)
    block = RABlock(8, 8, 1, torch.nn.GELU).eval()
    fc = torch.nn.Linear(8, 10)
    x = torch.randn(4, 8, 4, 4)
    z = BasicBlock.forward(block, x)                                  # the plain block output
    aux_expected = fc(z.mean((2, 3)))
    label = torch.tensor([3, 1, 4, 1])
    out, aux = block(x, fc, label)
    torch.testing.assert_close(aux, aux_expected)
    torch.testing.assert_close(out, z * fc.weight[label][:, :, None, None])
    out, _ = block(x, fc)                                             # no label: its own predicted class
    torch.testing.assert_close(out, z * fc.weight[aux_expected.argmax(1)][:, :, None, None])
    with pytest.raises(TypeError, match="shared classifier"):
        block(x)


def test_ra_network_keeps_the_17_positions_and_the_plain_state_dict_names(batch):
    plain, ra = resnet18("gelu", 4), resnet18("gelu", 4, reverse_attention=True)
    assert list(plain.state_dict()) == list(ra.state_dict())          # weights are interchangeable by name
    assert [p for p in activation_positions(ra)] == [p for p in activation_positions(plain)]
    assert all(isinstance(b, RABlock) for b in ra.layer4) and not any(isinstance(b, RABlock) for b in ra.layer3)
    x, y = batch
    ra.load_state_dict(plain.state_dict())
    plain.eval(), ra.eval()
    assert not torch.allclose(plain(x), ra(x))                        # the re-weighting changes the output
    ms.sparsify(ra, "ResNet-18/cifar10/Linf/v1")
    assert len(pl.sites(ra)) == 17


def test_gating_uses_labels_only_in_training_mode_and_output_is_the_last_blocks_logits(batch):
    x, y = batch
    torch.manual_seed(1)
    model = resnet18("relu", 4, reverse_attention=True).eval()
    logits, aux = model(x, return_aux=True)
    assert logits.shape == (6, 10) and len(aux) == 2 and all(a.shape == (6, 10) for a in aux)
    torch.testing.assert_close(model(x, y), model(x))                 # eval: labels are ignored
    # recompute by hand: the stages, then both RA blocks gated by their own argmax, then the classifier
    h = model.layer3(model.layer2(model.layer1(model.act(model.bn1(model.conv1(x))))))
    for block in model.layer4:
        z = BasicBlock.forward(block, h)
        a = model.linear(z.mean((2, 3)))
        h = z * model.linear.weight[a.argmax(1)][:, :, None, None]
    torch.testing.assert_close(logits, model.linear(h.mean((2, 3))))
    model.train()
    with torch.no_grad():
        t_true = model(x, y)
        t_pred = model(x)
    assert not torch.allclose(t_true, t_pred)                         # training gates by the given labels


def test_ancra_with_reverse_attention_trains_and_its_loss_has_the_auxiliary_terms():
    x, y = ms.load_data("cifar10", "train", n=32)
    cfg = TrainConfig(method="ancra", steps=1, width=4, activation="gelu").resolved()
    assert cfg.reverse_attention is True and cfg.cr_beta == 2.0
    torch.manual_seed(0)
    model = resnet18("gelu", 4, reverse_attention=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(10):
        model.train()
        loss, log = training_loss(model, x, y, cfg)
        assert log["loss"] == pytest.approx(log["loss_nat"] + 6.0 * log["loss_rob"] + 3.0 * log["loss_anc"], rel=1e-4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    # the natural term is CE(p') + cr_beta * mean CE(aux) under true-label gating
    model.train()
    torch.manual_seed(0)
    _, log = training_loss(model, x, y, cfg)
    with torch.no_grad():
        model.train()
        lo, aux = model(x, y, return_aux=True)
    nat = F.cross_entropy(lo, y) + 2.0 * sum(F.cross_entropy(a, y) for a in aux) / len(aux)
    assert log["loss_nat"] == pytest.approx(nat.item(), rel=1e-3)


def test_reverse_attention_is_only_for_ancra_and_can_be_switched_off():
    with pytest.raises(ValueError, match="reverse attention belongs to ANCRA"):
        TrainConfig(method="trades", reverse_attention=True).resolved()
    assert TrainConfig(method="ancra", reverse_attention=False).resolved().reverse_attention is False
    assert TrainConfig(method="pgd-at").resolved().reverse_attention is False


def test_an_ancra_run_writes_an_ra_card_and_loads_back_as_the_same_network(tmp_path):
    cfg = TrainConfig(method="ancra", steps=1, activation="gelu", width=4, epochs=1, batch_size=32, lr=0.05,
                      schedule="onecycle", data_source="offline", n_train=96, val_n=32, val_steps=1, eval_n=0,
                      out_dir=str(tmp_path / "run"), progress=False)
    card = train(cfg, log=lambda s: None)
    assert card["architecture"]["reverse_attention"] is True and card["recipe"]["cr_beta"] == 2.0
    model = load_model(checkpoint=tmp_path / "run" / "model.pt")
    assert model.reverse_attention and model.msparse_card["name"] == "run"
    x, _ = ms.load_data("cifar10", "test", n=8)
    ref = resnet18("gelu", 4, reverse_attention=True)
    ref.load_state_dict(torch.load(tmp_path / "run" / "model.pt", weights_only=True))
    torch.testing.assert_close(model(x), ref.eval()(x))
    # a family name that contradicts the card is refused; the -ra name is accepted
    with pytest.raises(ModelLoadError, match="reverse_attention=False but"):
        load_model("resnet18-gelu-w4", checkpoint=tmp_path / "run" / "model.pt")
    assert load_model("resnet18-gelu-w4-ra", checkpoint=tmp_path / "run" / "model.pt").reverse_attention
    assert load_model("resnet18-gelu-w4-ra", pretrained=False).reverse_attention
    assert json.loads((tmp_path / "run" / "model.json").read_text())["recipe"]["reverse_attention"] is True


def test_aux_path_surrogate_returns_the_gating_logits_and_is_keyed_apart(batch):
    from msparse.evaluation.evaluate import describe_model

    x, _ = batch
    model = resnet18("gelu", 4, reverse_attention=True).eval()
    path = RAAuxPath(model).eval()
    torch.testing.assert_close(path(x), model(x, return_aux=True)[1][0])
    torch.testing.assert_close(RAAuxPath(model, -1)(x), model(x, return_aux=True)[1][1])
    assert describe_model(path) != describe_model(model) != describe_model(RAAuxPath(model, 1))
    with pytest.raises(ValueError, match="reverse_attention=True"):
        RAAuxPath(resnet18("gelu", 4))


@pytest.mark.slow
def test_gate_attack_accuracies_and_their_worst_case():
    from msparse.training.metrics import gate_apgd_ce_accuracy

    torch.manual_seed(0)
    model = resnet18("gelu", 4, reverse_attention=True).eval()
    x, y = ms.load_data("cifar10", "test", n=16)
    with torch.no_grad():
        y = model(x).argmax(1)            # make every image "clean-correct" so the attacks have work to do
    g = gate_apgd_ce_accuracy(model, x, y, eps=1 / 255, batch_size=16)
    assert set(g) == {"direct", "gate_1", "gate_2", "worst"}
    assert g["worst"] <= min(g["direct"], g["gate_1"], g["gate_2"])
