"""The front door of :mod:`msparse.data`: :func:`load_data` (tensors) and :func:`load_uint8` (CIFAR-10 as uint8),
which pick the source -- the official files if found, else the shipped offline subset, or the JPEG copy, CIFAR-100
or ImageNet when asked -- and return the rows with their :class:`~msparse.data.info.DataInfo`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DataError, InputError, UnknownNameError
from . import offline
from .folders import load_cifar100, load_imagenet
from .info import DataInfo, index_ranges
from .jpeg import jpeg_file, load_jpeg_cifar10
from .official import find_official_cifar10, missing_cifar10_message, read_official_cifar10

__all__ = ["load_data", "load_uint8", "to_float"]

_DATASETS = ("cifar10", "cifar100", "imagenet")
_SOURCES = ("auto", "official", "offline", "jpeg")


def to_float(x_u8: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(x_u8)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _check_dataset_split(dataset: str, split: str) -> tuple[str, str]:
    ds = str(dataset).lower().replace("-", "")
    if ds not in _DATASETS:
        raise UnknownNameError(f"unknown dataset {dataset!r}; choose one of {', '.join(_DATASETS)}")
    sp = str(split).lower()
    if sp not in ("train", "test"):
        raise UnknownNameError(f"unknown split {split!r}; choose 'train' or 'test'")
    return ds, sp


def _check_rows(n, start) -> None:
    """Raise :class:`~msparse.errors.InputError` unless ``n`` (``None`` = all) and ``start`` are integers >= 0
    (a float or a string would be truncated or fail deep inside the loader)."""
    import numbers

    for name, v in (("n", n), ("start", start)):
        if v is None and name == "n":
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise InputError(f"{name} must be an integer >= 0 (a number of images / a row index), got {v!r}")


def load_uint8(dataset: str = "cifar10", split: str = "test", n: Optional[int] = None,
               data_dir=None, *, source: str = "auto", start: int = 0, download: bool = False,
               progress: bool = False) -> tuple[np.ndarray, np.ndarray, DataInfo]:
    """CIFAR images as uint8 (N, 32, 32, 3) + int64 labels + :class:`DataInfo`.

    Rows ``start .. start+n-1`` of the split in official order (all remaining rows when n is None).
    ``source``: "auto" (official files if found, else the shipped subset), "official", "offline",
    "jpeg" (``data_dir`` = the JPEG npz file or its directory).
    """
    ds, sp = _check_dataset_split(dataset, split)
    if ds != "cifar10":
        raise InputError(f"load_uint8 handles cifar10 only; use load_data({dataset!r}, ...)")
    if source not in _SOURCES:
        raise UnknownNameError(f"unknown source {source!r}; choose one of {', '.join(_SOURCES)}")
    _check_rows(n, start)

    def take(x, y):
        stop = len(x) if n is None else start + int(n)
        return x[start:stop], y[start:stop], list(range(start, min(stop, len(x))))

    if source == "jpeg":
        if data_dir is None:
            raise DataError("source='jpeg' needs data_dir= the path of cifar10_jpeg_<split>.npz or its directory")
        p = jpeg_file(data_dir, sp)
        x, y = load_jpeg_cifar10(p, sp, progress=progress)
        if n is not None and start + n > len(x):
            raise DataError(f"the JPEG copy has {len(x)} {sp} images; asked for rows {start}..{start + n - 1}")
        x, y, idx = take(x, y)
        return x, y, DataInfo("cifar10", sp, "jpeg", f"JPEG copy at {p.resolve()} (lossy, quality ~75)", len(x),
                              index_ranges(idx), False, str(p))

    if source in ("auto", "official"):
        d = find_official_cifar10(data_dir)
        if d is None and download:
            from .._compat import import_torchvision

            torchvision = import_torchvision()
            root = Path(data_dir) if data_dir is not None else Path("data")
            torchvision.datasets.CIFAR10(root=str(root), train=(sp == "train"), download=True)
            d = find_official_cifar10(root)
        if d is not None:
            x, y = read_official_cifar10(d, sp)
            if n is not None and start + n > len(x):
                raise InputError(f"CIFAR-10 {sp} has {len(x)} images; asked for rows {start}..{start + n - 1}")
            x, y, idx = take(x, y)
            return x, y, DataInfo("cifar10", sp, "official", f"official files at {d}", len(x),
                                  index_ranges(idx), True, str(d))
        if source == "official" or data_dir is not None:
            raise DataError(missing_cifar10_message(data_dir, n, sp, None))

    x, y, entry = offline.load_offline(sp)
    if n is not None and start + n > len(x):
        raise DataError(missing_cifar10_message(data_dir, start + n, sp, len(x)))
    x, y, idx = take(x, y)
    off_idx = [entry["indices"][i] for i in idx]
    return x, y, DataInfo(
        "cifar10", sp, "offline",
        f"msparse offline subset (exact official pixels, {sp} {index_ranges(off_idx)})", len(x),
        index_ranges(off_idx), True, str(offline.OFFLINE_DIR / entry["file"]))


def load_data(dataset: str = "cifar10", split: str = "test", n: Optional[int] = None, data_dir=None, *,
              source: str = "auto", start: int = 0, download: bool = False, return_info: bool = False,
              preprocessing=None, model_name: Optional[str] = None, progress: bool = False):
    """Load images and labels as tensors.

    Returns ``(x, y)`` -- x float32 (N, C, H, W) in [0, 1], y int64 (N,) -- or ``(x, y, info)`` with
    ``return_info=True`` (:class:`DataInfo`: source, n, official indices).

    cifar10: see :func:`load_uint8` for ``source``/``start``.  cifar100: official files under ``data_dir``
    (``cifar-100-python/``).  imagenet: RobustBench's 5000-image validation subset under
    ``data_dir/val`` (test split only), with ``preprocessing`` (a RobustBench name such as
    "Res256Crop224", default) or the model's own when ``model_name`` is given.
    """
    ds, sp = _check_dataset_split(dataset, split)
    _check_rows(n, start)
    if ds == "cifar10":
        x, y, info = load_uint8(ds, sp, n, data_dir, source=source, start=start, download=download,
                                progress=progress)
        xt, yt = to_float(x), torch.from_numpy(np.ascontiguousarray(y)).long()
    elif source not in ("auto", "official"):
        raise InputError(f"source={source!r} exists for cifar10 only")
    elif ds == "cifar100":
        x, y, info = load_cifar100(sp, n, data_dir, start, download)
        xt, yt = to_float(x), torch.from_numpy(y)
    else:
        xt, yt, info = load_imagenet(sp, n, data_dir, start, preprocessing, model_name)
    return (xt, yt, info) if return_info else (xt, yt)
