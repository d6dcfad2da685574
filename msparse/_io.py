"""File chores done once: atomic writes and sha256 of a file.

Every file msparse writes (result records and shards, statistics files, checkpoints, model cards) goes
through :func:`atomic_write_bytes`: a temporary file in the destination folder, fsync, then ``os.replace``,
so a reader sees the old file or the new one, never half of one, and a killed process leaves no partial file.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_torch_save", "sha256_file"]


def _read_umask() -> int:
    mask = os.umask(0)   # the only way to read it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


#: errno values that mean "the disk (or the user's quota) is full"
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parents created); returns the path.

    The file gets ordinary permissions (0666 minus the umask; ``mkstemp`` alone would leave 0600), since
    records and checkpoints are meant to be shared. On any failure the temporary file is removed and ``path``
    keeps its old content (or stays absent); a full disk or quota raises :class:`~msparse.errors.StoreError`
    naming ``path`` (other ``OSError`` s propagate as they are).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, 0o666 & ~_UMASK)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            from .errors import StoreError

            raise StoreError(f"no space left on the device to write {path} ({len(data)} bytes; "
                             f"{exc.strerror or exc}): free space there (or write elsewhere, e.g. --store DIR), "
                             "then run the same command again; nothing was half-written") from exc
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` of ``obj`` to ``path``, atomically.

    The object is serialised in memory first, so identical objects give byte-identical files (``torch.save``
    names the archive after the file it writes to; a random temporary name would change the sha256).
    """
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
