"""The model registry: one table decides what a model name means (in the style of timm's ``_registry``).

Each entry is registered with the :func:`register_model` decorator (the entries themselves live in
:mod:`msparse.models.zoo`, imported with the package) and owns a set of names: one exact name (the shipped
default, the standard-trained control), a list found at run time (the shipped family members, RobustBench's
zoo) or a name pattern (the ResNet-18 family). Entries are tried in registration order; the first that
accepts a name decides what it means. :func:`load_model` and :func:`list_models` go through this table and
nothing else, so does every caller that needs to know whether a name exists (:func:`model_entry`,
:func:`is_model`).

    >>> from msparse.models.registry import list_models, load_model, model_entries
    >>> [e.key for e in model_entries()]                      # doctest: +SKIP
    ['msparse/default', 'pyautoattack/resnet18-standard', 'msparse/<family member>',
     'resnet18-<activation>[-w<width>][-ra]', '<RobustBench model>']
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch.nn as nn

from ..errors import InputError, ModelLoadError, UnknownNameError

__all__ = ["ModelEntry", "LoadRequest", "register_model", "model_entries", "model_entry", "is_model",
           "load_model", "list_models", "DATASETS", "THREAT_MODELS"]

DATASETS = ("cifar10", "cifar100", "imagenet")
THREAT_MODELS = ("Linf", "L2", "corruptions")
CIFAR10_LINF = (("cifar10", "Linf"),)
_SHOWN = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet", "Linf": "L-inf", "L2": "L2",
          "corruptions": "corruptions"}


@dataclass(frozen=True)
class LoadRequest:
    """What :func:`load_model` was asked for, as an entry's ``build`` receives it."""

    dataset: str = "cifar10"
    threat_model: str = "Linf"
    model_dir: Path = Path("models")
    checkpoint: Optional[Path] = None
    device: object = "cpu"
    download: bool = False
    verify: bool = True


@dataclass(frozen=True)
class ModelEntry:
    """One row of the registry.

    ``key``: the entry's name, or a description of the names it owns (``"resnet18-<activation>..."``).
    ``kind``: ``"shipped"`` (weights inside the package), ``"control"``, ``"family"`` (a name pattern) or
    ``"robustbench"``. ``build(name, request, pretrained)`` returns the model (eval mode, on the device,
    ``model.msparse_card`` set); ``pretrained=False`` builds the architecture with random weights.
    ``names(dataset, threat_model)``: the names :func:`list_models` lists for it. ``accepts(name, dataset,
    threat_model)``: does the entry own ``name``? ``datasets``: the (dataset, threat model) pairs its models
    are for (``None``: any). ``from_checkpoint``: it loads ``load_model(checkpoint=...)`` files.
    ``example``: one name it owns (documentation, and the registry's own test). ``version``: the version of the
    entry's build code; bump it when a change of ``build`` changes what its models compute with the same weights
    (another preprocessing, another module). It enters the architecture fingerprint of every model the entry
    builds (:mod:`msparse.evaluation.fingerprint`), hence the key of every record made with one.
    """

    key: str
    kind: str
    summary: str
    example: str
    build: Callable[[Optional[str], LoadRequest, bool], nn.Module]
    names: Callable[[str, str], list]
    accepts: Callable[[str, str, str], bool]
    datasets: Optional[tuple] = CIFAR10_LINF
    from_checkpoint: bool = False
    default: bool = False
    version: int = 1

    def serves(self, dataset: str, threat_model: str) -> bool:
        return self.datasets is None or (dataset, threat_model) in self.datasets


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(key: str, *, kind: str, summary: str, example: Optional[str] = None,
                   names: Optional[Callable[[str, str], list]] = None,
                   accepts: Optional[Callable[[str, str, str], bool]] = None, datasets=CIFAR10_LINF,
                   from_checkpoint: bool = False, default: bool = False, version: int = 1):
    """Decorator: register ``build(name, request, pretrained) -> nn.Module`` as the entry ``key``.

    Without ``names``/``accepts`` the entry owns exactly the name ``key``. ``default=True`` makes it the model
    of ``load_model()`` (one entry only). ``version``: see :class:`ModelEntry` (a whole number >= 1).
    """
    def deco(build):
        if key in _REGISTRY:
            raise ValueError(f"model registry: {key!r} is registered twice")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"model registry: {key!r} has version {version!r}; give a whole number >= 1")
        if default and any(e.default for e in _REGISTRY.values()):
            raise ValueError(f"model registry: {key!r} and another entry both claim to be the default")
        _REGISTRY[key] = ModelEntry(
            key=key, kind=kind, summary=summary, example=example or key, build=build,
            names=names or (lambda dataset, threat_model: [key]),
            accepts=accepts or (lambda name, dataset, threat_model: name == key),
            datasets=datasets, from_checkpoint=from_checkpoint, default=default, version=version)
        return build
    return deco


def model_entries() -> list[ModelEntry]:
    """Every registered entry, in the order names are resolved."""
    return list(_REGISTRY.values())


def _check_dataset_threat(dataset: str, threat_model: str) -> None:
    if dataset not in DATASETS:
        raise UnknownNameError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if threat_model not in THREAT_MODELS:
        raise UnknownNameError(f"unknown threat model {threat_model!r}; choose one of {', '.join(THREAT_MODELS)}")


def _default_entry() -> ModelEntry:
    return next(e for e in _REGISTRY.values() if e.default)


