"""The results store: a folder of records (:mod:`msparse.evaluation.integrity`), written atomically, read back
verified, with the per-batch resume state of unfinished evaluations.

Files live under a store root (default: ``<repo>/results`` when running from the repository,
``$MSPARSE_RESULTS`` if set)::

    <root>/records/<key>.json            finished records (commit these)
    <root>/partial/<key>/<i:05d>.json    per-batch shards of an unfinished evaluation (resume state)

Every write is atomic (:func:`msparse._io.atomic_write_text`: temporary file in the same folder, fsync,
``os.replace``). The store only acts on its own entries: a link or any other non-regular entry (at ``records/``,
``partial/``, ``partial/<key>`` or a file in them) is never followed, read, replaced or removed, only named in a
warning (or a one-line :class:`~msparse.errors.StoreError` where a write cannot go on), and clearing a finished
evaluation's resume state removes only the shard files msparse writes. A record that does not verify is ignored
on read and moved aside (``*.corrupt``) only when it is recomputed or by :meth:`Store.repair`.

Keys are :mod:`msparse.evaluation.hashing`'s, provenance is :mod:`msparse.evaluation.provenance`'s; records of
older schemas are served under their current key and rewritten by :meth:`Store.migrate`
(:mod:`msparse.evaluation.migration`); tables over a store are :mod:`msparse.evaluation.queries`'.
"""
from __future__ import annotations

import errno
import json
import os
import re
import stat
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .._io import atomic_write_text
from ..errors import CorruptRecord, InputError, StoreError
from .hashing import content_hash
from .integrity import SCHEMA, NewerSchema, check_record, seal, trusted
from .migration import LEGACY_SPEC_FIELDS, Migration, migrate, upgrade_record
from .provenance import repo_root, versions_differ

__all__ = ["Store", "Repaired", "default_store_dir", "ENV_VAR", "RECOMPUTE_ENV"]

#: the folder of the default store, when set
ENV_VAR = "MSPARSE_RESULTS"

#: set to 1 to treat records made under other library versions (torch minor, pyautoattack) as missing,
#: so they are recomputed under the running ones (``python -m msparse book --recompute-other-versions``)
RECOMPUTE_ENV = "MSPARSE_RECOMPUTE_OTHER_VERSIONS"


