"""Data loading with provenance: official files, the shipped offline CIFAR-10 subset, the JPEG copy.

Every loader can report where its pixels came from (:class:`DataInfo`); results must carry it.

* ``load_data("cifar10", "test", n=1000)`` -> ``(x, y)``: ``x`` float32 (N, 3, 32, 32) in [0, 1],
  ``y`` int64 (N,).  Source: the official ``cifar-10-batches-py`` files if they are found (``data_dir``,
  ``$MSPARSE_DATA_DIR`` or ``./data``), else the offline subset shipped in ``msparse/assets``
  (exact official pixels: test images 0..999, training images 0..2999), sha256-verified on load.
* ``load_data(..., source="jpeg", data_dir="/path/with/cifar10_jpeg_train.npz")``: the lossy JPEG copy of
  all 50 000 + 10 000 images (for training only; never ship it, never compare test numbers from it).
* ``load_data("cifar100" | "imagenet", ..., data_dir=...)``: torchvision / RobustBench loaders on folders
  the user supplies.  Nothing is downloaded unless ``download=True`` is passed.
* :class:`ImageBatches`: an in-memory uint8 dataset that yields augmented float batches (random crop with
  4-pixel zero padding + horizontal flip), deterministic per (seed, epoch).

The official CIFAR batch files are pickles, and whatever sits in ``data_dir``, ``$MSPARSE_DATA_DIR`` or
``./data`` is read, so they are never handed to ``pickle.load``: :func:`_load_cifar_pickle` resolves only the
numpy array globals the official files reference and refuses any other (a planted file cannot run code).
CIFAR-100 goes through torchvision, which checks each file's MD5 against the official one before unpickling.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import os
import pickle
from dataclasses import dataclass, field, asdict
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from .errors import ChecksumError, DataError, InputError, UnknownNameError

__all__ = [
    "DataInfo", "load_data", "load_uint8", "load_jpeg_cifar10",
    "offline_manifest", "ImageBatches", "batches", "image_folder_loader", "CIFAR10_URL", "CIFAR100_URL",
    "ASSET_DIR",
]

ASSET_DIR = Path(__file__).resolve().parent / "assets"
OFFLINE_DIR = ASSET_DIR / "cifar10_offline"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
_DATASETS = ("cifar10", "cifar100", "imagenet")
_SOURCES = ("auto", "official", "offline", "jpeg")


@dataclass(frozen=True)
class DataInfo:
    """Provenance of a loaded array.

    source: human-readable origin, e.g. "official files at /data/cifar-10-batches-py".
    kind: "official" | "offline" | "jpeg" | "imagenet-folder".
    exact: True when pixels are the official byte values (False for the JPEG copy).
    indices: official indices of the rows, as a compact string like "0..999" (or a list).
    """

    dataset: str
    split: str
    kind: str
    source: str
    n: int
    indices: str
    exact: bool
    path: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:  # used in logs and model cards
        return f"{self.dataset}/{self.split}: {self.source}, n={self.n}, indices {self.indices}"


def _ranges(idx: Sequence[int]) -> str:
    """Compact string for a sorted index list: [0,1,2,5] -> "0..2,5"."""
    idx = [int(i) for i in idx]
    if not idx:
        return ""
    parts, start, prev = [], idx[0], idx[0]
    for i in idx[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(f"{start}..{prev}" if prev > start else f"{start}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


def _to_float(x_u8: np.ndarray) -> torch.Tensor:
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


# ------------------------------------------------------------------ offline subset (shipped)

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
    """Return the offline manifest ``man`` if every split entry has the fields :func:`_load_offline` reads, with
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


def _load_offline(split: str) -> tuple[np.ndarray, np.ndarray, dict]:
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


# ------------------------------------------------------------------ official files

def _find_official_cifar10(data_dir) -> Optional[Path]:
    """Directory containing ``cifar-10-batches-py`` (or that directory itself), or None."""
    cands = []
    if data_dir is not None:
        cands.append(Path(data_dir))
    else:
        if os.environ.get("MSPARSE_DATA_DIR"):
            cands.append(Path(os.environ["MSPARSE_DATA_DIR"]))
        cands.append(Path("data"))
    for c in cands:
        for d in (c / "cifar-10-batches-py", c):
            if (d / "test_batch").is_file() and all((d / f"data_batch_{i}").is_file() for i in range(1, 6)):
                return d
    return None


