"""The architecture fingerprint: what a model computes besides its weights, as one hash in the record key.

A record's key named the model by its weights alone (:func:`~msparse.evaluation.evaluate.host_checksum`), so two
models with the same state dict and another forward — ``random:resnet18-gelu-w16`` and ``random:resnet18-relu-w16``
(activations hold no weights), a normalisation constant kept as a plain attribute — shared records, and the second
was served the first one's numbers. :func:`fingerprint` hashes the rest of the model, and the key holds it
(``spec["arch"]``, and ``spec["source"]["arch"]`` for a transfer source).

What it covers, per module of ``model.named_modules()`` (sorted by path):

* the path and the class, by its qualified name (``torch.nn.modules.activation.GELU``);
* the module's configuration: every public attribute in its ``__dict__`` whose value is a bool, int, float, str
  or None, or a tuple/list of those (nested): ``Conv2d``'s ``stride``/``padding``/``groups``, ``BatchNorm2d``'s
  ``eps``, ``GELU``'s ``approximate``, ``ResNet18``'s ``activation``/``width``, a scale constant of one's own;
  floats are encoded exactly (``float.hex``), never through a decimal repr;
* the values of tensors held outside the state dict: non-persistent buffers and plain tensor attributes
  (dtype, shape and bytes);
* which parameter and buffer slots are ``None`` (a ``Conv2d`` without bias);
* for a model built by :func:`msparse.models.registry.load_model`: the registry entry that built it and the
  ``version`` of the entry's code (``model.msparse_card["registry"]``).

What it does not cover: weights and persistent buffers (the weight checksum, ``spec["model"]``, covers them);
the code of ``forward`` itself (a class is named, not read: editing a class's forward without renaming it, or
bumping its registry entry's ``version``, keeps the fingerprint); hooks and methods set on an instance; attributes
of other types (dicts, callables, modules kept outside ``_modules``); and bookkeeping that does not change the
output — private attributes (``_…``), ``training``, and ``msparse_…`` attributes such as the model card. The
MeanSparse operators and everything :func:`msparse.sparsify` hangs on a host (its hooks, a Swin block's replaced
forward) are left out too, so a sparsified model names the same host as the plain model: at α = 0 it computes the
same function (its sites enter the key on their own, ``spec["sites"]``).

The hash is deterministic across processes, machines and torch versions as long as the modules' classes and
configuration attributes are the same: no ``id()``, no memory address, no ``repr`` of a float or a tensor. A torch
release that renames a module class or adds a configuration attribute changes the fingerprint of models using
it (their records are then recomputed, not silently shared).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.operator import MeanSparse
from ..errors import InputTypeError
from .hashing import content_hash, tensor_hash

__all__ = ["FINGERPRINT_VERSION", "architecture", "fingerprint"]

#: bump when what :func:`architecture` describes changes (every record key changes with it)
FINGERPRINT_VERSION = 1


def _encode(v: Any) -> Any:
    """A plain value as unambiguous JSON (``[type, payload]``); ``None`` when it is not plain."""
    if isinstance(v, bool):
        return ["bool", v]
    if isinstance(v, int):
        return ["int", int(v)]
    if isinstance(v, float):
        return ["float", float(v).hex()]
    if isinstance(v, str):
        return ["str", v]
    if v is None:
        return ["none", None]
    if isinstance(v, (tuple, list)):
        items = [_encode(x) for x in v]
        if any(x is None for x in items):
            return None
        return [type(v).__name__ if type(v) in (tuple, list) else "tuple", items]
    return None


def _bookkeeping(name: str) -> bool:
    return name.startswith("_") or name == "training" or name.startswith("msparse_")


def _module_entry(name: str, module: nn.Module) -> dict:
    cls = type(module)
    out: dict[str, Any] = {"name": name, "type": f"{cls.__module__}.{cls.__qualname__}"}
    config, tensors = {}, {}
    for attr, value in vars(module).items():
        if _bookkeeping(attr):
            continue
        if isinstance(value, torch.Tensor):
            tensors[attr] = tensor_hash(value)
            continue
        enc = _encode(value)
        if enc is not None:
            config[attr] = enc
    for attr in sorted(getattr(module, "_non_persistent_buffers_set", ())):
        buf = module._buffers.get(attr)
        if buf is not None:
            tensors[f"buffer:{attr}"] = tensor_hash(buf)
    none = sorted(k for d in (module._parameters, module._buffers) for k, v in d.items() if v is None)
    if config:
        out["config"] = dict(sorted(config.items()))
    if tensors:
        out["tensors"] = dict(sorted(tensors.items()))
    if none:
        out["none"] = none
    card = vars(module).get("msparse_card")
    reg = card.get("registry") if isinstance(card, dict) else None
    if isinstance(reg, dict):
        out["registry"] = {"entry": str(reg.get("entry")), "version": _encode(reg.get("version"))}
    return out


def _meansparse_paths(model: nn.Module) -> tuple[str, ...]:
    return tuple(n for n, m in model.named_modules() if isinstance(m, MeanSparse))


def architecture(model: nn.Module) -> dict:
    """The description :func:`fingerprint` hashes: ``{"fingerprint": version, "modules": [...]}``, one entry per
    module (MeanSparse operators left out), JSON-able. See the module docstring for what it covers."""
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"an architecture fingerprint needs a torch.nn.Module, got {type(model).__name__}")
    ops = _meansparse_paths(model)
    skip = tuple(f"{p}." for p in ops)
    mods = [(n, m) for n, m in model.named_modules() if n not in ops and not (skip and n.startswith(skip))]
    return {"fingerprint": FINGERPRINT_VERSION,
            "modules": [_module_entry(n, m) for n, m in sorted(mods, key=lambda nm: nm[0])]}


def fingerprint(model: nn.Module) -> str:
    """32 hex characters naming ``model``'s architecture (module tree, classes, configuration, tensors kept outside
    the state dict, registry entry and version); equal for the same model built twice, in any process."""
    return content_hash(architecture(model))
