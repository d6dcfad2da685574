"""The results store: content-hashed records, an atomic and resumable store, provenance.

A *record* is one evaluated point (one model configuration, one attack, one data subset). It is a JSON
object::

    {"schema": 2, "key": "<32 hex>", "spec": {...}, "result": {...}, "meta": {...},
     "provenance": {...}, "checksum": "<sha256>"}

* ``spec`` holds everything that determines the numbers (model weights, active sites with their
  α/centre/layout/backward/statistics, transfer source, attack and budget, data, seed, batch size);
  ``key = content_hash(spec)``. Library versions are *not* in the spec: they are provenance, and
  ``python -m msparse results verify`` checks that a record still reproduces under the running ones.
* ``result`` holds the numbers (counts, accuracies, Wilson intervals, per-example flags).
* ``meta`` holds human labels (model name, data source, statistics mode, tags); not part of the key.
* ``provenance`` says how the record was made (git commit, library versions, device, wall time).
* ``checksum`` covers all of the above; a record whose checksum or key does not match is treated as
  corrupted and recomputed.

Files live under a store root (default: ``<repo>/results`` when running from the repository,
``$MSPARSE_RESULTS`` if set)::

    <root>/records/<key>.json            finished records (commit these)
    <root>/partial/<key>/<i:05d>.json    per-batch shards of an unfinished evaluation (resume state)

Every write is atomic (:func:`msparse._io.atomic_write_text`: temporary file in the same folder, fsync,
``os.replace``). Intervals and paired tests are :mod:`msparse.evaluation.significance`'s.

Schema 1 records (written before library versions left the key: their ``spec`` carries
``"versions": {"torch": "<minor>", "pyautoattack": ...}``) are still read: :class:`Store` serves them
under their schema-2 key (:func:`upgrade_record`, results untouched), and :meth:`Store.migrate`
rewrites them once on disk (``python -m msparse results migrate``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .._device import device_name
from .._io import atomic_write_text
from ..errors import CorruptRecord, InputError

SCHEMA = 2
#: spec fields that schema 1 had in the key and schema 2 keeps in the provenance
LEGACY_SPEC_FIELDS = ("versions",)
ENV_VAR = "MSPARSE_RESULTS"

__all__ = [
    "Store", "load_records", "to_table", "content_hash", "tensor_hash", "data_hash", "model_checksum",
    "provenance", "versions", "default_store_dir", "flags_to_str", "str_to_flags", "upgrade_record",
    "record_versions", "versions_differ", "git_commit", "repo_root", "SCHEMA", "RECOMPUTE_ENV",
]


# --------------------------------------------------------------------------------------------------
# hashing
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# provenance
# --------------------------------------------------------------------------------------------------

def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception:
        return None


def versions() -> dict[str, str | None]:
    """Versions of the packages that matter for a number."""
    import torch
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("pyautoattack", "numpy", "msparse", "robustbench"):
        out[dist] = _version(dist)
    if out["msparse"] is None:   # running from a checkout that is not pip-installed
        from .. import __version__
        out["msparse"] = __version__
    return out


def repo_root() -> Path | None:
    """The repository root if this package runs from a checkout (has pyproject.toml and .git)."""
    here = Path(__file__).resolve().parents[2]   # msparse/evaluation/store.py -> the checkout
    if (here / "pyproject.toml").exists() or (here / ".git").exists():
        return here
    return None


def git_commit(path: Path | None = None) -> str | None:
    """``<commit>`` or ``<commit>-dirty`` of the checkout at ``path`` (None outside git)."""
    path = path or repo_root()
    if path is None:
        return None
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device=None, wall_s: float | None = None, **extra) -> dict[str, Any]:
    """Where and how a record was made: commit, versions, device, host OS, time, wall time."""
    out = {
        "commit": git_commit(),
        "versions": versions(),
        "device": device_name(device),
        "platform": platform.platform(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if wall_s is not None:
        out["wall_s"] = round(float(wall_s), 3)
    out.update(extra)
    return out


def _minor(v: str | None) -> str | None:
    """'2.15.0+cu132' -> '2.15' (None stays None)."""
    if not v:
        return None
    return ".".join(str(v).split("+")[0].split(".")[:2])


def record_versions(rec: Mapping) -> dict[str, str | None]:
    """The library versions a record was computed with: ``{"torch": "2.15.0+cu132", "pyautoattack": ...}``
    (from its provenance; a schema-1 record's key versions as the fallback)."""
    prov = (rec.get("provenance") or {}).get("versions") or {}
    legacy = {}
    for h in (rec.get("provenance") or {}).get("key_history") or []:
        legacy.update(h.get("versions") or {})
    legacy.update((rec.get("spec") or {}).get("versions") or {})
    return {d: prov.get(d) or legacy.get(d) for d in ("torch", "pyautoattack")}


def versions_differ(rec: Mapping, running: Mapping[str, str | None] | None = None) -> dict[str, tuple]:
    """``{library: (record's version, running version)}`` for torch (compared by minor version) and
    pyautoattack where the record was made under another version than the running one; empty if none."""
    running = running if running is not None else versions()
    out = {}
    for lib, have in record_versions(rec).items():
        now = running.get(lib)
        a, b = (_minor(have), _minor(now)) if lib == "torch" else (have, now)
        if have is not None and now is not None and a != b:
            out[lib] = (have, now)
    return out


def upgrade_record(doc: dict) -> dict:
    """A verified schema-1 record as a sealed schema-2 record: the library versions leave ``spec``
    (they stay in the provenance, and in ``provenance.key_history`` with the old key); ``key`` becomes
    the hash of the remaining spec; ``result`` and ``meta`` are unchanged. A schema-2 record is
    returned as it is."""
    spec = doc.get("spec") or {}
    if doc.get("schema", 1) >= 2 and not any(f in spec for f in LEGACY_SPEC_FIELDS):
        return doc
    new_spec = {k: v for k, v in spec.items() if k not in LEGACY_SPEC_FIELDS}
    prov = dict(doc.get("provenance") or {})
    hist = list(prov.get("key_history") or [])
    hist.append({"schema": doc.get("schema", 1), "key": doc["key"],
                 **{f: spec[f] for f in LEGACY_SPEC_FIELDS if f in spec}})
    prov["key_history"] = hist
    body = {k: v for k, v in doc.items() if k not in ("checksum", "schema", "key", "spec", "provenance")}
    return _seal({"schema": SCHEMA, "key": content_hash(new_spec), "spec": new_spec, **body,
                  "provenance": prov})


# --------------------------------------------------------------------------------------------------
# store
# --------------------------------------------------------------------------------------------------

def default_store_dir() -> Path:
    """``$MSPARSE_RESULTS``, else ``<repo>/results`` from a checkout, else ``~/.cache/msparse/results``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    root = repo_root()
    if root is not None:
        return root / "results"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "msparse" / "results"


def _seal(doc: dict) -> dict:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    doc = dict(body)
    doc["checksum"] = content_hash(body, length=64)
    return doc


def _verify(doc: Any, key: str | None = None) -> dict:
    if not isinstance(doc, dict) or "checksum" not in doc:
        raise CorruptRecord("not a record (no checksum)")
    body = {k: v for k, v in doc.items() if k != "checksum"}
    if content_hash(body, length=64) != doc["checksum"]:
        raise CorruptRecord("checksum mismatch")
    if key is not None and doc.get("key") != key:
        raise CorruptRecord(f"key mismatch ({doc.get('key')} != {key})")
    if "spec" in doc and doc.get("kind", "record") == "record":
        if content_hash(doc["spec"]) != doc.get("key"):
            raise CorruptRecord("key does not match the hash of its spec")
    return doc


#: set to 1 to treat records made under other library versions (torch minor, pyautoattack) as missing,
#: so they are recomputed under the running ones (``python -m msparse book --recompute-other-versions``)
RECOMPUTE_ENV = "MSPARSE_RECOMPUTE_OTHER_VERSIONS"

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
        self.root = Path(root).expanduser() if root is not None else default_store_dir()
        if self.root.is_file():   # listing it would say "no records"; writing to it fails later
            from ..errors import StoreError
            raise StoreError(f"the results store {self.root} cannot be written or read: it is a file, not a folder; "
                             "pass another folder (--store DIR / store=...)")
        if reuse_other_versions is None:
            reuse_other_versions = os.environ.get(RECOMPUTE_ENV, "") not in ("1", "true", "yes")
        self.reuse_other_versions = reuse_other_versions

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # records --------------------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        return self.root / "records" / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The verified record for ``key``; None if missing or corrupted (a warning names the file). Reading
        never renames, rewrites or deletes anything: a corrupted file is moved aside (``*.corrupt``) only by
        :meth:`put` when its record is recomputed, or by :meth:`repair`. A schema-1 record is served under its
        schema-2 key (see :func:`upgrade_record`)."""
        p = self.path(key)
        if p.exists():
            try:
                rec = _verify(json.loads(p.read_text(encoding="utf-8")), key)
            except (ValueError, OSError) as e:    # JSONDecodeError and CorruptRecord are ValueErrors
                warnings.warn(f"msparse: corrupted result file {p} ({e}); it is ignored and will be recomputed "
                              "when needed (`python -m msparse results repair` moves such files aside)",
                              RuntimeWarning, stacklevel=2)
                return None
        else:
            legacy = self._legacy().get(key)
            if legacy is None:
                return None
            rec = self._read_legacy(legacy)
            if rec is None or rec["key"] != key:
                return None
        if not self.reuse_other_versions and versions_differ(rec):
            return None
        return rec

    def _read_legacy(self, p: Path) -> dict | None:
        try:
            return upgrade_record(_verify(json.loads(p.read_text(encoding="utf-8")), p.stem))
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
                doc = json.loads(p.read_text(encoding="utf-8"))
            except (ValueError, OSError):
                continue
            spec = doc.get("spec") if isinstance(doc, dict) else None
            if isinstance(spec, dict) and any(f in spec for f in LEGACY_SPEC_FIELDS):
                index.setdefault(content_hash({k: v for k, v in spec.items()
                                               if k not in LEGACY_SPEC_FIELDS}), p)
        _LEGACY_CACHE[str(d)] = (stamp, index)
        return index

    def put(self, record: dict) -> Path:
        """Seal (checksum) and atomically write a record; returns its path."""
        if "key" not in record or "spec" not in record:
            raise InputError("a record needs 'key' and 'spec'")
        if content_hash(record["spec"]) != record["key"]:
            raise InputError("record key is not the hash of its spec")
        doc = _seal({**{k: v for k, v in record.items() if k != "checksum"}, "schema": SCHEMA})
        p = self.path(record["key"])
        if p.exists():   # a corrupted file being replaced is kept for inspection
            try:
                _verify(json.loads(p.read_text(encoding="utf-8")), record["key"])
            except (ValueError, OSError) as e:
                self._quarantine(p, e)
        atomic_write_text(p, json.dumps(doc, indent=1, sort_keys=True, default=_canon_default))
        return p

    def check_writable(self) -> None:
        """Raise :class:`~msparse.errors.StoreError` unless a record can be written here (checked before an
        evaluation starts, so a read-only or misplaced store fails at once, not after the first batch)."""
        from ..errors import StoreError
        d = self.root / "records"
        try:
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_text(d / ".write-check", "")
            (d / ".write-check").unlink()
        except OSError as e:
            raise StoreError(f"the results store {self.root} cannot be written ({type(e).__name__}: "
                             f"{e.strerror or e}); pass another folder (--store DIR / store=...) or "
                             "--no-store (store=False)") from None

    def repair(self) -> list[Path]:
        """Move every record file that does not verify aside (``<file>.corrupt``); returns the moved files."""
        moved = []
        d = self.root / "records"
        for p in sorted(d.glob("*.json")) if d.exists() else []:
            try:
                _verify(json.loads(p.read_text(encoding="utf-8")), p.stem)
                continue
            except (ValueError, OSError) as e:
                self._quarantine(p, e)
            moved.append(p)
        return moved

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def keys(self) -> list[str]:
        """Keys of the stored records (schema-1 files under their schema-2 key)."""
        d = self.root / "records"
        if not d.exists():
            return []
        legacy = self._legacy()
        old = {p.stem for p in legacy.values()}
        return sorted({p.stem for p in d.glob("*.json") if p.stem not in old} | set(legacy))

    def __iter__(self) -> Iterator[dict]:
        for k in self.keys():
            rec = self.get(k)
            if rec is not None:
                yield rec

    def __len__(self) -> int:
        return len(self.keys())

    def migrate(self) -> dict[str, int]:
        """Rewrite every schema-1 file as its schema-2 record (results, meta and provenance kept; the old
        key goes to ``provenance.key_history``); returns counts. Where a schema-2 record already exists
        under the new key, it is kept and the old file removed."""
        done = {"migrated": 0, "already_present": 0, "unreadable": 0}
        for new_key, p in sorted(self._legacy().items()):
            rec = self._read_legacy(p)
            if rec is None:
                done["unreadable"] += 1
                continue
            if self.path(new_key).exists():
                done["already_present"] += 1
            else:
                self.put(rec)
                done["migrated"] += 1
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        _LEGACY_CACHE.pop(str(self.root / "records"), None)
        return done

    # shards (per-batch resume state) ---------------------------------------------------------------
    def shard_dir(self, key: str) -> Path:
        return self.root / "partial" / key

    def put_shard(self, key: str, index: int, payload: dict) -> None:
        """Atomically write the state of batch ``index`` of the evaluation ``key``."""
        doc = _seal({"schema": SCHEMA, "kind": "shard", "key": key, "index": int(index),
                     "payload": payload})
        atomic_write_text(self.shard_dir(key) / f"{int(index):05d}.json",
                           json.dumps(doc, sort_keys=True, default=_canon_default))

    def get_shard(self, key: str, index: int) -> dict | None:
        """The payload of a finished batch, or None if missing or corrupted (then removed)."""
        p = self.shard_dir(key) / f"{int(index):05d}.json"
        if not p.exists():
            return None
        try:
            doc = _verify(json.loads(p.read_text(encoding="utf-8")), key)
            if doc.get("index") != int(index):
                raise CorruptRecord("shard index mismatch")
            return doc["payload"]
        except (ValueError, OSError, KeyError) as e:
            self._quarantine(p, e)
            return None

    def drop_shards(self, key: str) -> None:
        """Remove the resume state of ``key`` (after its record is written)."""
        d = self.shard_dir(key)
        if not d.exists():
            return
        for p in d.iterdir():
            try:
                p.unlink()
            except OSError:
                pass
        try:
            d.rmdir()
        except OSError:
            pass

    def _quarantine(self, p: Path, err: Exception) -> None:
        warnings.warn(f"msparse: corrupted result file {p} ({err}); it will be recomputed "
                      f"(the bad file is kept as {p.name}.corrupt)", RuntimeWarning, stacklevel=3)
        try:
            os.replace(p, p.with_name(p.name + ".corrupt"))
        except OSError:
            pass


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


# --------------------------------------------------------------------------------------------------
# reading records back (figures and tables without recomputation)
# --------------------------------------------------------------------------------------------------

def _row(rec: dict) -> dict[str, Any]:
    spec, res, meta, prov = rec["spec"], rec["result"], rec.get("meta", {}), rec.get("provenance", {})
    sites = spec.get("sites") or {}
    alphas = sorted({s["alpha"] for s in sites.values()}) if sites else [0.0]
    atk = spec.get("attack", {})
    row = {
        "key": rec["key"],
        "model": meta.get("model"),
        "data": meta.get("data"),
        "stats": meta.get("stats"),
        # a binarization-test record (msparse.evaluation.binarize) is listed as "binarization:<attack>"; its
        # "robust" column is the pass rate over valid samples, and it has no clean accuracy
        "attack": f"{spec['kind']}:{atk.get('name')}" if spec.get("kind") else atk.get("name"),
        "norm": atk.get("norm"),
        "eps": atk.get("eps"),
        "alpha": alphas[0] if len(alphas) == 1 else "mixed",
        "n_sites": len(sites),
        "n": res.get("n"),
        "clean": res.get("clean_acc"),
        "clean_lo": (res.get("clean_ci") or [None, None])[0],
        "clean_hi": (res.get("clean_ci") or [None, None])[1],
        "robust": res.get("robust_acc", res.get("pass_rate")),
        "robust_lo": (res.get("robust_ci") or [None, None])[0],
        "robust_hi": (res.get("robust_ci") or [None, None])[1],
        "seed": spec.get("seed"),
        "torch": record_versions(rec).get("torch"),
        "device": prov.get("device"),
        "wall_s": prov.get("wall_s"),
        "commit": prov.get("commit"),
    }
    for k, v in (meta.get("tags") or {}).items():
        row.setdefault(k, v)
    return row


def _matches(row: dict, rec: dict, where: Mapping[str, Any]) -> bool:
    for k, want in where.items():
        have = row.get(k, rec.get("meta", {}).get(k, (rec.get("meta", {}).get("tags") or {}).get(k)))
        if callable(want):
            if not want(have):
                return False
        elif isinstance(want, (list, tuple, set, frozenset)):
            if have not in want:
                return False
        elif isinstance(want, float) and isinstance(have, (int, float)):
            if not math.isclose(have, want, rel_tol=1e-6, abs_tol=1e-9):
                return False
        elif have != want:
            return False
    return True


def load_records(store: Store | str | os.PathLike | None = None, **where) -> list[dict]:
    """Records of a store, filtered by row fields (see :func:`to_table`), meta fields or tags.

    A filter value may be a value, a list of accepted values, or a predicate:
    ``load_records(attack="apgd-ce", model="Peng2023Robust", alpha=lambda a: a != "mixed")``.
    """
    st = store if isinstance(store, Store) else Store(store)
    out = []
    for rec in st:
        if _matches(_row(rec), rec, where):
            out.append(rec)
    return out


def to_table(records: Iterable[dict], columns: Sequence[str] | None = None):
    """One row per record, as a pandas DataFrame.

    Columns: key, model, data, stats, attack, norm, eps, alpha ("mixed" when sites differ), n_sites,
    n, clean, clean_lo, clean_hi, robust, robust_lo, robust_hi, seed, torch (the version the record was
    computed with), device, wall_s, commit, plus tags.
    Accuracies are fractions in [0, 1].
    """
    rows = [_row(r) for r in records]
    if columns is not None:
        rows = [{c: r.get(c) for c in columns} for r in rows]
    import pandas as pd

    return pd.DataFrame(rows, columns=list(columns) if columns is not None else None)
