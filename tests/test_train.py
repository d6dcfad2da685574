"""msparse.training (and the training-time attacks of msparse.attacks.pgd): the three objectives, resumable runs,
model cards, atomic checkpoints, the CLI entry points."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import msparse._io as io_
from msparse.attacks.pgd import pgd_attack
from msparse.data.loading import load_data
from msparse.models.registry import load_model
from msparse.models.resnet import resnet18
from msparse.training import cli as train_cli
from msparse.training.config import TrainConfig
from msparse.training.loop import _lr_lambda, train
from msparse.training.losses import _random_negatives, anc_loss, training_loss

EPS = 8 / 255


@pytest.fixture(scope="module")
def tiny_batch():
    x, y = load_data("cifar10", "train", n=32)
    return x, y


def test_pgd_stays_in_the_eps_ball_and_the_image_range(tiny_batch):
    x, y = tiny_batch
    torch.manual_seed(0)
    model = resnet18("relu", 4).eval()
    for start in ("uniform", "normal", "none"):
        xa = pgd_attack(model, x, y, EPS, 3, 0.0078, random_start=start)
        assert xa.shape == x.shape and not xa.requires_grad
        assert (xa - x).abs().max() <= EPS + 1e-6 and xa.min() >= 0 and xa.max() <= 1


def test_pgd_increases_the_loss_and_targeted_pgd_decreases_it(tiny_batch):
    x, y = tiny_batch
    torch.manual_seed(0)
    model = resnet18("gelu", 4).eval()
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y).item()
        adv = F.cross_entropy(model(pgd_attack(model, x, y, EPS, 5, 0.0078)), y).item()
        t = (y + 1) % 10
        tgt = F.cross_entropy(model(pgd_attack(model, x, t, EPS, 5, 0.0078, targeted=True)), t).item()
        tgt0 = F.cross_entropy(model(x), t).item()
    assert adv > clean and tgt < tgt0


def test_anc_loss_matches_its_definition():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    q = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]])   # row 0 same class as anchor, row 1 not
    assert anc_loss(p, q).item() == pytest.approx((0.7 * 0.6) ** 0.5 / 2, rel=1e-5)


def test_negatives_have_another_class():
    y = torch.tensor([0, 0, 1, 2, 2, 1, 0, 3])
    j = _random_negatives(y)
    assert torch.all(y[j] != y)


@pytest.mark.parametrize("method,attack,steps", [
    ("pgd-at", "pgd", 2), ("pgd-at", "fgsm-rs", 1), ("trades", "pgd", 1), ("ancra", "pgd", 1)])
def test_a_few_training_steps_reduce_the_training_loss(tiny_batch, method, attack, steps):
    x, y = tiny_batch
    cfg = TrainConfig(method=method, attack=attack, steps=steps, width=4, activation="gelu").resolved()
    torch.manual_seed(0)
    model = resnet18("gelu", 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(10):
        model.train()
        loss, log = training_loss(model, x, y, cfg)
        assert loss.item() == pytest.approx(log["loss"], rel=1e-4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    if method == "ancra":
        assert "loss_anc" in log
    if method in ("trades", "ancra"):
        anc = 3.0 * log["loss_anc"] if method == "ancra" else 0.0
        assert log["loss"] == pytest.approx(log["loss_nat"] + 6.0 * log["loss_rob"] + anc, rel=1e-4)


def test_pssilu_penalty_is_added(tiny_batch):
    x, y = tiny_batch
    cfg = TrainConfig(method="pgd-at", attack="fgsm-rs", width=4, activation="pssilu").resolved()
    model = resnet18("pssilu", 4)
    with torch.no_grad():
        model.paf.b.fill_(0.05)
    torch.manual_seed(0)
    loss, log = training_loss(model, x, y, cfg)
    assert loss.item() == pytest.approx(log["loss"] + 10 * 0.05, rel=1e-4)


def test_lr_schedules():
    cfg = TrainConfig(epochs=4, schedule="step").resolved()
    f = _lr_lambda(cfg, 10)
    assert [f(s) for s in (0, 19, 20, 29, 30, 39)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    f = _lr_lambda(TrainConfig(epochs=10, schedule="onecycle").resolved(), 10)
    assert f(0) == 0 and f(40) == pytest.approx(1) and f(100) == 0 and f(70) == pytest.approx(0.5)


def test_bad_configurations():
    with pytest.raises(ValueError, match="unknown method 'mart'"):
        TrainConfig(method="mart").resolved()
    with pytest.raises(ValueError, match="fgsm-rs is for pgd-at"):
        TrainConfig(method="trades", attack="fgsm-rs").resolved()
    with pytest.raises(ValueError, match="unknown schedule"):
        TrainConfig(schedule="linear").resolved()
    assert TrainConfig(attack="fgsm-rs").resolved().step_size == pytest.approx(1.25 * EPS)
    assert TrainConfig().resolved().step_size == 0.0078


def _tiny_cfg(out, **kw):
    base = dict(method="pgd-at", attack="pgd", steps=1, activation="gelu", width=4, epochs=2, batch_size=32,
                lr=0.05, schedule="onecycle", data_source="offline", n_train=128, val_n=32, val_steps=2,
                eval_n=0, out_dir=str(out), progress=False, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_after_interruption_gives_the_same_model_as_an_uninterrupted_run(tmp_path):
    full = train(_tiny_cfg(tmp_path / "full"), log=lambda s: None)
    part = train(_tiny_cfg(tmp_path / "part"), stop_after_epoch=1, log=lambda s: None)
    assert part["finished"] is False and (tmp_path / "part" / "last.pt").exists()
    assert not (tmp_path / "part" / "model.pt").exists()
    resumed = train(_tiny_cfg(tmp_path / "part"), resume=True, log=lambda s: None)
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["val_pgd"] for h in full["history"]] == [h["val_pgd"] for h in resumed["history"]]
    # a different seed gives a different model (the comparison above can fail)
    other = train(_tiny_cfg(tmp_path / "other", seed=2), log=lambda s: None)
    c = torch.load(tmp_path / "other" / "model.pt", weights_only=True)
    assert not all(torch.equal(a[k], c[k]) for k in a) and other["finished"]


def test_resume_guards(tmp_path):
    train(_tiny_cfg(tmp_path / "r", epochs=1), log=lambda s: None)
    with pytest.raises(FileExistsError, match="--resume"):
        train(_tiny_cfg(tmp_path / "r", epochs=1), log=lambda s: None)
    with pytest.raises(ValueError, match="recipe differs"):
        train(_tiny_cfg(tmp_path / "r", epochs=1, lr=0.2), resume=True, log=lambda s: None)


def test_model_card_and_loading_the_result(tmp_path):
    out = tmp_path / "card"
    card = train(_tiny_cfg(out, epochs=1, eval_n=40, half_weights=True), log=lambda s: None)
    on_disk = json.loads((out / "model.json").read_text())
    assert on_disk["weights"]["sha256"] == io_.sha256_file(out / "model.pt")
    assert on_disk["weights"]["dtype"] == "float16"
    assert on_disk["recipe"]["method"] == "pgd-at" and on_disk["epochs"] == 1 and on_disk["wall_time_s"] > 0
    assert on_disk["device"].startswith(("cpu", "cuda"))
    assert on_disk["data"]["train"]["kind"] == "offline" and on_disk["data"]["train_rows_used"] == "0..95"
    ev = on_disk["evaluation"]
    assert ev["n"] == 40 and ev["data"]["indices"] == "0..39"
    assert 0 <= ev["apgd_ce_accuracy"] <= ev["clean_accuracy"] <= 1
    assert card["best_epoch"] == 1
    model = load_model(checkpoint=out / "model.pt")
    assert model.msparse_card["verified"] and model.width == 4
    sd = torch.load(out / "model.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())


def test_atomic_torch_save_never_leaves_a_half_written_file(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    io_.atomic_torch_save({"a": torch.ones(3)}, path)

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(io_.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        io_.atomic_torch_save({"a": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]
    io_.atomic_torch_save({"a": torch.ones(3)}, tmp_path / "again.pt")   # same object, same bytes
    assert io_.sha256_file(tmp_path / "again.pt") == io_.sha256_file(path)


def test_cli_functions_and_module_entry(tmp_path):
    parser = train_cli.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--method", "trades", "--steps", "1", "--width", "4", "--epochs", "1",
                              "--batch-size", "32", "--data-source", "offline", "--n-train", "96",
                              "--val-n", "32", "--val-steps", "1", "--eval-n", "0", "--no-progress",
                              "--out", str(tmp_path / "cli")])
    assert args.beta == 6.0 and args.schedule == "step" and args.lr == 0.1 and args.eps == EPS
    assert train_cli.main(args) == 0 and (tmp_path / "cli" / "model.json").exists()
    env = dict(os.environ, PYTHONPATH=str(Path(io_.__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, "-m", "msparse", "train", "--help"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "--method" in r.stdout and "--resume" in r.stdout
