"""The shipped offline CIFAR-10 subset (exact official pixels: test images 0..999, training images 0..2999), as
PNG grids in ``msparse/assets/cifar10_offline`` with a manifest; every file, the decoded pixels and the labels
are sha256-verified on load (:func:`load_offline`), the labels against hashes pinned here."""
from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np

from ..errors import ChecksumError, DataError

__all__ = ["ASSET_DIR", "OFFLINE_DIR", "OFFLINE_LABELS_SHA256", "offline_manifest", "load_offline"]

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets"
OFFLINE_DIR = ASSET_DIR / "cifar10_offline"


def offline_manifest() -> dict:
    """The manifest of the shipped subset (files, sha256 of files and decoded pixels, indices, source)."""
    path = OFFLINE_DIR / "manifest.json"
    if not path.exists():
        raise DataError(
            f"the offline CIFAR-10 subset is missing from the package ({path}); reinstall msparse or "
            f"rebuild it with `python scripts/make_offline_data.py`")
    try:
        man = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"the offline CIFAR-10 manifest {path} is not readable JSON ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); reinstall msparse") from None
    return _check_manifest(man, path)


#: every split entry of the offline manifest: field -> (type, what it is)
_MANIFEST_FIELDS = {"file": (str, "a file name"), "sha256": (str, "64 hex digits"),
                    "pixels_sha256": (str, "64 hex digits"), "n": (int, "a positive integer"),
                    "cols": (int, "a positive integer"), "indices": (list, "a list of n integers"),
                    "labels": (list, "a list of n integers")}


def _check_manifest(man, path: Path) -> dict:
    """Return the offline manifest ``man`` if every split entry has the fields :func:`load_offline` reads, with
    the right types and sizes; else raise :class:`~msparse.errors.DataError` naming ``path`` and the field."""
    def bad(what: str):
        return DataError(f"the offline CIFAR-10 manifest {path} is invalid: {what}; reinstall msparse")

    splits = man.get("splits") if isinstance(man, dict) else None
    if not isinstance(splits, dict) or not {"test", "train"} <= set(splits):
        raise bad("it needs a 'splits' object with 'test' and 'train' entries")
    for split in ("test", "train"):
        entry = splits[split]
        if not isinstance(entry, dict):
            raise bad(f"splits.{split} is not an object")
        for key, (kind, what) in _MANIFEST_FIELDS.items():
            v = entry.get(key)
            if isinstance(v, bool) or not isinstance(v, kind) or (kind is int and v < 1) or \
                    (key.endswith("sha256") and re.fullmatch(r"[0-9a-f]{64}", v) is None) or \
                    (key == "file" and (not v or Path(v).name != v)):
                raise bad(f"splits.{split}.{key} is {_short(v)}, not {what}")
        for key in ("indices", "labels"):
            v = entry[key]
            if len(v) != entry["n"] or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
                raise bad(f"splits.{split}.{key} holds {len(v)} values, not {entry['n']} integers")
    return man


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


_OFFLINE_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}

#: sha256 of the official CIFAR-10 labels (int64) of the shipped subset: test 0..999, train 0..2999. Pinned in
#: the code, not the manifest, so an edited manifest cannot change a label unnoticed (the manifest's own sha256
#: values cover the image files and the decoded pixels).
OFFLINE_LABELS_SHA256 = {"test": "6327b0e49549c8cf6ad65317a0fb463ec49ade30d02f63daec6b149052db4922",
                         "train": "9259a22282f65ce6adca92f6bbd4f2dff0d5b7e042b43c18fa5254411e4c1d67"}


def _decode_grid(data: bytes, n: int, cols: int) -> np.ndarray:
    from PIL import Image

    grid = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    rows = grid.shape[0] // 32
    x = grid.reshape(rows, 32, cols, 32, 3).transpose(0, 2, 1, 3, 4).reshape(rows * cols, 32, 32, 3)
    return np.ascontiguousarray(x[:n])


def load_offline(split: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """The shipped ``split`` as uint8 (N, 32, 32, 3), int64 (N,) and its manifest entry (cached, verified)."""
    man = offline_manifest()
    entry = man["splits"][split]
    if split not in _OFFLINE_CACHE:
        path = OFFLINE_DIR / entry["file"]
        if not path.exists():
            raise DataError(f"offline subset file missing: {path}; rebuild with scripts/make_offline_data.py")
        data = path.read_bytes()
        got = hashlib.sha256(data).hexdigest()
        if got != entry["sha256"]:
            raise ChecksumError(
                f"checksum mismatch for {path}: sha256 {got} != recorded {entry['sha256']}; the shipped "
                f"data is corrupted. Reinstall msparse or rebuild it with scripts/make_offline_data.py")
        x = _decode_grid(data, entry["n"], entry["cols"])
        got = hashlib.sha256(x.tobytes()).hexdigest()
        if got != entry["pixels_sha256"]:
            raise ChecksumError(
                f"decoded pixels of {path} do not match the recorded sha256 ({got} != "
                f"{entry['pixels_sha256']}); the image decoder is not lossless here")
        y = np.asarray(entry["labels"], dtype=np.int64)
        got = hashlib.sha256(y.tobytes()).hexdigest()
        if got != OFFLINE_LABELS_SHA256[split]:
            raise ChecksumError(
                f"the labels of the shipped {split} subset in {OFFLINE_DIR / 'manifest.json'} do not match the "
                f"official CIFAR-10 labels (sha256 {got[:16]}... != {OFFLINE_LABELS_SHA256[split][:16]}...); "
                "the manifest was edited or corrupted: reinstall msparse")
        _OFFLINE_CACHE[split] = (x, y)
    x, y = _OFFLINE_CACHE[split]
    return x, y, entry
