"""The one front door for model names: what a name loads and where MeanSparse goes on it by default.

Every caller that turns a model name into a model -- the CLI (``--model``), the experiments
(:func:`msparse.experiments.setup.setup`) and the record checker (:mod:`msparse.evaluation.verify`) -- goes
through :func:`resolve` (or its two halves :func:`load` and :func:`default_placement`), so one name means one
model and one placement everywhere.

Names:

* any name of the registry (:func:`msparse.models.registry.load_model`): the shipped models, the ResNet-18
  family pattern, RobustBench's zoo; ``None`` is the registry's default model;
* ``random:<name>`` (:data:`RANDOM_PREFIX`): the architecture of ``<name>`` with random weights, drawn after
  ``torch.manual_seed(0)`` so the same name gives the same weights (infrastructure tests only: its numbers
  mean nothing);
* a path ending in ``.pt``: a ResNet-18 family checkpoint with its model card beside it
  (``load_model(checkpoint=...)``).

Default placement (:func:`default_placement`): the paper's ResNet-18 preset ``ResNet-18/cifar10/Linf/v1`` for
a model of the project's ResNet-18 family on CIFAR-10 L∞; else the first (v1 before v2) preset of
:data:`msparse.core.presets.PRESETS` named after the model (``<name>/<dataset>/<threat model>/v<k>``, the
paper's placement of a RobustBench model); else ``"activations"`` (a site before every activation).
"""
from __future__ import annotations

from typing import Optional

import torch.nn as nn

from ..errors import InputError

__all__ = ["RANDOM_PREFIX", "bare_name", "is_random", "load", "default_placement", "resolve"]

#: ``"random:resnet18-gelu-w16"``: the architecture of the name after the prefix, random weights
RANDOM_PREFIX = "random:"

#: the paper's placement for the project's ResNet-18 family (paper Table 1's ResNet-18 row)
RESNET18_PRESET = "ResNet-18/cifar10/Linf/v1"


def is_random(name: Optional[str]) -> bool:
    """Is ``name`` a ``random:<name>`` name (random weights)?"""
    return isinstance(name, str) and name.startswith(RANDOM_PREFIX)


def bare_name(name: Optional[str]) -> Optional[str]:
    """``name`` without its :data:`RANDOM_PREFIX` (the name of the architecture); other names unchanged."""
    return name[len(RANDOM_PREFIX):] if is_random(name) else name


def load(name: Optional[str] = None, dataset: str = "cifar10", threat_model: str = "Linf", model_dir="models", *,
         checkpoint=None, device="cpu") -> nn.Module:
    """The model ``name`` means (see the module docstring), in eval mode on ``device``.

    Errors are those of :func:`~msparse.models.registry.load_model` (an unknown name, with close matches; a
    missing checkpoint); :class:`~msparse.errors.InputError` for a ``random:`` name with ``checkpoint=`` or with
    nothing after the prefix."""
    from .registry import load_model

    if name is not None and not isinstance(name, str):
        raise InputError(f"a model name must be a string, got {type(name).__name__} {name!r}")
    if is_random(name):
        if checkpoint is not None:
            raise InputError(f"model {name!r} has random weights; do not pass a checkpoint with it "
                             f"(drop {RANDOM_PREFIX!r} to load the checkpoint)")
        if not bare_name(name):
            raise InputError(f"model {name!r}: write {RANDOM_PREFIX}<model name>, e.g. "
                             f"{RANDOM_PREFIX}resnet18-gelu-w16")
        import torch

        torch.manual_seed(0)   # the same random weights for the same name (records of random: models match)
        return load_model(bare_name(name), dataset, threat_model, model_dir, device=device, pretrained=False)
    if name is not None and name.endswith(".pt") and checkpoint is None:
        return load_model(dataset=dataset, threat_model=threat_model, model_dir=model_dir, checkpoint=name,
                          device=device)
    return load_model(name, dataset, threat_model, model_dir, checkpoint=checkpoint, device=device)


def default_placement(model: nn.Module, name: Optional[str] = None, dataset: str = "cifar10",
                      threat_model: str = "Linf") -> str:
    """Where MeanSparse goes on ``model`` (loaded from ``name``) unless told otherwise: see the module docstring.

    ``name`` may be ``None`` (a model built by hand) or a ``random:`` name (its architecture's preset)."""
    from ..core.presets import PRESETS
    from .resnet import ResNet18

    if isinstance(model, ResNet18) and (dataset, threat_model) == ("cifar10", "Linf"):
        return RESNET18_PRESET
    bare = bare_name(name)
    if bare:
        keys = sorted(k for k in PRESETS if k.startswith(f"{bare}/{dataset}/{threat_model}/"))
        if keys:
            return keys[0]
    return "activations"


def resolve(name: Optional[str] = None, dataset: str = "cifar10", threat_model: str = "Linf", model_dir="models",
            *, checkpoint=None, device="cpu") -> tuple[nn.Module, str]:
    """``(model, default placement)`` for ``name``: :func:`load` then :func:`default_placement`."""
    model = load(name, dataset, threat_model, model_dir, checkpoint=checkpoint, device=device)
    return model, default_placement(model, name, dataset, threat_model)
