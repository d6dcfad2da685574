"""Reading weights: state dicts from checkpoint files, the model card beside a weights file, strict loading.

A *model card* is the JSON file training writes beside its weights (``model.json``, or ``<name>.json`` for a
shipped model): architecture, recipe, data provenance, evaluation, and the weights' sha256.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from .._io import sha256_file
from ..errors import MissingFileError, ModelLoadError, WeightsChecksumError

__all__ = ["load_checkpoint", "load_into", "card_beside", "finish", "first_sentence"]


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


def card_beside(path: Path) -> Optional[dict]:
    """The model card of a weights file: ``<stem>.json``, or ``model.json`` when it names this file."""
    same = path.with_suffix(".json")
    if same.is_file():
        return json.loads(same.read_text())
    run_card = path.parent / "model.json"
    if run_card.is_file():
        card = json.loads(run_card.read_text())
        if card.get("weights", {}).get("file") == path.name:
            return card
    return None


def finish(model: nn.Module, device, info: dict) -> nn.Module:
    """Attach ``info`` as ``model.msparse_card`` and return the model on ``device`` in eval mode."""
    model.msparse_card = info
    return model.to(device).eval()
