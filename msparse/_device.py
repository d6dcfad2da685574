"""Device chores done once: which device a name means, where a model lives, how a device is described."""
from __future__ import annotations

import os
import platform

import torch
from torch import nn

from .errors import InputError

__all__ = ["resolve_device", "model_device", "device_name"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` or ``None`` -> ``cuda`` when a GPU is available, else ``cpu``; any other name or device ->
    ``torch.device(device)``. Raises :class:`~msparse.errors.InputError` for a name torch does not know, or
    for a CUDA device on a machine without one."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r} (use cpu, cuda, cuda:1 or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but no CUDA GPU is available here; use cpu or auto")
    return dev


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (``cpu`` for a model without tensors)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def device_name(device=None) -> str:
    """Human-readable name of a compute device: the GPU model, or the CPU with its cores and torch threads."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
           f"{torch.get_num_threads()} threads)"
