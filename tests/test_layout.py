"""The package layout: every module imports, no package attribute shadows a submodule, the public API is small
and ``__all__`` is accurate, one error hierarchy, and the CLI reports only MsparseError as bad input."""
import importlib
import inspect
import pkgutil

import pytest

import msparse
import msparse.cli as cli
from msparse import errors

PUBLIC = {"MeanSparse", "sparsify", "calibrate", "set_alpha", "set_backward", "PRESETS", "load_data", "load_model",
          "list_models", "evaluate", "sweep", "Result", "Sweep", "Store", "load_records", "to_table", "wilson",
          "mcnemar", "TrainConfig"}


def _module_names() -> list[str]:
    return ["msparse"] + [m.name for m in pkgutil.walk_packages(msparse.__path__, "msparse.")]


@pytest.mark.parametrize("name", _module_names())
def test_every_module_imports_and_its_all_is_accurate(name):
    mod = importlib.import_module(name)
    for public in getattr(mod, "__all__", ()):
        assert hasattr(mod, public), f"{name}.__all__ names {public!r}, which {name} does not define"


@pytest.mark.parametrize("name", [n for n in _module_names() if hasattr(importlib.import_module(n), "__path__")])
def test_no_package_attribute_shadows_a_submodule(name):
    """``import msparse.x.y`` and ``msparse.x.y`` must be the same object (``msparse.evaluate`` once was a function
    while ``import msparse.evaluate`` gave a module)."""
    pkg = importlib.import_module(name)
    for info in pkgutil.iter_modules(pkg.__path__):
        sub = importlib.import_module(f"{name}.{info.name}")
        assert getattr(pkg, info.name) is sub, f"{name}.{info.name} is {getattr(pkg, info.name)!r}, not the module"


def test_the_public_api_is_small():
    assert set(msparse.__all__) == PUBLIC and len(msparse.__all__) == len(PUBLIC)
    exported = {n for n, v in vars(msparse).items() if not n.startswith("_") and not inspect.ismodule(v)}
    assert exported == PUBLIC, f"public names outside __all__: {sorted(exported - PUBLIC)}"


def test_one_error_hierarchy_that_keeps_the_builtin_bases():
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.MsparseError), name
    for cls, base in [(errors.InputError, ValueError), (errors.InputTypeError, TypeError),
                      (errors.UnknownNameError, KeyError), (errors.UnknownNameError, ValueError),
                      (errors.UsageError, ValueError), (errors.StateError, RuntimeError),
                      (errors.MissingFileError, FileNotFoundError), (errors.DataError, FileNotFoundError),
                      (errors.RunExistsError, FileExistsError), (errors.ChecksumError, RuntimeError),
                      (errors.ModelLoadError, RuntimeError), (errors.WeightsChecksumError, errors.ChecksumError),
                      (errors.WeightsChecksumError, errors.ModelLoadError), (errors.CorruptRecord, ValueError)]:
        assert issubclass(cls, base), (cls, base)
    assert str(errors.UnknownNameError("no site 'x'")) == "no site 'x'"   # not KeyError's quoted repr


# bad input raising the right MsparseError, naming the value: the table in tests/test_faults.py


def test_cli_bad_input_is_one_line_and_exit_2(capsys):
    assert cli.main(["evaluate", "--model", "no-such-model", "--device", "cpu", "--no-store"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model 'no-such-model'" in err and "Traceback" not in err


@pytest.mark.parametrize("bug", [ZeroDivisionError, ValueError, KeyError, RuntimeError])
def test_cli_lets_a_bug_through_as_a_traceback(monkeypatch, bug):
    """Only MsparseError is bad input: an internal error -- even a plain ValueError -- is a bug, not 'bad input'."""
    def broken(*args, **kwargs):
        raise bug("deliberate internal bug")
    monkeypatch.setattr(cli.listing, "list_models", broken)
    with pytest.raises(bug, match="deliberate internal bug"):
        cli.main(["list-models"])
