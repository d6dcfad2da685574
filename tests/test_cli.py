"""The command line: help, one-line errors with exit code 2, calibrate -> evaluate -> sweep -> results, the
listing of attacks, and the package's layout (one module per command group, :mod:`msparse.cli`)."""
import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import msparse.cli
from msparse.cli import main
from msparse.cli.options import parse_list, parse_number
from msparse.evaluation.store import Store

from test_attacks import make_arch, make_data, tiny_model  # noqa: F401  (make_arch: --model factory)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    torch.save(tiny_model().state_dict(), d / "w.pt")
    x, y = make_data(32, 2)
    torch.save({"x": x, "y": y}, d / "test.pt")
    xc, yc = make_data(64, 5)
    torch.save({"x": xc, "y": yc}, d / "train.pt")
    return d


def _model_args(files):
    return ["--model", "test_cli:make_arch", "--weights", str(files / "w.pt"), "--device", "cpu"]


def _fast(files, store):
    return ["--data", str(files / "test.pt"), "--n-iter", "5", "--batch-size", "16",
            "--store", str(store), "--quiet"]


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "python -m msparse evaluate" in out and "bpda" in out
    for cmd in ("evaluate", "sweep", "calibrate", "results", "train"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
    assert "--alphas" in capsys.readouterr().out
    for cmd, words in (("list-models", "model names"), ("results", "one line per record"),   # each has a description,
                       ("train", "Adversarially train"), ("attacks", "attack methods, one per line")):   # not just usage
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert words in capsys.readouterr().out, cmd


def test_module_entry_point_runs():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "msparse", "evaluate", "--model", "x", "--eps", "-"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "--eps" in p.stderr and "Traceback" not in p.stderr


def test_number_and_list_parsing():
    assert parse_number("8/255") == pytest.approx(8 / 255)
    assert parse_number("0.5") == 0.5
    assert parse_list("0,0.1,0.2") == [0.0, 0.1, 0.2]
    assert parse_list("0:0.4:0.1") == [0.0, 0.1, 0.2, 0.3, 0.4]


@pytest.mark.parametrize("argv, msg", [
    (["evaluate", "--n", "x"], "not an integer: 'x'"),
    (["evaluate", "--model", "m", "--eps", "abc"], "not a number: 'abc'"),
    (["evaluate", "--model", "m", "--n", "0"], "must be >= 1"),
    (["evaluate", "--model", "m", "--alpha", "-1"], "alpha must be"),
    (["sweep", "--model", "m", "--alphas", "0.4:0:0.1"], "bad range"),
    (["bogus"], "invalid choice"),
])
def test_argument_errors_are_one_line_exit_2(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("extra, msg", [
    (["--attack", "no-such-attack"], "unknown attack 'no-such-attack'"),
    (["--eps", "-0.1"], "eps must be a finite number > 0"),
    (["--eps", "8"], "did you mean 8/255"),
    (["--alpha", "0.2"], "needs statistics"),
    (["--stats", "nope.pt", "--alpha", "0.2"], "no such file"),
    (["--data", "nope.pt"], "no such file"),
    (["--data", "cifar11"], "DATASET:SPLIT"),
    (["--placement", "Nope/cifar10"], "unknown placement"),
])
def test_bad_input_is_one_line_exit_2(files, tmp_path, extra, msg, capsys):
    argv = ["evaluate", *_model_args(files), *_fast(files, tmp_path), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_weights_and_model(files, tmp_path, capsys):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    assert main(["evaluate", "--model", "test_cli:make_arch", "--weights", str(tmp_path / "bad.pt"),
                 *_fast(files, tmp_path)]) == 2
    assert "does not fit the model" in capsys.readouterr().err
    assert main(["evaluate", "--model", "test_cli:nothing", *_fast(files, tmp_path)]) == 2
    assert "no callable 'nothing'" in capsys.readouterr().err


def test_calibrate_evaluate_sweep_results(files, tmp_path, capsys):
    store = tmp_path / "store"
    stats = tmp_path / "stats.pt"
    assert main(["calibrate", *_model_args(files), "--data", str(files / "train.pt"),
                 "--batch-size", "32", "--out", str(stats)]) == 0
    assert stats.exists() and "statistics of 2 sites" in capsys.readouterr().out

    argv = ["evaluate", *_model_args(files), *_fast(files, store), "--stats", str(stats),
            "--alpha", "0.2", "--base"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "robust" in out and "p_robust" in out and out.count("apgd-ce") == 2
    assert len(Store(store).keys()) == 2
    assert main(argv) == 0                       # second run: served from the store
    assert out.count(" no ") == 2 and capsys.readouterr().out.count(" yes ") == 2

    assert main(["sweep", *_model_args(files), *_fast(files, store), "--stats", str(stats),
                 "--alphas", "0,0.2,0.4"]) == 0
    out = capsys.readouterr().out
    assert "McNemar" in out and out.count("apgd") >= 1 and len(Store(store).keys()) == 3

    assert main(["results", "--store", str(store), "--where", "attack=apgd-ce"]) == 0
    out = capsys.readouterr().out
    assert "3 records" in out and "test_cli:make_arch" in out
    head = out.splitlines()[0].split()     # the columns that tell records of one model and attack apart
    assert {"iters", "centre", "backward", "split", "alpha", "eps"} <= set(head)
    assert main(["results", "--store", str(store), "--where", "attack"]) == 2


def test_registry_model_with_auto_placement(capsys, tmp_path):
    """A real registry model (the standard-trained ResNet-18 that pyautoattack ships) on the
    shipped CIFAR-10 test images: placement 'auto' picks the paper's ResNet-18 preset."""
    assert main(["evaluate", "--model", "pyautoattack/resnet18-standard", "--attack", "none",
                 "--n", "8", "--store", str(tmp_path), "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "none" in out and " 8 " in out
    rec = Store(tmp_path).get(Store(tmp_path).keys()[0])
    assert rec["meta"]["model"] == "pyautoattack/resnet18-standard"
    assert rec["meta"]["data"].startswith("cifar10/test")


def test_results_listing_never_changes_the_store_and_repair_is_explicit(tmp_path, capsys):
    (tmp_path / "records").mkdir()
    bad = tmp_path / "records" / ("a" * 32 + ".json")
    bad.write_text("{truncated")
    with pytest.warns(RuntimeWarning, match="corrupted"):
        assert main(["results", "--store", str(tmp_path)]) == 0
    assert bad.exists()
    with pytest.warns(RuntimeWarning, match="corrupted"):
        assert main(["results", "repair", "--store", str(tmp_path)]) == 0
    assert not bad.exists() and "1 corrupted record file(s) moved aside" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["read-only", "a file"])
def test_an_unwritable_store_fails_before_any_work_in_one_line(tmp_path, capsys, monkeypatch, kind):
    import sys
    store = tmp_path / "store"
    if kind == "read-only":   # root may write into a chmod 0500 folder, so the refusal is simulated
        store.mkdir()

        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(sys.modules["msparse.evaluation.store"], "atomic_write_text", refuse)
    else:
        store.write_text("not a folder")

    def no_batches(*a, **k):
        raise AssertionError("work started before the store was checked")

    monkeypatch.setattr(sys.modules["msparse.evaluation.evaluate"], "_eval_batch", no_batches)
    code = main(["evaluate", "--model", "msparse/default", "--data", "cifar10:test", "--n", "4",
                 "--attack", "none", "--store", str(store)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"the results store {store} cannot be written" in err


def test_attacks_lists_every_registered_attack_once_with_its_library_gradient_and_params(capsys):
    from msparse.attacks.registry import get_attack, list_attacks

    assert main(["attacks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = list_attacks()
    assert names and [line.split()[0] for line in lines] == names
    for name, line in zip(names, lines):
        cls = get_attack(name)
        assert f"  {cls.library}  " in line, line
        assert ("gradient-free" in line) == (not cls.needs_grad), line
        assert all(f"{k}=" in line for k in cls.params), line
        assert ("params: -" in line) == (not cls.params), line


def test_attack_lines_show_declared_parameters_aligned(monkeypatch):
    """The listing reads name, library, needs_grad, params and summary off each registered class."""
    from msparse.cli import listing

    class Fast:
        name, library, needs_grad, params, summary = "fast", "adv-lib", True, {"steps": 10, "loss": "dlr"}, "quick"

    class Blind:
        name, library, needs_grad, params, summary = "blind-search", "msparse", False, {}, ""

    monkeypatch.setattr(listing, "list_attacks", lambda: ["fast", "blind-search"])
    monkeypatch.setattr(listing, "get_attack", {"fast": Fast, "blind-search": Blind}.__getitem__)
    assert listing.attack_lines() == [
        "fast          adv-lib  needs gradients  params: steps=10, loss=dlr  quick",
        "blind-search  msparse  gradient-free    params: -",
    ]


def test_the_cli_is_one_module_per_concern_behind_main():
    """``msparse.cli`` exports only ``main`` and ``build_parser``; every module says what it owns; the console
    script and ``python -m msparse`` run :func:`msparse.cli.main`; every command is registered by one module."""
    import msparse.__main__ as entry

    assert msparse.cli.__all__ == ["main", "build_parser"] and entry.main is msparse.cli.main
    modules = [importlib.import_module(f"msparse.cli.{m.name}") for m in pkgutil.iter_modules(msparse.cli.__path__)]
    assert len(modules) >= 8
    for mod in [msparse.cli, *modules]:
        assert mod.__doc__ and len(mod.__doc__.split()) >= 8, mod.__name__
    sub = next(a for a in msparse.cli.build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == ["list-models", "attacks", "calibrate", "evaluate", "sweep", "plan", "results",
                                 "demo", "book", "train"]
