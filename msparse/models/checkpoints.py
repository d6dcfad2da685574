"""Reading weights: state dicts from checkpoint files, the model card beside a weights file, strict loading.

A *model card* is the JSON file training writes beside its weights (``model.json``, or ``<name>.json`` for a
shipped model): architecture, recipe, data provenance, evaluation, and the weights' sha256.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from .._io import sha256_file
from ..errors import MissingFileError, ModelLoadError, WeightsChecksumError

__all__ = ["load_checkpoint", "load_into", "card_beside", "check_card", "read_card", "finish", "first_sentence"]


def first_sentence(e: BaseException) -> str:
    """``"TypeName: first sentence of the message"`` (for wrapping a third-party error in one line)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text.split('. ')[0].rstrip('.')}" if text else type(e).__name__


def load_checkpoint(path, *, sha256: Optional[str] = None) -> dict:
    """Read a state dict (``torch.load(weights_only=True)``) from ``path``; fp16 tensors become fp32.

    Accepts a bare state dict or a training checkpoint with a ``"model"``/``"state_dict"`` entry, and
    strips a ``module.`` prefix.  Verifies ``sha256`` when given.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise WeightsChecksumError(f"checksum mismatch for {path}: sha256 {got} != {sha256} recorded in its "
                                       f"model card; the file is corrupted or was replaced")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # any unpickling failure means the same thing here
        raise ModelLoadError(f"{path} is corrupted or not a PyTorch checkpoint ({first_sentence(e)})") from e
    if isinstance(obj, dict) and ("model" in obj or "state_dict" in obj) and not any(
            torch.is_tensor(v) for v in obj.values()):
        obj = obj.get("model", obj.get("state_dict"))
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ModelLoadError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    return {(k[7:] if k.startswith("module.") else k): (v.float() if v.is_floating_point() else v)
            for k, v in obj.items()}


def load_into(model: nn.Module, state: dict, what: str, path) -> None:
    """``model.load_state_dict(state, strict=True)``; a mismatch is a :class:`ModelLoadError` naming the first
    missing and unexpected keys (``what`` describes the architecture, ``path`` the file)."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        missing = [k for k in model.state_dict() if k not in state]
        unexpected = [k for k in state if k not in model.state_dict()]
        detail = (f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected keys "
                  f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}") if (missing or unexpected) else \
            str(e).splitlines()[-1].strip()
        raise ModelLoadError(f"the weights in {path} do not fit {what}: {detail}") from e


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_card(card, path) -> dict:
    """Return ``card`` if it is a model card msparse can trust for loading, else raise
    :class:`~msparse.errors.ModelLoadError` naming ``path`` and the faulty field.

    Checked: a JSON object; ``architecture`` (if present) an object whose ``activation`` is one of the family's
    activations, ``width`` and ``num_classes`` positive integers, ``reverse_attention`` a boolean; ``weights``
    (if present) an object whose ``sha256`` is 64 lowercase hex digits and ``file`` a file name.
    """
    from .resnet import ACTIVATIONS

    def bad(what: str):
        return ModelLoadError(f"model card {path} is invalid: {what}; restore the card written by training "
                              f"beside the weights (or reinstall msparse for a shipped model)")

    if not isinstance(card, dict):
        raise bad(f"it holds a JSON {type(card).__name__}, not an object")
    arch = card.get("architecture", {})
    if not isinstance(arch, dict):
        raise bad(f"'architecture' is {arch!r}, not an object")
    if arch:
        act = arch.get("activation")
        if not isinstance(act, str) or act.lower() not in ACTIVATIONS:
            raise bad(f"architecture.activation is {act!r}, not one of {', '.join(ACTIVATIONS)}")
        for key, required in (("width", True), ("num_classes", False)):
            v = arch.get(key)
            if (v is not None or required) and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise bad(f"architecture.{key} is {v!r}, not a positive integer")
        ra = arch.get("reverse_attention", False)
        if not isinstance(ra, bool):
            raise bad(f"architecture.reverse_attention is {ra!r}, not true or false")
    weights = card.get("weights", {})
    if not isinstance(weights, dict):
        raise bad(f"'weights' is {weights!r}, not an object")
    sha = weights.get("sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256.match(sha)):
        raise bad(f"weights.sha256 is {sha!r}, not 64 hex digits")
    name = weights.get("file")
    if name is not None and (not isinstance(name, str) or not name or "/" in name or "\\" in name):
        raise bad(f"weights.file is {name!r}, not a file name")
    return card


def read_card(path) -> dict:
    """The model card at ``path``, checked by :func:`check_card`; a file that is not JSON raises
    :class:`~msparse.errors.ModelLoadError` naming it."""
    path = Path(path)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelLoadError(f"model card {path} is not readable JSON ({first_sentence(e)}); restore the card "
                             "written by training beside the weights (or reinstall msparse for a shipped model)") \
            from None
    return check_card(card, path)


def card_beside(path: Path) -> Optional[dict]:
    """The model card of a weights file: ``<stem>.json``, or ``model.json`` when it names this file (both read
    with :func:`read_card`: an invalid card is an error, never silently ignored)."""
    same = path.with_suffix(".json")
    if same.is_file():
        return read_card(same)
    run_card = path.parent / "model.json"
    if run_card.is_file():
        card = read_card(run_card)
        if card.get("weights", {}).get("file") == path.name:
            return card
    return None


def finish(model: nn.Module, device, info: dict) -> nn.Module:
    """Attach ``info`` as ``model.msparse_card`` and return the model on ``device`` in eval mode."""
    model.msparse_card = info
    return model.to(device).eval()
