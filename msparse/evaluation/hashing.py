"""Hashing: the content hashes that key the results store, and the compact per-image flag strings.

A record's key is :func:`content_hash` of its ``spec`` (the sha256 of :func:`canonical_json`: sorted keys, no
whitespace, non-finite floats as text, numpy/torch scalars as Python numbers), so the same evaluation always
gets the same key. :func:`data_hash` names an evaluation subset by its pixels and labels, :func:`model_checksum`
a model by its weights, :func:`tensor_hash` any tensors. Per-image correctness is stored as a ``"0101..."``
string (:func:`flags_to_str`, :func:`str_to_flags`). Changing any of these changes every record key: the
committed records in ``results/`` pin them (``tests/test_records_travel.py``).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["flags_to_str", "str_to_flags", "canonical_json", "content_hash", "tensor_hash", "data_hash",
           "model_checksum"]


def flags_to_str(flags) -> str:
    """Boolean vector [N] -> '0101...' (compact, diff-friendly)."""
    return "".join("1" if bool(v) else "0" for v in _as_list(flags))


def str_to_flags(s: str) -> list[bool]:
    """'0101...' -> list of bool."""
    return [ch == "1" for ch in s]


def _as_list(v):
    if hasattr(v, "tolist"):
        return v.tolist()
    return list(v)


def _canon(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _canon(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canon(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(_canon(v) for v in obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return repr(obj)
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):   # numpy / torch scalars
        return _canon(obj.item())
    return obj


def canonical_json(obj: Any) -> str:
    """Deterministic JSON text (sorted keys, no whitespace) used for hashing."""
    return json.dumps(_canon(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def content_hash(obj: Any, length: int = 32) -> str:
    """Hex sha256 of the canonical JSON of ``obj`` (first ``length`` characters)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def tensor_hash(*tensors, length: int = 32) -> str:
    """Hash of tensors' dtype, shape and bytes (moved to CPU, made contiguous)."""
    import torch
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        flat = t.reshape(-1)
        step = max(1, (64 << 20) // max(1, t.element_size()))   # 64 MB at a time
        for i in range(0, flat.numel(), step):
            part = flat[i:i + step].cpu().contiguous()
            if part.dtype == torch.bfloat16:
                part = part.float()
            h.update(part.numpy().tobytes())
    return h.hexdigest()[:length]


def data_hash(x, y) -> str:
    """Hash of an evaluation subset: images x [N, ...] (as float32) and labels y [N] (as int64)."""
    import torch
    return tensor_hash(x.detach().to(torch.float32), y.detach().to(torch.int64))


def model_checksum(model, exclude: Iterable[str] = ()) -> str:
    """Hash of a model's state_dict tensors (names, dtypes, shapes, values), keys in ``exclude`` left out.

    Use ``exclude`` to leave out MeanSparse buffers so that the checksum names the *host* model.
    """
    import torch
    skip = set(exclude)
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if name in skip or not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:32]