# The official CIFAR-10/100 python batches were written by Python 2 cPickle (protocol 2): dicts, lists, str and
# int, plus one numpy uint8 array per batch, which pickles as numpy.core.multiarray._reconstruct(numpy.ndarray,
# (0,), 'b') with a numpy.dtype('u1', 0, 1) in its state. Those three globals are all they reference.
# NumPy 2 writes the first as numpy._core.multiarray._reconstruct (same function), so a batch re-pickled
# (protocol <= 4) from an official one also loads. Any other global -- os.system, builtins.exec,
# subprocess.*, numpy.testing...runstring, ... -- is refused before it is called.
_RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]   # numpy's _reconstruct, whatever module holds it
_CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _CifarUnpickler(pickle.Unpickler):
    """``pickle.load(fh, encoding="latin1")`` restricted to the globals official CIFAR batch files reference.

    Containers, strings and numbers never go through :meth:`find_class`; every global does (GLOBAL,
    STACK_GLOBAL, INST, OBJ and extension-code opcodes alike), so no other callable can be reached.
    """

    def __init__(self, fh, path: Path, remedy: str):
        super().__init__(fh, encoding="latin1")
        self._path, self._remedy = path, remedy

    def find_class(self, module, name):
        obj = _CIFAR_PICKLE_GLOBALS.get((module, name))
        if obj is None:
            import _compat_pickle   # Python 2 names (protocol < 3) -> the Python 3 name, for the message only

            py3 = _compat_pickle.NAME_MAPPING.get(
                (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
            what = f"{module}.{name}" + (f" (Python 3: {'.'.join(py3)})" if py3 != (module, name) else "")
            raise DataError(
                f"refused to read {self._path}: its pickle asks for the Python global {what}, which "
                f"official CIFAR batch files never reference (they hold only lists, strings, integers and numpy "
                f"arrays), and loading it could run code. This is not an official CIFAR batch file; delete it "
                f"and download the official archive: {self._remedy}")
        return obj

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids do not occur in official CIFAR batch files")


def _load_cifar_pickle(path: Path, remedy: str):
    """Unpickle an official CIFAR batch/meta file (latin1 strings) without executing code.

    Raises :class:`DataError` naming the refused global when the file references anything but the numpy array
    reconstruction globals; ``remedy`` says what to download and where to extract it.
    """
    with open(path, "rb") as fh:
        return _CifarUnpickler(fh, Path(path), remedy).load()


_OFFICIAL_CACHE: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def _read_official_cifar10(batch_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    key = (str(batch_dir.resolve()), split)
    if key not in _OFFICIAL_CACHE:
        files = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
        xs, ys = [], []
        remedy = f"{CIFAR10_URL}, extracted so that {batch_dir} holds data_batch_1..5 and test_batch"
        for f in files:
            try:
                d = _load_cifar_pickle(batch_dir / f, remedy)
                xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                ys.append(np.asarray(d["labels"], dtype=np.int64))
            except DataError:       # a global that official files never reference: refused, never called
                raise
            except Exception as e:  # truncated/corrupted pickle
                raise DataError(
                    f"could not read official CIFAR-10 file {batch_dir / f} ({type(e).__name__}: {e}); "
                    f"re-download {CIFAR10_URL} and extract it so that {batch_dir} holds data_batch_1..5 "
                    f"and test_batch") from e
        _OFFICIAL_CACHE[key] = (np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys))
    return _OFFICIAL_CACHE[key]


def _missing_cifar10_message(data_dir, n, split, available) -> str:
    where = Path(data_dir) if data_dir is not None else Path("data")
    head = (f"CIFAR-10 {split} data not available"
            + (f": no official files under {where}" if data_dir is not None else "")
            + (f" and the offline subset holds only {available} {split} images (asked for {n})"
               if available is not None else "") + ". ")
    return head + (
        f"Download {CIFAR10_URL} (163 MB) and extract it into {where} so that "
        f"{where / 'cifar-10-batches-py'} contains data_batch_1..5 and test_batch, then pass "
        f"data_dir={str(where)!r} (or set MSPARSE_DATA_DIR); with internet, download=True does this "
        f"through torchvision.")


# ------------------------------------------------------------------ JPEG copy

_JPEG_CACHE: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def _jpeg_file(path, split: str) -> Path:
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

    p = _jpeg_file(path, split)
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


# ------------------------------------------------------------------ public API

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
        p = _jpeg_file(data_dir, sp)
        x, y = load_jpeg_cifar10(p, sp, progress=progress)
        if n is not None and start + n > len(x):
            raise DataError(f"the JPEG copy has {len(x)} {sp} images; asked for rows {start}..{start + n - 1}")
        x, y, idx = take(x, y)
        return x, y, DataInfo("cifar10", sp, "jpeg", f"JPEG copy at {p.resolve()} (lossy, quality ~75)", len(x),
                              _ranges(idx), False, str(p))

    if source in ("auto", "official"):
        d = _find_official_cifar10(data_dir)
        if d is None and download:
            import torchvision
            root = Path(data_dir) if data_dir is not None else Path("data")
            torchvision.datasets.CIFAR10(root=str(root), train=(sp == "train"), download=True)
            d = _find_official_cifar10(root)
        if d is not None:
            x, y = _read_official_cifar10(d, sp)
            if n is not None and start + n > len(x):
                raise InputError(f"CIFAR-10 {sp} has {len(x)} images; asked for rows {start}..{start + n - 1}")
            x, y, idx = take(x, y)
            return x, y, DataInfo("cifar10", sp, "official", f"official files at {d}", len(x),
                                  _ranges(idx), True, str(d))
        if source == "official" or data_dir is not None:
            raise DataError(_missing_cifar10_message(data_dir, n, sp, None))

    x, y, entry = _load_offline(sp)
    if n is not None and start + n > len(x):
        raise DataError(_missing_cifar10_message(data_dir, start + n, sp, len(x)))
    x, y, idx = take(x, y)
    off_idx = [entry["indices"][i] for i in idx]
    return x, y, DataInfo(
        "cifar10", sp, "offline",
        f"msparse offline subset (exact official pixels, {sp} {_ranges(off_idx)})", len(x),
        _ranges(off_idx), True, str(OFFLINE_DIR / entry["file"]))


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
        xt, yt = _to_float(x), torch.from_numpy(np.ascontiguousarray(y)).long()
    elif source not in ("auto", "official"):
        raise InputError(f"source={source!r} exists for cifar10 only")
    elif ds == "cifar100":
        xt, yt, info = _load_cifar100(sp, n, data_dir, start, download)
    else:
        xt, yt, info = _load_imagenet(sp, n, data_dir, start, preprocessing, model_name)
    return (xt, yt, info) if return_info else (xt, yt)


def _load_cifar100(sp, n, data_dir, start, download):
    import torchvision

    root = Path(data_dir) if data_dir is not None else Path(os.environ.get("MSPARSE_DATA_DIR", "data"))
    folder = root / "cifar-100-python"
    if not (folder / ("test" if sp == "test" else "train")).is_file() and not download:
        raise DataError(
            f"CIFAR-100 not found: expected {folder / sp}. Download {CIFAR100_URL} and extract it into "
            f"{root} (so that {folder} holds train, test and meta), then pass data_dir={str(root)!r}; "
            f"with internet, download=True does this through torchvision.")
    try:
        dset = torchvision.datasets.CIFAR100(root=str(root), train=(sp == "train"), download=download)
    except RuntimeError as e:
        raise DataError(f"CIFAR-100 files under {folder} are incomplete or corrupted ({e}); re-download "
                        f"{CIFAR100_URL} and extract it into {root}") from e
    x, y = dset.data, np.asarray(dset.targets, dtype=np.int64)
    stop = len(x) if n is None else start + int(n)
    if stop > len(x):
        raise InputError(f"CIFAR-100 {sp} has {len(x)} images; asked for rows {start}..{stop - 1}")
    x, y = x[start:stop], y[start:stop]
    info = DataInfo("cifar100", sp, "official", f"official files at {folder}", len(x),
                    _ranges(range(start, stop)), True, str(folder))
    return _to_float(x), torch.from_numpy(y), info


def _load_imagenet(sp, n, data_dir, start, preprocessing, model_name):
    if sp != "test":
        raise InputError("imagenet: only the RobustBench validation subset (split='test') is supported")
    if data_dir is None or not (Path(data_dir) / "val").is_dir():
        raise DataError(
            "ImageNet not found: pass data_dir=DIR where DIR/val/<wnid>/<image>.JPEG holds the ILSVRC-2012 "
            "validation images (from https://image-net.org, registration required) in the class-folder "
            "layout RobustBench expects (see robustbench/helper_files/imagenet_test_image_ids.txt).")
    from ._compat import import_robustbench

    import_robustbench()
    from robustbench.data import get_preprocessing, load_imagenet, PREPROCESSINGS
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    if model_name is not None and preprocessing is None:
        prep = get_preprocessing(BenchmarkDataset.imagenet, ThreatModel.Linf, model_name, None)
    else:
        prep = PREPROCESSINGS[preprocessing or "Res256Crop224"] if not callable(preprocessing) else preprocessing
    total = 5000 if n is None else start + int(n)
    if total > 5000:
        raise InputError("imagenet: RobustBench's evaluation subset has 5000 images")
    x, y = load_imagenet(total, str(data_dir), prep)
    x, y = x[start:], y[start:]
    info = DataInfo("imagenet", "test", "imagenet-folder",
                    f"ImageNet val folder at {data_dir} (RobustBench 5000-image subset)", len(x),
                    _ranges(range(start, total)), True, str(data_dir),
                    {"preprocessing": preprocessing or (model_name and "model default") or "Res256Crop224"})
    return x, y.long(), info


# ------------------------------------------------------------------ batches for training

class ImageBatches:
    """In-memory uint8 images -> float batches, optionally augmented (pad-4 random crop + h-flip).

    ``x``: uint8 (N, H, W, 3) numpy/tensor; ``y``: int (N,).  Iterating yields ``(xb, yb)``,
    xb float32 (B, 3, H, W) in [0, 1].  Order and augmentation depend only on ``(seed, epoch)``
    (call :meth:`set_epoch`), so an interrupted run resumes with identical batches.
    """

    def __init__(self, x, y, batch_size: int = 128, *, shuffle: bool = True, augment: bool = True,
                 drop_last: bool = True, seed: int = 0, device=None, channels_last: bool = False):
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise InputError(f"ImageBatches expects uint8 (N, H, W, 3) images, got {tuple(x.shape)} {x.dtype}")
        self.x = x.permute(0, 3, 1, 2).contiguous()  # uint8 NCHW
        self.y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y).long()
        if len(self.x) != len(self.y):
            raise InputError(f"{len(self.x)} images but {len(self.y)} labels")
        self.batch_size, self.shuffle, self.augment = int(batch_size), shuffle, augment
        self.drop_last, self.seed, self.epoch = drop_last, int(seed), 0
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.channels_last = channels_last

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        n = len(self.x)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            xb = self.x[idx]
            if self.augment:
                xb = self._augment(xb, g)
            xb = xb.to(self.device, non_blocking=True).float().div_(255.0)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self.y[idx].to(self.device, non_blocking=True)

    @staticmethod
    def _augment(xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, c, h, w = xb.shape
        padded = torch.zeros((b, c, h + 8, w + 8), dtype=xb.dtype)
        padded[:, :, 4:4 + h, 4:4 + w] = xb
        dy = torch.randint(0, 9, (b,), generator=g)
        dx = torch.randint(0, 9, (b,), generator=g)
        flip = torch.rand(b, generator=g) < 0.5
        rows = (dy[:, None] + torch.arange(h)[None, :])  # (b, h)
        cols = (dx[:, None] + torch.arange(w)[None, :])  # (b, w)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        bi = torch.arange(b)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (b, h, w, c)
        return out.permute(0, 3, 1, 2).contiguous()


def batches(dataset: str = "cifar10", split: str = "train", batch_size: int = 512, n: Optional[int] = None,
            data_dir=None, *, source: str = "auto", start: int = 0, augment: bool = False,
            shuffle: bool = False, seed: int = 0, device=None) -> tuple[ImageBatches, DataInfo]:
    """CIFAR-10 as an iterable of ``(x, y)`` batches without materialising float32 copies of the set.

    Defaults suit the statistics pass (stored order, no augmentation, last partial batch kept).
    Returns ``(ImageBatches, DataInfo)``.
    """
    x, y, info = load_uint8(dataset, split, n, data_dir, source=source, start=start)
    return ImageBatches(x, y, batch_size, shuffle=shuffle, augment=augment, drop_last=False, seed=seed,
                        device=device), info


def image_folder_loader(folder, batch_size: int = 64, preprocessing="BicubicRes256Crop224", *,
                        shuffle: bool = False, num_workers: int = 2):
    """``torch.utils.data.DataLoader`` over an ImageNet-style class-folder tree (e.g. ``.../train``).

    ``preprocessing``: a RobustBench preprocessing name ("BicubicRes256Crop224", "Res256Crop224", ...) or a
    callable.  Yields ``(x, y)`` with x float32 (B, 3, 224, 224) in [0, 1].  Files are listed sorted,
    class folder by class folder (as the official code's ImageNet training loader lists them, which its statistics
    pass reads unshuffled).
    """
    import torchvision

    folder = Path(folder)
    if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
        raise DataError(f"image folder not found or empty: {folder}; it must hold one sub-folder per class "
                        f"(ImageNet: the ILSVRC-2012 train or val images from https://image-net.org, "
                        f"registration required)")
    if callable(preprocessing):
        tf = preprocessing
    else:
        from ._compat import import_robustbench

        import_robustbench()
        from robustbench.data import PREPROCESSINGS
        if preprocessing not in PREPROCESSINGS:
            raise UnknownNameError(f"unknown preprocessing {preprocessing!r}; choose one of "
                                   f"{', '.join(str(k) for k in PREPROCESSINGS)}")
        tf = PREPROCESSINGS[preprocessing]
    dset = torchvision.datasets.ImageFolder(str(folder), transform=tf)
    return torch.utils.data.DataLoader(dset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers)