def _unknown(name: str, dataset: str, threat_model: str) -> ModelLoadError:
    own = [n for e in _REGISTRY.values() if e.kind != "robustbench" for n in e.names("cifar10", "Linf")]
    pool = own + [n for n in list_models(dataset, threat_model) if n not in own]
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ModelLoadError(
        f"unknown model {name!r} for {dataset}/{threat_model}: not an msparse model, not a family name like "
        f"'resnet18-gelu-w16', and not in RobustBench's {dataset}/{threat_model} zoo.{hint} "
        f"See msparse.list_models({dataset!r}, {threat_model!r}).")


def model_entry(name: Optional[str] = None, dataset: str = "cifar10", threat_model: str = "Linf") -> ModelEntry:
    """The entry that owns ``name`` (``None``: the default model).

    Raises :class:`~msparse.errors.ModelLoadError` for a name no entry owns (with close matches), and
    :class:`~msparse.errors.InputError` for a malformed family name (e.g. an unknown activation).
    """
    _check_dataset_threat(dataset, threat_model)
    if name is None:
        return _default_entry()
    if not isinstance(name, str) or not name:
        raise InputError(f"a model name must be a non-empty string, got {name!r}")
    for entry in _REGISTRY.values():
        if entry.accepts(name, dataset, threat_model):
            return entry
    raise _unknown(name, dataset, threat_model)


def is_model(name: Optional[str], dataset: str = "cifar10", threat_model: str = "Linf") -> bool:
    """Does :func:`load_model` know ``name`` for this dataset and threat model (without loading anything)?"""
    try:
        entry = model_entry(name, dataset, threat_model)
    except (ModelLoadError, InputError):
        return False
    return entry.serves(dataset, threat_model)


def load_model(name: Optional[str] = None, dataset: str = "cifar10", threat_model: str = "Linf",
               model_dir="models", *, checkpoint=None, device="cpu", download: bool = False,
               verify: bool = True, pretrained: bool = True) -> nn.Module:
    """Load a model by name; returns it in eval mode on ``device``.

    Names (see :func:`model_entries` and :func:`list_models`): ``None`` or ``"msparse/default"`` (the
    adversarially trained CIFAR ResNet-18 shipped in the package, offline, sha256-verified);
    ``"pyautoattack/resnet18-standard"`` (the standard-trained control); ``"msparse/resnet18-<activation>-w8-
    <method>"`` (the appendix family shipped in the package); ``"resnet18-<activation>[-w<width>][-ra]"`` (the
    project's ResNet-18 family, from ``checkpoint=`` or ``model_dir/cifar10/Linf/<name>.pt``); any RobustBench
    model-zoo name (from ``model_dir/<dataset>/<threat_model>/<name>.pt``).

    The model maps images (N, 3, H, W) in [0, 1] to logits (N, classes) and carries ``model.msparse_card``
    (name, source, path, sha256, verified, the model card when there is one, and ``registry``: the entry that built
    it and its ``version``). ``checkpoint`` loads a family
    model from a file (its card, ``<file>.json`` or ``model.json`` beside it, gives the architecture and
    sha256). ``verify=False`` skips the sha256 check of cards. ``download=True`` lets RobustBench fetch a missing
    checkpoint (internet); otherwise a missing file is an error. ``pretrained=False`` returns the architecture
    with random weights (nothing is read or downloaded).
    """
    _check_dataset_threat(dataset, threat_model)
    if checkpoint is not None:
        if not pretrained:
            raise InputError("pretrained=False builds random weights; do not pass checkpoint=")
        entry = model_entry(name, dataset, threat_model) if name is not None else \
            next(e for e in _REGISTRY.values() if e.from_checkpoint)
        if not entry.from_checkpoint:
            raise InputError(f"checkpoint= loads a ResNet-18 family checkpoint; {name!r} is not a family name "
                             f"(pass a name like 'resnet18-gelu-w16', or no name to read it from the model card)")
    else:
        entry = model_entry(name, dataset, threat_model)
    if not entry.serves(dataset, threat_model):
        where = " or ".join(f"{_SHOWN[d]} {_SHOWN[t]}" for d, t in entry.datasets)
        raise ModelLoadError(f"{name or entry.key!r} is a {where} model; got dataset={dataset!r}, "
                             f"threat_model={threat_model!r}")
    request = LoadRequest(dataset, threat_model, Path(model_dir), None if checkpoint is None else Path(checkpoint),
                          device, download, verify)
    model = entry.build(entry.key if name is None and checkpoint is None else name, request, pretrained)
    card = getattr(model, "msparse_card", None)
    if isinstance(card, dict):   # the entry that built it and its code version (read by the architecture fingerprint)
        card["registry"] = {"entry": entry.key, "version": entry.version}
    return model


def list_models(dataset: str = "cifar10", threat_model: str = "Linf", *, include_robustbench: bool = True) -> list[str]:
    """Names :func:`load_model` accepts for this dataset/threat model, in registry order (msparse's own first,
    then RobustBench's, sorted). Names of a pattern (``"resnet18-<activation>[-w<width>]"``) are accepted too
    but not listed."""
    _check_dataset_threat(dataset, threat_model)
    out: list[str] = []
    for entry in _REGISTRY.values():
        if entry.serves(dataset, threat_model) and (include_robustbench or entry.kind != "robustbench"):
            out += [n for n in entry.names(dataset, threat_model) if n not in out]
    return out
