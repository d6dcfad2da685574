"""The one place that papers over third-party packaging problems.

* robustbench 1.1.1 imports the module ``autoattack``, but its declared dependency ``pyautoattack``
  installs the module ``pyautoattack`` (RobustBench issue #211). :func:`alias_autoattack` (called when
  ``msparse`` is imported) registers ``pyautoattack`` and its loaded submodules under the name
  ``autoattack``, so ``import msparse; from robustbench.utils import load_model`` works; a genuine
  ``autoattack`` installation is left alone.
* robustbench imports ``pkg_resources`` (needs ``setuptools<81``, pinned in pyproject.toml), which warns
  on import; silence that one warning.
* torchvision (imported by robustbench, timm and the CIFAR-100 / image-folder loaders) fails on import with
  ``RuntimeError: operator torchvision::nms does not exist`` when it was built for another torch build, e.g. a
  CPU-only torch (``2.13.0+cpu``) beside torchvision from PyPI (built against the CUDA torch of the same version),
  which pip accepts as a match. :func:`import_torchvision` turns that into an :class:`~msparse.errors.InstallError`
  that names the pair to install.
"""

from __future__ import annotations

import importlib
import sys
import warnings

from .errors import InstallError, UnknownNameError

_DATASETS = {"cifar10": "cifar_10", "cifar100": "cifar_100", "imagenet": "imagenet"}
_THREATS = {"Linf": "Linf", "L2": "L2", "corruptions": "corruptions"}


def alias_autoattack() -> bool:
    """Make ``import autoattack`` (and ``autoattack.state`` etc.) resolve to ``pyautoattack``'s modules.

    Does nothing when a module ``autoattack`` is already imported or installed (the git version of
    AutoAttack) or when ``pyautoattack`` is missing. Returns True when the alias is in place.
    """
    if "autoattack" in sys.modules:
        return sys.modules["autoattack"].__name__ == "pyautoattack"
    import importlib.util
    if importlib.util.find_spec("autoattack") is not None or importlib.util.find_spec("pyautoattack") is None:
        return False
    importlib.import_module("pyautoattack")   # its __init__ loads AutoAttack and the attack modules
    for name, mod in list(sys.modules.items()):
        if name == "pyautoattack" or name.startswith("pyautoattack."):
            sys.modules.setdefault("autoattack" + name[len("pyautoattack"):], mod)
    return True


def import_torchvision():
    """Import and return ``torchvision``; :class:`~msparse.errors.InstallError` (with the versions and the pair to
    install) when it was built for another torch build than the installed one."""
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        from importlib.metadata import PackageNotFoundError, version

        import torch

        try:
            tv = version("torchvision")
        except PackageNotFoundError:
            tv = "?"
        plain = torch.__version__.split("+")[0]
        raise InstallError(
            f"torchvision {tv} does not work with torch {torch.__version__} ({e}): it was built for another torch "
            f"build. Install a matching pair from one source, e.g. both from PyPI: pip install --force-reinstall "
            f"'torch=={plain}' 'torchvision=={tv.split('+')[0]}' (a CPU-only torch needs torchvision from the same "
            "PyTorch index)") from None


def import_robustbench():
    """Import and return the ``robustbench`` package with the ``autoattack`` alias in place (torchvision checked
    first: :func:`import_torchvision`)."""
    import_torchvision()
    alias_autoattack()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        rb = importlib.import_module("robustbench")
        importlib.import_module("robustbench.model_zoo.models")
    return rb


def robustbench_enums(dataset: str, threat_model: str):
    """``(BenchmarkDataset, ThreatModel)`` for our names (``cifar10``/``cifar100``/``imagenet``, ``Linf``/``L2``)."""
    import_robustbench()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    if dataset not in _DATASETS:
        raise UnknownNameError(f"unknown dataset {dataset!r}; choose one of {', '.join(_DATASETS)}")
    if threat_model not in _THREATS:
        raise UnknownNameError(f"unknown threat model {threat_model!r}; choose one of {', '.join(_THREATS)}")
    return getattr(BenchmarkDataset, _DATASETS[dataset]), getattr(ThreatModel, _THREATS[threat_model])


def _zoo(dataset: str, threat_model: str) -> dict:
    import_robustbench()
    from robustbench.model_zoo.models import model_dicts

    ds, tm = robustbench_enums(dataset, threat_model)
    return model_dicts[ds].get(tm, {})


def robustbench_names(dataset: str = "cifar10", threat_model: str = "Linf") -> list[str]:
    """The names in RobustBench's model zoo for ``dataset``/``threat_model``, sorted."""
    return sorted(_zoo(dataset, threat_model))


def robustbench_entry(name: str, dataset: str = "cifar10", threat_model: str = "Linf") -> dict:
    """RobustBench's model-zoo entry (``{"model": constructor, "gdrive_id": ...}``) for ``name``."""
    zoo = _zoo(dataset, threat_model)
    if name not in zoo:
        import difflib
        close = difflib.get_close_matches(name, list(zoo), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownNameError(f"{name!r} is not a RobustBench model for {dataset}/{threat_model}.{hint}")
    return zoo[name]


def robustbench_architecture(name: str, dataset: str = "cifar10", threat_model: str = "Linf"):
    """Build RobustBench's architecture for ``name`` with random weights (no download)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        return robustbench_entry(name, dataset, threat_model)["model"]()
