"""The lossy JPEG copy of all 50 000 + 10 000 CIFAR-10 images (``cifar10_jpeg_<split>.npz``, quality ~75): for
training only; it is never shipped, and test numbers are never compared from it."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..errors import DataError
from .official import CIFAR10_URL

__all__ = ["jpeg_file", "load_jpeg_cifar10"]


_JPEG_CACHE: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def jpeg_file(path, split: str) -> Path:
    """The npz file of ``split`` at ``path`` (the file or its folder); :class:`~msparse.errors.DataError` if none."""
    p = Path(path)
    if p.is_dir():
        p = p / f"cifar10_jpeg_{split}.npz"
    if not p.is_file():
        raise DataError(
            f"JPEG copy of CIFAR-10 not found at {p}; pass the path of cifar10_jpeg_{split}.npz (or its "
            f"directory). It is not shipped with msparse; the official files ({CIFAR10_URL}) are better.")
    return p


def load_jpeg_cifar10(path, split: str = "train", progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Decode the JPEG copy once (Pillow) and cache it in memory.

    Returns ``(x, y)``: uint8 (N, 32, 32, 3) HWC RGB, int64 (N,), official order.
    """
    from PIL import Image

    p = jpeg_file(path, split)
    key = (str(p.resolve()), split)
    if key not in _JPEG_CACHE:
        with np.load(p) as d:
            buf, off, lab = d["jpeg"], d["offsets"], d["labels"]
        n = len(off) - 1
        x = np.empty((n, 32, 32, 3), dtype=np.uint8)
        it = range(n)
        if progress:
            from tqdm.auto import tqdm
            import sys
            it = tqdm(it, desc=f"decode JPEG {split}", leave=False, mininterval=0.5 if sys.stderr.isatty() else 30)
        for i in it:
            x[i] = np.asarray(Image.open(io.BytesIO(buf[off[i]:off[i + 1]].tobytes())).convert("RGB"))
        _JPEG_CACHE[key] = (x, lab.astype(np.int64))
    return _JPEG_CACHE[key]
