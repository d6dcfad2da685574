"""The official CIFAR-10 python batches (``cifar-10-batches-py``) found under ``data_dir``, ``$MSPARSE_DATA_DIR`` or
``./data``: where they are (:func:`find_official_cifar10`), read without running code (:func:`_load_cifar_pickle`
resolves only the numpy array globals the official files reference and refuses any other, so a planted file cannot
run code), and what to download when they are missing (:func:`missing_cifar10_message`)."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError

__all__ = ["CIFAR10_URL", "find_official_cifar10", "read_official_cifar10", "missing_cifar10_message"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def find_official_cifar10(data_dir) -> Optional[Path]:
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


def read_official_cifar10(batch_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``split`` of the official files in ``batch_dir``: uint8 (N, 32, 32, 3), int64 (N,) (cached)."""
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


def missing_cifar10_message(data_dir, n, split, available) -> str:
    """What to download, and where to put it, when CIFAR-10 ``split`` is not available."""
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
