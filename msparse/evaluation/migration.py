"""Migration: records of older schemas, upgraded to the current one (:data:`~msparse.evaluation.integrity.SCHEMA`)
under their new key.

Schema 1 (written before library versions left the key: their ``spec`` carries
``"versions": {"torch": "<minor>", "pyautoattack": ...}``) is served under its schema-2 key (:func:`upgrade_record`,
results untouched). Schema 2 (written before the key named the architecture: its ``spec`` has the weights checksum
but no ``arch``, so two models with the same weights and another forward shared records) is served under its own
key, which no evaluation computes any more. :func:`migrate` (:meth:`Store.migrate
<msparse.evaluation.store.Store.migrate>`, ``python -m msparse results migrate``) rewrites both as schema 3 under
their new key, after rebuilding the model each names and checking its weights, and keeps every old key in
``provenance.key_history``; :class:`Migration` says what it did.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import InputError, StoreError
from .hashing import content_hash
from .integrity import SCHEMA, seal, trusted

__all__ = ["LEGACY_SPEC_FIELDS", "ARCH_FIELD", "KEY_TAGS", "has_architecture", "upgrade_record", "Migration",
           "migrate"]

#: spec fields that schema 1 had in the key and schema 2 keeps in the provenance
LEGACY_SPEC_FIELDS = ("versions",)
#: the spec field schema 3 added: the host's architecture fingerprint (:mod:`msparse.evaluation.fingerprint`); a
#: transfer source's description (``spec["source"]``) carries its own
ARCH_FIELD = "arch"
#: labels (``meta.tags``) that cite another record by its key; :func:`migrate` keeps them current
KEY_TAGS = ("rerun_of",)


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
    return seal({"schema": schema, "key": content_hash(spec), "spec": spec, **body, "provenance": prov})


def upgrade_record(doc: dict, arch: str | None = None, source_arch: str | None = None) -> dict:
    """A verified record of an older schema, as far forward as the information given takes it (results, meta and
    the rest of the provenance unchanged; every key it had is appended to ``provenance.key_history``):

    * schema 1 -> 2: the library versions leave ``spec`` (they stay in the provenance and in the key history);
    * schema 2 -> 3, only with ``arch``: ``spec["arch"] = arch``, the architecture fingerprint of the model the
      record was computed with (:func:`msparse.evaluation.fingerprint.fingerprint`), and, for a record with a
      transfer source, ``spec["source"]["arch"] = source_arch``. Nothing in the record says what the architecture
      was: the caller rebuilds the model and checks its weights against ``spec["model"]``
      (:func:`migrate`, :func:`msparse.evaluation.verify.record_architecture`).

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


@dataclass
class Migration:
    """What :func:`migrate` did. Keys are full record keys.

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


def migrate(store, architecture: Callable[[dict], Mapping | str] | None = None) -> Migration:
    """Rewrite every record of an older schema in ``store`` (a :class:`~msparse.evaluation.store.Store`, which calls
    this as :meth:`~msparse.evaluation.store.Store.migrate`) as its schema-3 record, under its new key; returns a
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
    out = Migration()
    d = store.root / "records"
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
            store.check_writable()
        for p, doc in todo:
            _migrate_one(store, p, doc, architecture, out)
        p = None
        _relabel(store, out)
    except OSError as e:
        if isinstance(e, StoreError):
            raise
        where = f"migrating {p.name}" if p is not None else "updating labels"
        raise StoreError(f"the results store {store.root} cannot be written ({type(e).__name__}: "
                         f"{e.strerror or e}) while {where}; nothing was removed that has no copy under its "
                         "new key: fix the folder and run the migration again") from None
    return out


def _migrate_one(store, p: Path, doc: Any, architecture, out: Migration) -> None:
    """One step of :func:`migrate`: the file ``p`` holding ``doc`` (not at schema 3)."""
    try:
        rec = upgrade_record(trusted(doc, p.stem))
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
    there = _verified(store, new_key)
    if there is None:
        store.put(rec)   # moves a damaged file under the new key aside first
        there = _verified(store, new_key)
        if there is None or there["result"] != rec["result"]:
            out.unreadable.append((p.name, f"its rewritten record {new_key} did not read back"))
            return
        out.migrated.append((old_key, new_key))
    elif there["result"] != rec["result"]:
        out.conflicts.append((old_key, new_key))
        return
    else:
        out.already_present.append((old_key, new_key))
    if p != store.path(new_key):
        p.unlink(missing_ok=True)


def _relabel(store, out: Migration) -> None:
    """The last step of :func:`migrate`: labels that cite a record by one of its old keys cite its current key."""
    docs, current = {}, {}
    for p in sorted((store.root / "records").glob("*.json")):
        try:
            doc = trusted(json.loads(p.read_text(encoding="utf-8")), p.stem)
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
            store.check_writable()
            checked = True
        store.put({**doc, "meta": {**doc["meta"], "tags": {**tags, **new}}})
        out.relabelled.append(doc["key"])


def _verified(store, key: str) -> dict | None:
    """The record stored under ``key`` if its file verifies, else None (absent or damaged; nothing moved)."""
    p = store.path(key)
    try:
        return trusted(json.loads(p.read_text(encoding="utf-8")), key)
    except (ValueError, OSError):
        return None

