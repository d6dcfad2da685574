"""The results store: content-hashed records, an atomic and resumable store, provenance.

A *record* is one evaluated point (one model configuration, one attack, one data subset). It is a JSON
object::

    {"schema": 3, "key": "<32 hex>", "spec": {...}, "result": {...}, "meta": {...},
     "provenance": {...}, "checksum": "<sha256>"}

* ``spec`` holds everything that determines the numbers (model weights ``model`` and architecture fingerprint
  ``arch``, active sites with their α/centre/layout/backward/statistics, transfer source, attack and budget,
  data, seed, batch size);
  ``key = content_hash(spec)``. Library versions are *not* in the spec: they are provenance, and
  ``python -m msparse results verify`` checks that a record still reproduces under the running ones.
* ``result`` holds the numbers (counts, accuracies, Wilson intervals, per-example flags).
* ``meta`` holds human labels (model name, data source, statistics mode, tags); not part of the key.
* ``provenance`` says how the record was made (git commit, library versions, device, wall time).
* ``checksum`` covers all of the above; a record whose checksum or key does not match is treated as
  corrupted and recomputed. So is one whose displayed numbers (n, counts, accuracies, Wilson intervals,
  per-component accuracies, a binarization test's pass rate) do not follow from its per-image flags, or whose
  fields have the wrong JSON type (:func:`check_record`, on every read): an edited and re-sealed record is caught
  too. A record of a schema newer than :data:`SCHEMA` is refused by name and never overwritten.

Files live under a store root (default: ``<repo>/results`` when running from the repository,
``$MSPARSE_RESULTS`` if set)::

    <root>/records/<key>.json            finished records (commit these)
    <root>/partial/<key>/<i:05d>.json    per-batch shards of an unfinished evaluation (resume state)

Every write is atomic (:func:`msparse._io.atomic_write_text`: temporary file in the same folder, fsync,
``os.replace``). The store only acts on its own entries: a link or any other non-regular entry (at ``records/``,
``partial/``, ``partial/<key>`` or a file in them) is never followed, read, replaced or removed, only named in a
warning (or a one-line :class:`~msparse.errors.StoreError` where a write cannot go on), and clearing a finished
evaluation's resume state removes only the shard files msparse writes. Intervals and paired tests are :mod:`msparse.evaluation.significance`'s.

Older records are still read. Schema 1 (written before library versions left the key: their ``spec`` carries
``"versions": {"torch": "<minor>", "pyautoattack": ...}``) is served under its schema-2 key (:func:`upgrade_record`,
results untouched). Schema 2 (written before the key named the architecture: its ``spec`` has the weights checksum
but no ``arch``, so two models with the same weights and another forward shared records) is served under its own
key, which no evaluation computes any more. :meth:`Store.migrate` (``python -m msparse results migrate``) rewrites
both as schema 3 under their new key, after rebuilding the model each names and checking its weights, and keeps
every old key in ``provenance.key_history``.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import platform
import re
import stat
import string
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .._device import device_name
from .._io import atomic_write_text
from ..errors import CorruptRecord, InputError, StoreError

SCHEMA = 3
#: spec fields that schema 1 had in the key and schema 2 keeps in the provenance
LEGACY_SPEC_FIELDS = ("versions",)
#: the spec field schema 3 added: the host's architecture fingerprint (:mod:`msparse.evaluation.fingerprint`); a
#: transfer source's description (``spec["source"]``) carries its own
ARCH_FIELD = "arch"
#: labels (``meta.tags``) that cite another record by its key; :meth:`Store.migrate` keeps them current
KEY_TAGS = ("rerun_of",)
ENV_VAR = "MSPARSE_RESULTS"

__all__ = [
    "Store", "load_records", "to_table", "content_hash", "tensor_hash", "data_hash", "model_checksum",
    "provenance", "versions", "default_store_dir", "flags_to_str", "str_to_flags", "upgrade_record",
    "record_versions", "versions_differ", "git_commit", "repo_root", "SCHEMA", "RECOMPUTE_ENV",
    "Migration", "has_architecture", "ARCH_FIELD", "KEY_TAGS", "check_record", "Repaired",
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
        from .._version import __version__
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


def has_architecture(spec: Mapping) -> bool:
    """Does a record's ``spec`` name its model's architecture (schema 3), not only its weights?"""
    return ARCH_FIELD in spec and not any(f in spec for f in LEGACY_SPEC_FIELDS)


def _rekeyed(doc: dict, spec: dict, schema: int, **history) -> dict:
    """``doc`` sealed under ``spec`` (its new key) as ``schema``; the old key (and ``history``) appended to
    ``provenance.key_history``; ``result`` and ``meta`` untouched."""
    prov = dict(doc.get("provenance") or {})
    prov["key_history"] = [*(prov.get("key_history") or []),
                           {"schema": doc.get("schema", 1), "key": doc["key"], **history}]
    body = {k: v for k, v in doc.items() if k not in ("checksum", "schema", "key", "spec", "provenance")}
    return _seal({"schema": schema, "key": content_hash(spec), "spec": spec, **body, "provenance": prov})


def upgrade_record(doc: dict, arch: str | None = None, source_arch: str | None = None) -> dict:
    """A verified record of an older schema, as far forward as the information given takes it (results, meta and
    the rest of the provenance unchanged; every key it had is appended to ``provenance.key_history``):

    * schema 1 -> 2: the library versions leave ``spec`` (they stay in the provenance and in the key history);
    * schema 2 -> 3, only with ``arch``: ``spec["arch"] = arch``, the architecture fingerprint of the model the
      record was computed with (:func:`msparse.evaluation.fingerprint.fingerprint`), and, for a record with a
      transfer source, ``spec["source"]["arch"] = source_arch``. Nothing in the record says what the architecture
      was: the caller rebuilds the model and checks its weights against ``spec["model"]``
      (:meth:`Store.migrate`, :func:`msparse.evaluation.verify.record_architecture`).

    ``key`` becomes the hash of the new spec. A schema-3 record is returned as it is."""
    spec = doc.get("spec") or {}
    if doc.get("schema", 1) >= 2 and not any(f in spec for f in LEGACY_SPEC_FIELDS) and \
            (ARCH_FIELD in spec or arch is None):
        return doc
    if any(f in spec for f in LEGACY_SPEC_FIELDS):
        spec = {k: v for k, v in spec.items() if k not in LEGACY_SPEC_FIELDS}
        doc = _rekeyed(doc, spec, SCHEMA if ARCH_FIELD in spec else 2,
                       **{f: doc["spec"][f] for f in LEGACY_SPEC_FIELDS if f in doc["spec"]})
    if arch is None or ARCH_FIELD in spec:
        return doc
    new = {**spec, ARCH_FIELD: arch}
    if isinstance(spec.get("source"), Mapping):
        if source_arch is None:
            raise InputError(f"record {doc['key']} has a transfer source: upgrading it needs the source's "
                             "architecture fingerprint too (source_arch=...)")
        new["source"] = {**spec["source"], ARCH_FIELD: source_arch}
    return _rekeyed(doc, new, SCHEMA)


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


class _NewerSchema(CorruptRecord):
    """A record written by a newer msparse (its schema is above :data:`SCHEMA`): refused by name, never read as
    the current schema, never moved aside or overwritten."""


def _schema_check(doc: dict, key: str | None) -> None:
    s = doc.get("schema", 1)
    if not _is_int(s) or s < 1:
        raise CorruptRecord(f"schema is {_describe(s)}, not a schema number")
    if s > SCHEMA:
        raise _NewerSchema(f"record {doc.get('key', key)} has schema {s}, newer than this msparse ({SCHEMA}): "
                           "upgrade msparse to read it")


def _verify(doc: Any, key: str | None = None) -> dict:
    """``doc`` if it is a record (or shard) this msparse can trust, else :class:`~msparse.errors.CorruptRecord`
    saying why: not a JSON object with a checksum, a schema newer than :data:`SCHEMA`, checksum or key mismatch,
    a field of the wrong type, or (records) a number that its per-image flags do not give
    (:func:`check_record`)."""
    if not isinstance(doc, dict) or "checksum" not in doc:
        raise CorruptRecord("not a record (no checksum)")
    _schema_check(doc, key)
    body = {k: v for k, v in doc.items() if k != "checksum"}
    if content_hash(body, length=64) != doc["checksum"]:
        raise CorruptRecord("checksum mismatch")
    if key is not None and doc.get("key") != key:
        raise CorruptRecord(f"key mismatch ({doc.get('key')} != {key})")
    if doc.get("kind", "record") == "record":
        if not isinstance(doc.get("spec"), dict):
            raise CorruptRecord(f"spec is {_describe(doc.get('spec'))}, not an object")
        if content_hash(doc["spec"]) != doc.get("key"):
            raise CorruptRecord("key does not match the hash of its spec")
        check_record(doc)
    return doc


# --------------------------------------------------------------------------------------------------
# what readers see: field types, and every displayed number against the per-image flags it comes from
# --------------------------------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _describe(v) -> str:
    """A JSON value named for a message: ``a string ('4')``, ``a list``, ``null``."""
    name = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a whole number", float: "a number"}.get(type(v), type(v).__name__)
    if isinstance(v, (dict, list)) or v is None:
        return name
    text = repr(v)
    return f"{name} ({text[:24]}{'...' if len(text) > 24 else ''})"


_STR, _OPT_STR = (lambda v: isinstance(v, str), "a string"), (lambda v: v is None or isinstance(v, str), "a string")
_INT, _NUM = (_is_int, "a whole number"), (_is_num, "a number")
_OBJ, _LIST = (lambda v: isinstance(v, dict), "an object"), (lambda v: isinstance(v, list), "a list")
_PAIR = (lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_num, v)), "a list of two numbers")

#: the fields readers index (listings, tables, the book, verify, rerun) and the JSON type each must have when present
_FIELDS: dict[str, dict[str, tuple]] = {
    "": {"key": _STR, "result": _OBJ, "meta": _OBJ, "provenance": _OBJ},
    "spec": {"kind": _STR, "attack": _OBJ, "sites": _OBJ, "data": _OBJ, "seed": _INT, "batch_size": _INT,
             "model": _STR},
    "spec.attack": {"name": _STR, "eps": _NUM, "norm": _STR, "n_iter": _INT, "n_restarts": _INT,
                    "n_queries": _INT},
    "spec.data": {"n": _INT, "hash": _STR},
    "meta": {"model": _OPT_STR, "data": _OPT_STR, "stats": _OPT_STR, "tags": _OBJ},
    "provenance": {"versions": _OBJ, "key_history": _LIST, "device": _OPT_STR, "commit": _OPT_STR,
                   "wall_s": (lambda v: v is None or _is_num(v), "a number")},
    "result": {"n": _INT, "clean": _INT, "robust": _INT, "clean_acc": _NUM, "robust_acc": _NUM,
               "clean_ci": _PAIR, "robust_ci": _PAIR, "clean_flags": _STR, "robust_flags": _STR,
               "components": _OBJ, "flags": _STR, "valid": _INT, "passed": _INT,
               "pass_rate": (lambda v: v is None or _is_num(v), "a number")},
}
_SITE = {"alpha": _NUM, "centre": _STR, "backward": _STR, "layout": _STR, "stats": _STR}
_COMPONENT = {"attacks": (lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v), "a list of names"),
              "outcome": _STR, "robust": _INT, "robust_acc": _NUM, "after": _OBJ}


def _check_fields(obj: dict, fields: dict[str, tuple], where: str) -> None:
    for name, (ok, what) in fields.items():
        if name in obj and not ok(obj[name]):
            raise CorruptRecord(f"{where}{name} is {_describe(obj[name])}, not {what}")


def _check_types(doc: dict) -> None:
    for where, fields in _FIELDS.items():
        obj = doc
        for part in where.split(".") if where else ():
            obj = obj.get(part, {})
        _check_fields(obj, fields, f"{where}." if where else "")
    for s, site in doc["spec"].get("sites", {}).items():
        if not isinstance(site, dict):
            raise CorruptRecord(f"spec.sites[{s!r}] is {_describe(site)}, not an object")
        _check_fields(site, _SITE, f"spec.sites[{s!r}].")
    for name, h in enumerate(doc.get("provenance", {}).get("key_history", [])):
        if not isinstance(h, dict):
            raise CorruptRecord(f"provenance.key_history[{name}] is {_describe(h)}, not an object")


def _agree(field: str, have, want, source: str) -> None:
    """``have`` (a stored number) equals ``want`` (what ``source`` give), else CorruptRecord naming the field."""
    if isinstance(want, int):
        ok = _is_int(have) and have == want
    elif isinstance(want, float):
        ok = _is_num(have) and math.isclose(have, want, rel_tol=1e-9, abs_tol=1e-12)
    elif isinstance(want, (tuple, list)):
        ok = (isinstance(have, list) and len(have) == len(want) and all(map(_is_num, have))
              and all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in zip(have, want)))
        want = [round(w, 6) for w in want]
    else:
        ok = have is want
    if not ok:
        shown = have if _is_num(have) or have is None else _describe(have)
        raise CorruptRecord(f"{field} is {shown} but {source} give {want}")


_NOT_ROBUST = str.maketrans({ch: "0" for ch in string.ascii_lowercase})   # outcome -> '1' where robust
_CLEAN = str.maketrans({ch: "1" for ch in string.ascii_lowercase})        # outcome -> '1' where clean-correct


def _check_evaluation(spec: dict, res: dict) -> None:
    """An evaluation record (:func:`msparse.evaluation.evaluate._merge`, :func:`msparse.evaluation.shards.merge_records`):
    ``n``, the clean and robust counts, accuracies and Wilson intervals come from ``clean_flags``/``robust_flags``;
    every component's ``outcome`` ("0" clean-wrong, "1" robust, letter j broken by its j-th attack) marks the same
    clean images, gives its ``robust``/``robust_acc``/``after``, and the robust flags are the clean flags and-ed
    with every component's robust images (no components, as for ``attack="none"``: the clean flags); a result
    without ``components`` only needs its robust images clean-correct."""
    from .significance import wilson

    for name in ("n", "clean", "robust", "clean_acc", "robust_acc", "clean_ci", "robust_ci", "clean_flags",
                 "robust_flags"):
        if name not in res:
            raise CorruptRecord(f"result.{name} is missing")
    cf, rf, n = res["clean_flags"], res["robust_flags"], len(res["clean_flags"])
    for name, f in (("clean_flags", cf), ("robust_flags", rf)):
        if f.strip("01"):
            raise CorruptRecord(f"result.{name} holds characters other than 0 and 1")
    if n == 0:
        raise CorruptRecord("result.clean_flags is empty (an evaluation of no images)")
    _agree("result.n", res["n"], n, "its clean_flags")
    _agree("result.n", res["n"], len(rf), "its robust_flags")
    if "n" in spec.get("data", {}):
        _agree("result.n", res["n"], spec["data"]["n"], "spec.data.n")
    for which, f in (("clean", cf), ("robust", rf)):
        k = f.count("1")
        _agree(f"result.{which}", res[which], k, f"its {which}_flags")
        _agree(f"result.{which}_acc", res[f"{which}_acc"], k / n, f"its {which}_flags ({k} of {n})")
        _agree(f"result.{which}_ci", res[f"{which}_ci"], wilson(k, n), f"the Wilson interval of its {which}_flags")
    robust = clean = int(cf, 2)
    for name, c in res.get("components", {}).items():
        where = f"result.components[{name!r}]"
        if not isinstance(c, dict):
            raise CorruptRecord(f"{where} is {_describe(c)}, not an object")
        _check_fields(c, _COMPONENT, f"{where}.")
        for part in ("attacks", "outcome"):
            if part not in c:
                raise CorruptRecord(f"{where}.{part} is missing")
        out, attacks = c["outcome"], c["attacks"]
        if len(out) != n or not set(out) <= set("01" + string.ascii_lowercase[:len(attacks)]):
            raise CorruptRecord(f"{where}.outcome is not one of 0, 1 or an attack's letter per image")
        if out.translate(_CLEAN) != cf:
            raise CorruptRecord(f"{where}.outcome marks other images clean-correct than result.clean_flags")
        robust &= int(out.translate(_NOT_ROBUST), 2)
        k = out.count("1")
        _agree(f"{where}.robust", c.get("robust"), k, "its outcome")
        _agree(f"{where}.robust_acc", c.get("robust_acc"), k / n, f"its outcome ({k} of {n})")
        counts = {ch: out.count(ch) for ch in set(out) - {"0", "1"}}
        after = {}
        for j, a in enumerate(attacks):   # as msparse.evaluation.evaluate._after
            after[a] = (k + sum(v for ch, v in counts.items() if ord(ch) - 97 > j)) / n
        have = c.get("after")
        if not isinstance(have, dict) or set(have) != set(after):
            raise CorruptRecord(f"{where}.after does not name its attacks {attacks}")
        for a, v in after.items():
            _agree(f"{where}.after[{a!r}]", have[a], v, "its outcome")
    if "components" not in res:   # nothing to derive them from: robust images are at least clean-correct
        if int(rf, 2) & ~clean:
            raise CorruptRecord("result.robust_flags mark images robust that result.clean_flags mark wrong")
    elif int(rf, 2) != robust:
        raise CorruptRecord("result.robust_flags are not the clean flags and-ed with every component's robust images")


def _check_binarization(spec: dict, res: dict) -> None:
    """A binarization record (:mod:`msparse.evaluation.binarize`): ``n``, ``valid``, ``passed`` and ``pass_rate``
    come from ``flags`` ("1" passed, "0" failed, "-" invalid)."""
    for name in ("n", "valid", "passed", "pass_rate", "flags"):
        if name not in res:
            raise CorruptRecord(f"result.{name} is missing")
    f = res["flags"]
    if f.strip("01-"):
        raise CorruptRecord("result.flags holds characters other than 0, 1 and -")
    valid, passed = len(f) - f.count("-"), f.count("1")
    _agree("result.n", res["n"], len(f), "its flags")
    if "n" in spec.get("data", {}):
        _agree("result.n", res["n"], spec["data"]["n"], "spec.data.n")
    _agree("result.valid", res["valid"], valid, "its flags")
    _agree("result.passed", res["passed"], passed, "its flags")
    _agree("result.pass_rate", res["pass_rate"], passed / valid if valid else None,
           f"its flags ({passed} of {valid} valid)")


def check_record(doc: Mapping) -> None:
    """Raise :class:`~msparse.errors.CorruptRecord` naming the first field of record ``doc`` that readers could not
    trust: a field of the wrong JSON type (:data:`_FIELDS`), or a displayed number that disagrees with the
    per-image flags it is computed from — ``n``, clean/robust counts, accuracies, Wilson intervals and per-component
    accuracies of an evaluation record (``spec`` has an ``attack``), ``n``/``valid``/``passed``/``pass_rate`` of a
    binarization record. Costs a few string scans per record (no recomputation). Run on every read
    (:meth:`Store.get`) and write (:meth:`Store.put`): a record edited and re-sealed with a new checksum is still
    refused when its numbers do not follow from its flags."""
    if not isinstance(doc, Mapping):
        raise CorruptRecord(f"not a record ({_describe(doc)}, not an object)")
    if not isinstance(doc.get("spec"), dict):
        raise CorruptRecord(f"spec is {_describe(doc.get('spec'))}, not an object")
    if "result" not in doc:
        raise CorruptRecord("result is missing")
    _check_types(doc)
    spec, res = doc["spec"], doc["result"]
    if spec.get("kind") == "binarization":
        _check_binarization(spec, res)
    elif spec.get("kind") is None and ("attack" in spec or "clean_flags" in res or "robust_flags" in res):
        _check_evaluation(spec, res)


# --------------------------------------------------------------------------------------------------
# the store's own entries only: nothing under the root is followed through a link, read, replaced or removed
# unless it is a regular file (or a real folder) of the kind msparse writes there
# --------------------------------------------------------------------------------------------------

#: a record key as a file name (:func:`content_hash` gives hex digits; no separator or dot, so it stays in its folder)
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


#: set to 1 to treat records made under other library versions (torch minor, pyautoattack) as missing,
#: so they are recomputed under the running ones (``python -m msparse book --recompute-other-versions``)
RECOMPUTE_ENV = "MSPARSE_RECOMPUTE_OTHER_VERSIONS"

_LEGACY_CACHE: dict[str, tuple[int, dict[str, Path]]] = {}


@dataclass
class Migration:
    """What :meth:`Store.migrate` did. Keys are full record keys.

    ``migrated``/``already_present``: ``(old key, new key)`` of records rewritten under their new key, or whose
    new key already held a verified record with the identical result (the old file removed in both cases);
    ``current``: records that were at schema 3 already; ``not_rebuilt``: ``(key, meta.model, reason)`` of records
    whose model could not be rebuilt here (left as they are); ``conflicts``: ``(old key, new key)`` where the new
    key holds a verified record with another result (both kept); ``unreadable``: ``(file name, reason)`` of files
    that do not verify (left as they are; ``results repair`` moves them aside); ``relabelled``: keys of records
    whose labels cited another record by a key it no longer has (``meta.tags.rerun_of``), now by its current key.
    """
    migrated: list = field(default_factory=list)
    already_present: list = field(default_factory=list)
    current: int = 0
    not_rebuilt: list = field(default_factory=list)
    conflicts: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)
    relabelled: list = field(default_factory=list)

    @property
    def renamed(self) -> dict[str, str]:
        """``{old key: new key}`` of every record now stored under its new key."""
        return dict(self.migrated + self.already_present)

    def counts(self) -> dict[str, int]:
        return {"migrated": len(self.migrated), "already_present": len(self.already_present),
                "current": self.current, "not_rebuilt": len(self.not_rebuilt), "conflicts": len(self.conflicts),
                "unreadable": len(self.unreadable), "relabelled": len(self.relabelled)}


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
            return _verify(json.loads(_read_text(p)), key)
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
        except _NewerSchema as e:
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
            return upgrade_record(_verify(json.loads(_read_text(p)), p.stem))
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
        doc = _seal({**{k: v for k, v in record.items() if k != "checksum"}, "schema": SCHEMA})
        p = self.path(record["key"])
        if self._file(p, "records"):
            try:
                _verify(json.loads(_read_text(p)), record["key"])
            except _NewerSchema as e:
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
        try:
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_text(d / ".write-check", "")
            (d / ".write-check").unlink()
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
                _verify(json.loads(_read_text(p)), name[:-5])
                continue
            except _NewerSchema as e:
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

    def migrate(self, architecture: Callable[[dict], Mapping | str] | None = None) -> "Migration":
        """Rewrite every record of an older schema as its schema-3 record, under its new key; returns a
        :class:`Migration` (what was rewritten, from which key to which, and what was left and why). Re-runnable:
        records already at schema 3 are not touched, so a second run only retries what the first left.

        ``architecture(record) -> {"arch": fingerprint, "source": the transfer source's fingerprint or None}``
        rebuilds the model the (schema-2 form of the) record was computed with and checks its weights against
        ``spec["model"]`` (:func:`msparse.evaluation.verify.record_architecture`); it returns the reason as a string
        when it cannot. Without it only records whose spec already names the architecture are rewritten.

        Results, meta and provenance are kept; every old key goes to ``provenance.key_history``. An old file is
        removed only once a verified record with the identical result is stored under the new key: a damaged file
        there is moved aside (``*.corrupt``) and replaced; a verified record with another result is left beside
        the old file and reported as a conflict. A record that cannot be rebuilt, or does not verify, stays as it
        is. Last, a record whose labels cite another record by an old key (:data:`KEY_TAGS`: ``rerun_of``) is
        rewritten citing its current key (found in the other record's ``provenance.key_history``). Raises
        :class:`~msparse.errors.StoreError` before changing anything when the store cannot be written.
        """
        from ..errors import StoreError

        out = Migration()
        d = self.root / "records"
        todo = []
        for p in sorted(d.glob("*.json")) if d.is_dir() else []:
            try:
                doc = json.loads(p.read_text(encoding="utf-8"))
            except FileNotFoundError:   # removed meanwhile (another migration)
                continue
            except (ValueError, OSError) as e:
                out.unreadable.append((p.name, str(e)))
                continue
            spec = doc.get("spec") if isinstance(doc, dict) else None
            if isinstance(spec, dict) and has_architecture(spec):
                out.current += 1
            else:
                todo.append((p, doc))
        p = None
        try:
            if todo:
                self.check_writable()
            for p, doc in todo:
                self._migrate_one(p, doc, architecture, out)
            p = None
            self._relabel(out)
        except OSError as e:
            if isinstance(e, StoreError):
                raise
            where = f"migrating {p.name}" if p is not None else "updating labels"
            raise StoreError(f"the results store {self.root} cannot be written ({type(e).__name__}: "
                             f"{e.strerror or e}) while {where}; nothing was removed that has no copy under its "
                             "new key: fix the folder and run the migration again") from None
        finally:
            _LEGACY_CACHE.pop(str(d), None)
        return out

    def _migrate_one(self, p: Path, doc: Any, architecture, out: "Migration") -> None:
        """One step of :meth:`migrate`: the file ``p`` holding ``doc`` (not at schema 3)."""
        try:
            rec = upgrade_record(_verify(doc, p.stem))
        except (ValueError, KeyError) as e:
            out.unreadable.append((p.name, str(e)))
            return
        if not has_architecture(rec["spec"]):
            got = architecture(rec) if architecture is not None else \
                "no model rebuilder given (`python -m msparse results migrate` rebuilds models)"
            if isinstance(got, str):
                out.not_rebuilt.append((p.stem, (rec.get("meta") or {}).get("model"), got))
                return
            rec = upgrade_record(rec, got["arch"], got.get("source"))
        new_key, old_key = rec["key"], p.stem
        there = self._verified(new_key)
        if there is None:
            self.put(rec)   # moves a damaged file under the new key aside first
            there = self._verified(new_key)
            if there is None or there["result"] != rec["result"]:
                out.unreadable.append((p.name, f"its rewritten record {new_key} did not read back"))
                return
            out.migrated.append((old_key, new_key))
        elif there["result"] != rec["result"]:
            out.conflicts.append((old_key, new_key))
            return
        else:
            out.already_present.append((old_key, new_key))
        if p != self.path(new_key):
            p.unlink(missing_ok=True)

    def _relabel(self, out: "Migration") -> None:
        """The last step of :meth:`migrate`: labels that cite a record by one of its old keys cite its current key."""
        docs, current = {}, {}
        for p in sorted((self.root / "records").glob("*.json")):
            try:
                doc = _verify(json.loads(p.read_text(encoding="utf-8")), p.stem)
            except (ValueError, OSError):
                continue
            if not has_architecture(doc["spec"]):
                continue
            docs[p] = doc
            for h in (doc.get("provenance") or {}).get("key_history") or []:
                if isinstance(h, dict) and isinstance(h.get("key"), str):
                    current[h["key"]] = doc["key"]
        checked = False
        for p, doc in docs.items():
            tags = (doc.get("meta") or {}).get("tags") or {}
            new = {t: current[tags[t]] for t in KEY_TAGS if isinstance(tags.get(t), str) and tags[t] in current}
            if not new:
                continue
            if not checked:
                self.check_writable()
                checked = True
            self.put({**doc, "meta": {**doc["meta"], "tags": {**tags, **new}}})
            out.relabelled.append(doc["key"])

    def _verified(self, key: str) -> dict | None:
        """The record stored under ``key`` if its file verifies, else None (absent or damaged; nothing moved)."""
        p = self.path(key)
        try:
            return _verify(json.loads(p.read_text(encoding="utf-8")), key)
        except (ValueError, OSError):
            return None

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
        doc = _seal({"schema": SCHEMA, "kind": "shard", "key": key, "index": int(index),
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
            doc = _verify(json.loads(_read_text(p)), key)
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