def default_store_dir() -> Path:
    """``$MSPARSE_RESULTS``, else ``<repo>/results`` from a checkout, else ``~/.cache/msparse/results``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    root = repo_root()
    if root is not None:
        return root / "results"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "msparse" / "results"


# --------------------------------------------------------------------------------------------------
# the store's own entries only: nothing under the root is followed through a link, read, replaced or removed
# unless it is a regular file (or a real folder) of the kind msparse writes there
# --------------------------------------------------------------------------------------------------

#: a record key as a file name (:func:`~msparse.evaluation.hashing.content_hash` gives hex digits; no separator or
#: dot, so it stays in its folder)
_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: the files msparse writes in ``partial/<key>/``: shards, shards moved aside, unfinished atomic-write temporaries
_SHARD_FILE = re.compile(r"\d{5}\.json(\.corrupt)?|\.\d{5}\.json\.\w+\.tmp")


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise InputError(f"a record key is a file name of letters, digits, '-' and '_' (a hex hash), got {key!r}")
    return key


def _what(p: Path) -> str | None:
    """What is at ``p``, without following a link: None (nothing), ``"file"`` (regular), ``"folder"``, or what else it
    is (``"a symbolic link (to ...)"``, ``"a named pipe"``, ...). :class:`~msparse.errors.StoreError` when ``p`` cannot
    be looked at (a name too long, no permission)."""
    try:
        m = os.lstat(p).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise StoreError(f"{p} cannot be looked at ({e.strerror or e}); pass another folder (--store DIR / "
                         "store=...)") from None
    if stat.S_ISREG(m):
        return "file"
    if stat.S_ISDIR(m):
        return "folder"
    if stat.S_ISLNK(m):
        try:
            return f"a symbolic link (to {os.readlink(p)})"
        except OSError:
            return "a symbolic link"
    return "a named pipe" if stat.S_ISFIFO(m) else "a socket" if stat.S_ISSOCK(m) else "a device or other special file"


def _unsafe(p: Path, what: str, want: str) -> StoreError:
    return StoreError(f"{p} is {what}, not a {want} msparse wrote; msparse neither follows nor changes it: move it "
                      "out of the results store (or pass another folder, --store DIR)")


def _read_text(p: Path) -> str:
    """The text of the regular file ``p``, opened without following a link (``O_NOFOLLOW``) or waiting on a pipe
    (``O_NONBLOCK``); :class:`~msparse.errors.StoreError` when ``p`` is anything else."""
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _unsafe(p, _what(p) or "a symbolic link", "file") from None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _unsafe(p, _what(p) or "not a regular file", "file")
        return f.read().decode("utf-8")


class Repaired(list):
    """What :meth:`Store.repair` did: the record files it moved aside (a list of paths, each now ``<file>.corrupt``),
    with ``failed``: ``(path, reason)`` of files that do not verify but could not be moved, and ``left``:
    ``(path, reason)`` of entries it does not touch (links and other non-regular entries, records of a newer
    msparse)."""

    def __init__(self):
        super().__init__()
        self.failed: list[tuple[Path, str]] = []
        self.left: list[tuple[Path, str]] = []



_LEGACY_CACHE: dict[str, tuple[int, dict[str, Path]]] = {}


class Store:
    """A folder of records; see the module docstring for the layout.

    >>> store = Store("results")          # or Store() for the default folder
    >>> rec = store.get(key)              # None if absent or corrupted (reading never changes a file)

    ``reuse_other_versions=False`` (default: True unless ``$MSPARSE_RECOMPUTE_OTHER_VERSIONS=1``) makes
    :meth:`get` ignore records computed under another torch minor or pyautoattack version, so callers
    recompute them under the running versions (and overwrite them).
    """

    def __init__(self, root: str | os.PathLike | None = None, *, reuse_other_versions: bool | None = None):
        if isinstance(root, str) and not root.strip():   # Path("") is the working folder: never a silent choice
            raise InputError("the results store is an empty name; pass a folder (--store DIR / store=...), or "
                             "leave it out for the default store")
        self.root = Path(root).expanduser() if root is not None else default_store_dir()
        try:
            st = os.stat(self.root)
        except FileNotFoundError:   # created by the first write
            st = None
        except OSError as e:        # a name too long, a file where a parent folder should be, no permission
            raise StoreError(f"the results store {str(self.root)[:120]} cannot be used ({e.strerror or e}); pass "
                             "another folder (--store DIR / store=...)") from None
        if st is not None and not stat.S_ISDIR(st.st_mode):   # listing it would say "no records"; writing fails
            raise StoreError(f"the results store {self.root} cannot be written or read: it is a file, not a folder; "
                             "pass another folder (--store DIR / store=...)")
        if reuse_other_versions is None:
            reuse_other_versions = os.environ.get(RECOMPUTE_ENV, "") not in ("1", "true", "yes")
        self.reuse_other_versions = reuse_other_versions

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # records --------------------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        return self.root / "records" / f"{_check_key(key)}.json"

    def _folder(self, *parts: str) -> bool:
        """Whether ``root/<parts>`` is a folder (False: it is missing); :class:`~msparse.errors.StoreError` when it,
        or a folder between it and the root, is a link or not a folder."""
        p = self.root
        for part in parts:
            p = p / part
            what = _what(p)
            if what is None:
                return False
            if what != "folder":
                raise _unsafe(p, what, "folder")
        return True

    def _file(self, p: Path, *parts: str) -> bool:
        """Whether ``p`` (in the folder ``root/<parts>``) is a regular file (False: it is missing);
        :class:`~msparse.errors.StoreError` when it, or that folder, is a link or anything else."""
        if not self._folder(*parts):
            return False
        what = _what(p)
        if what is None:
            return False
        if what != "file":
            raise _unsafe(p, what, "file")
        return True

    def read(self, key: str) -> dict | None:
        """The verified record for ``key``, None if there is none; the strict reader behind :meth:`get`.
        Raises :class:`~msparse.errors.CorruptRecord` when its file does not verify (JSON, checksum, key, schema
        newer than :data:`SCHEMA`, field types, numbers against flags: :func:`check_record`) and
        :class:`~msparse.errors.StoreError` when the file or ``records/`` is a link or not a regular file."""
        p = self.path(key)
        if self._file(p, "records"):
            return trusted(json.loads(_read_text(p)), key)
        legacy = self._legacy().get(key)
        if legacy is None:
            return None
        rec = self._read_legacy(legacy)
        return rec if rec is not None and rec["key"] == key else None

    def get(self, key: str) -> dict | None:
        """The verified record for ``key``; None if missing or corrupted (a warning names the file). Reading
        never renames, rewrites or deletes anything: a corrupted file is moved aside (``*.corrupt``) only by
        :meth:`put` when its record is recomputed, or by :meth:`repair`. A schema-1 record is served under its
        schema-2 key (see :func:`upgrade_record`). A record whose numbers disagree with its per-image flags is
        corrupted (the warning names the field, :func:`check_record`); one of a newer schema than :data:`SCHEMA`
        is refused by name; a link or other non-regular entry is neither followed nor read (:meth:`read`)."""
        try:
            rec = self.read(key)
        except NewerSchema as e:
            warnings.warn(f"msparse: {self.path(key)}: {e}; it is ignored here (and never overwritten)",
                          RuntimeWarning, stacklevel=2)
            return None
        except StoreError as e:
            warnings.warn(f"msparse: {e}; record {key} is treated as missing", RuntimeWarning, stacklevel=2)
            return None
        except (ValueError, OSError) as e:    # JSONDecodeError and CorruptRecord are ValueErrors
            warnings.warn(f"msparse: corrupted result file {self.path(key)} ({e}); it is ignored and will be "
                          "recomputed when needed (`python -m msparse results repair` moves such files aside)",
                          RuntimeWarning, stacklevel=2)
            return None
        if rec is None:
            return None
        if not self.reuse_other_versions and versions_differ(rec):
            return None
        return rec

    def _read_legacy(self, p: Path) -> dict | None:
        try:
            return upgrade_record(trusted(json.loads(_read_text(p)), p.stem))
        except (ValueError, OSError, KeyError) as e:
            warnings.warn(f"msparse: corrupted result file {p} ({e}); it is ignored (`python -m msparse results "
                          "repair` moves such files aside)", RuntimeWarning, stacklevel=3)
            return None

    def _legacy(self) -> dict[str, Path]:
        """``{schema-2 key: path}`` of the schema-1 files in ``records/`` (cached until the folder changes)."""
        d = self.root / "records"
        try:
            stamp = d.stat().st_mtime_ns
        except OSError:
            return {}
        hit = _LEGACY_CACHE.get(str(d))
        if hit is not None and hit[0] == stamp:
            return hit[1]
        index: dict[str, Path] = {}
        for p in sorted(d.glob("*.json")):
            try:
                doc = json.loads(_read_text(p))
            except (ValueError, OSError):
                continue
            spec = doc.get("spec") if isinstance(doc, dict) else None
            if isinstance(spec, dict) and any(f in spec for f in LEGACY_SPEC_FIELDS):
                index.setdefault(content_hash({k: v for k, v in spec.items()
                                               if k not in LEGACY_SPEC_FIELDS}), p)
        _LEGACY_CACHE[str(d)] = (stamp, index)
        return index

    def put(self, record: dict) -> Path:
        """Seal (checksum) and atomically write a record; returns its path.

        Refused with :class:`~msparse.errors.InputError` when its key is not the hash of its spec or its numbers
        do not follow from its flags (:func:`check_record`: what :meth:`get` would refuse is never written), and
        with :class:`~msparse.errors.StoreError` when ``records/`` or the record's file is a link or not a regular
        file, or the file holds a record of a newer schema (left as it is). A corrupted file being replaced is
        kept for inspection (``<file>.corrupt``)."""
        if "key" not in record or "spec" not in record:
            raise InputError("a record needs 'key' and 'spec'")
        if content_hash(record["spec"]) != record["key"]:
            raise InputError("record key is not the hash of its spec")
        try:
            check_record(record)
        except CorruptRecord as e:
            raise InputError(f"record {record['key']} cannot be stored: {e}") from None
        doc = seal({**{k: v for k, v in record.items() if k != "checksum"}, "schema": SCHEMA})
        p = self.path(record["key"])
        if self._file(p, "records"):
            try:
                trusted(json.loads(_read_text(p)), record["key"])
            except NewerSchema as e:
                raise StoreError(f"{p}: {e}; this msparse does not overwrite it (or pass another folder, "
                                 "--store DIR)") from None
            except (ValueError, OSError) as e:
                self._quarantine(p, e)
        atomic_write_text(p, json.dumps(doc, indent=1, sort_keys=True, default=_canon_default))
        return p

    def check_writable(self) -> None:
        """Raise :class:`~msparse.errors.StoreError` unless a record can be written here (checked before an
        evaluation starts, so a read-only or misplaced store fails at once, not after the first batch)."""
        d = self.root / "records"
        self._folder("records")   # a link or a file there: StoreError now, not after the evaluation
        # one probe name per call: workers checking one store at once must not remove each other's probe
        probe = d / f".write-check-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_text(probe, "")
            probe.unlink()
        except OSError as e:
            raise StoreError(f"the results store {self.root} cannot be written ({type(e).__name__}: "
                             f"{e.strerror or e}); pass another folder (--store DIR / store=...) or "
                             "--no-store (store=False)") from None

    def repair(self) -> Repaired:
        """Move every record file that does not verify aside (``<file>.corrupt``); returns the moved files as a
        :class:`Repaired` list, which also names the files that could not be moved (``failed``) and the entries left
        as they are (``left``: links and other non-regular entries, which are neither followed nor moved, and
        records of a newer schema). :class:`~msparse.errors.StoreError` when ``records/`` is a link or a file."""
        out = Repaired()
        if not self._folder("records"):
            return out
        d = self.root / "records"
        with os.scandir(d) as it:
            names = sorted(e.name for e in it if e.name.endswith(".json") and _KEY.fullmatch(e.name[:-5]))
        for name in names:
            p = d / name
            what = _what(p)
            if what is None:   # removed meanwhile
                continue
            if what != "file":
                out.left.append((p, f"it is {what}; msparse neither follows nor moves it"))
                continue
            try:
                trusted(json.loads(_read_text(p)), name[:-5])
                continue
            except NewerSchema as e:
                out.left.append((p, str(e)))
                continue
            except (ValueError, OSError) as e:
                why = self._quarantine(p, e)
            if why is None:
                out.append(p)
            else:
                out.failed.append((p, why))
        return out

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def keys(self) -> list[str]:
        """Keys of the stored records (schema-1 files under their schema-2 key). Only regular files count: a link or
        other non-regular entry in ``records/`` (or ``records/`` itself as a link) is named in a warning, never
        followed."""
        try:
            if not self._folder("records"):
                return []
        except StoreError as e:
            warnings.warn(f"msparse: {e}; the store lists no records", RuntimeWarning, stacklevel=2)
            return []
        d = self.root / "records"
        names, odd = set(), []
        with os.scandir(d) as it:
            for e in it:
                if e.name.endswith(".json") and _KEY.fullmatch(e.name[:-5]):
                    if e.is_file(follow_symlinks=False):
                        names.add(e.name[:-5])
                    else:
                        odd.append(e.name)
        if odd:
            odd.sort()
            warnings.warn(f"msparse: {len(odd)} entr{'y' if len(odd) == 1 else 'ies'} of {d} "
                          f"({', '.join(odd[:3])}{', ...' if len(odd) > 3 else ''}) are not regular files (a link, "
                          "a pipe, a folder); msparse neither follows nor reads them", RuntimeWarning, stacklevel=2)
        legacy = self._legacy()
        old = {p.stem for p in legacy.values()}
        return sorted((names - old) | set(legacy))

    def __iter__(self) -> Iterator[dict]:
        for k in self.keys():
            rec = self.get(k)
            if rec is not None:
                yield rec

    def __len__(self) -> int:
        return len(self.keys())

    def migrate(self, architecture: Callable[[dict], Mapping | str] | None = None) -> Migration:
        """Rewrite every record of an older schema as its schema-3 record, under its new key; returns a
        :class:`~msparse.evaluation.migration.Migration` (what was rewritten, from which key to which, and what was
        left and why). ``architecture(record)`` rebuilds the model a record names and checks its weights
        (:func:`msparse.evaluation.verify.record_architecture`); the rules are
        :func:`msparse.evaluation.migration.migrate`'s."""
        try:
            return migrate(self, architecture)
        finally:
            _LEGACY_CACHE.pop(str(self.root / "records"), None)

    # shards (per-batch resume state) ---------------------------------------------------------------
    def shard_dir(self, key: str) -> Path:
        return self.root / "partial" / _check_key(key)

    def put_shard(self, key: str, index: int, payload: dict) -> None:
        """Atomically write the state of batch ``index`` of the evaluation ``key``. When ``partial/``,
        ``partial/<key>`` or the shard's file is a link or not what msparse writes there, nothing is written and a
        warning says so: the evaluation goes on, only without resume state for that batch."""
        p = self.shard_dir(key) / f"{int(index):05d}.json"
        try:
            self._file(p, "partial", key)
        except StoreError as e:
            warnings.warn(f"msparse: {e}; the state of batch {int(index)} is not saved (an interrupted run "
                          "recomputes it)", RuntimeWarning, stacklevel=2)
            return
        doc = seal({"schema": SCHEMA, "kind": "shard", "key": key, "index": int(index),
                     "payload": payload})
        atomic_write_text(p, json.dumps(doc, sort_keys=True, default=_canon_default))

    def get_shard(self, key: str, index: int) -> dict | None:
        """The payload of a finished batch, or None if missing or corrupted (then moved aside). A link or
        non-regular entry (the shard, ``partial/<key>`` or ``partial/``) is neither followed nor read: a warning
        names it and the batch is recomputed."""
        p = self.shard_dir(key) / f"{int(index):05d}.json"
        try:
            if not self._file(p, "partial", key):
                return None
        except StoreError as e:
            warnings.warn(f"msparse: {e}; batch {int(index)} is not resumed from it", RuntimeWarning, stacklevel=2)
            return None
        try:
            doc = trusted(json.loads(_read_text(p)), key)
            if doc.get("index") != int(index):
                raise CorruptRecord("shard index mismatch")
            return doc["payload"]
        except (ValueError, OSError, KeyError) as e:
            self._quarantine(p, e)
            return None

    def drop_shards(self, key: str) -> None:
        """Remove the resume state of ``key`` (after its record is written): the regular files msparse writes in
        ``partial/<key>/`` (shards, shards moved aside, unfinished temporaries), then the folder once it is empty.
        Nothing else is removed or followed: when ``partial/`` or ``partial/<key>`` is a link or not a folder, or
        the folder holds anything else, that is left as it is and a warning names it. The files are removed
        through the folder opened without following a link, so a link swapped in meanwhile is not followed
        either."""
        d = self.shard_dir(key)
        try:
            if not self._folder("partial", key):
                return
            fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
        except OSError as e:   # StoreError (a link or a file there) included
            warnings.warn(f"msparse: {e}; the resume state of {key} is left as it is", RuntimeWarning, stacklevel=2)
            return
        kept = []
        try:
            with os.scandir(fd) as it:
                entries = list(it)
            for e in entries:
                if not (_SHARD_FILE.fullmatch(e.name) and e.is_file(follow_symlinks=False)):
                    kept.append(e.name)
                    continue
                try:
                    os.unlink(e.name, dir_fd=fd)
                except FileNotFoundError:
                    pass
                except OSError:
                    kept.append(e.name)
        finally:
            os.close(fd)
        if kept:
            kept.sort()
            warnings.warn(f"msparse: {d} holds {len(kept)} entr{'y' if len(kept) == 1 else 'ies'} that msparse did "
                          f"not write or could not remove ({', '.join(kept[:3])}{', ...' if len(kept) > 3 else ''}); "
                          "they and the folder are left as they are", RuntimeWarning, stacklevel=2)
            return
        try:
            os.rmdir(d)
        except OSError:
            pass

    def _quarantine(self, p: Path, err: Exception) -> str | None:
        """Move the corrupted regular file ``p`` aside to ``<p>.corrupt``; returns None when it was moved, else why
        it could not be (the warning says which happened)."""
        aside = p.with_name(p.name + ".corrupt")
        try:
            what = _what(aside)
            if what not in (None, "file"):
                raise _unsafe(aside, what, "file")
            os.replace(p, aside)
        except OSError as e:
            why = str(e) if isinstance(e, StoreError) else f"{type(e).__name__}: {e.strerror or e}"
            warnings.warn(f"msparse: corrupted result file {p} ({err}); it could NOT be moved aside to {aside.name} "
                          f"({why})", RuntimeWarning, stacklevel=3)
            return why
        warnings.warn(f"msparse: corrupted result file {p} ({err}); it will be recomputed "
                      f"(the bad file is kept as {aside.name})", RuntimeWarning, stacklevel=3)
        return None


def _canon_default(o):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
