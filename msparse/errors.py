"""The errors msparse raises on purpose, under one base: :class:`MsparseError`.

An ``MsparseError`` says that the input, a file or the model is not what the call needs; its message says
what to do. Each class also keeps the builtin base the error had before the hierarchy existed
(``ValueError``, ``KeyError``, ``TypeError``, ``FileNotFoundError``, ``RuntimeError``), so code that
catches those keeps working. Anything else that escapes msparse is a bug: the command line reports an
``MsparseError`` in one line (exit code 2) and lets every other exception through as a traceback.

    MsparseError
    ├── InputError (ValueError)               an argument value the call cannot use
    │   ├── InputTypeError (TypeError)        an argument of the wrong type
    │   ├── UnknownNameError (KeyError)       a name that is not in its table (preset, site, attack, ...)
    │   └── UsageError                        bad command-line input
    ├── StateError (RuntimeError)             the model is not in the state the call needs
    ├── ClusterError (RuntimeError)           a Dask cluster cannot be used (not installed, unreachable)
    ├── MissingFileError (FileNotFoundError)  a file the call needs does not exist
    │   └── DataError                         requested data is not available here
    ├── RunExistsError (FileExistsError)      a training run already lives in the output folder
    ├── StoreError (OSError)                  the results store cannot be written, or the disk is full
    ├── ChecksumError (RuntimeError)          a file does not match the sha256 recorded for it
    ├── ModelLoadError (RuntimeError)         a model cannot be loaded
    │   └── WeightsChecksumError              ... because its weights fail their checksum (also a ChecksumError)
    ├── CorruptRecord (ValueError)            a stored record or shard cannot be trusted
    └── InstallError (ImportError)            an installed package does not work with the installed torch
"""
from __future__ import annotations

__all__ = [
    "MsparseError", "InputError", "InputTypeError", "UnknownNameError", "UsageError", "StateError",
    "MissingFileError", "DataError", "ClusterError", "RunExistsError", "ChecksumError", "ModelLoadError", "WeightsChecksumError",
    "StoreError", "CorruptRecord", "InstallError",
]


class MsparseError(Exception):
    """Base of every error msparse raises on purpose (bad input, missing or corrupted files, wrong model state)."""


class InputError(MsparseError, ValueError):
    """An argument value the call cannot use (α < 0, ε ≤ 0, mismatched shapes, an empty batch, ...)."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type (a model that is not an ``nn.Module``, labels that are not a tensor, ...)."""


class UnknownNameError(InputError, KeyError):
    """A name that is not in its table: a placement preset, a site, an attack, a dataset, a reference table."""

    __str__ = BaseException.__str__   # the message as written, not KeyError's quoted repr


class UsageError(InputError):
    """Bad input on the command line (``python -m msparse ...``)."""


class StateError(MsparseError, RuntimeError):
    """The model is not in the state the call needs: α > 0 without statistics, sparsifying a sparsified model,
    a site the forward pass never reaches, a probe forward pass that fails on the declared input size."""


class ClusterError(MsparseError, RuntimeError):
    """A Dask cluster cannot be used: ``distributed`` is not installed, the scheduler cannot be reached, or a
    worker cannot see the results store."""


class MissingFileError(MsparseError, FileNotFoundError):
    """A file the call needs does not exist (a checkpoint, a statistics file, an input tensor file)."""


class DataError(MissingFileError):
    """Requested data is not available; the message says what to download and where to put it."""


class RunExistsError(MsparseError, FileExistsError):
    """The training output folder already holds a run; resume it or choose another folder."""


class ChecksumError(MsparseError, RuntimeError):
    """A file (data or weights) does not match the sha256 recorded for it."""


class ModelLoadError(MsparseError, RuntimeError):
    """A model cannot be loaded (unknown name, missing or corrupted checkpoint, weights that do not fit)."""


class WeightsChecksumError(ChecksumError, ModelLoadError):
    """A weights file does not match the sha256 in its model card: a checksum error and a model-load error."""


class StoreError(MsparseError, OSError):
    """The results store cannot be written (read-only folder, a file where the folder should be), or a file
    msparse writes (record, statistics, checkpoint) does not fit on a full disk."""


class CorruptRecord(MsparseError, ValueError):
    """A stored record or shard that cannot be trusted (bad JSON, key or checksum mismatch)."""


class InstallError(MsparseError, ImportError):
    """An installed package does not work with the installed torch (a torchvision built for another torch build:
    a CPU-only torch beside torchvision from PyPI, or two torch versions); the message names the pair to install."""
