"""A record's integrity: its format (:data:`SCHEMA`), its checksum seal, and the checks every read and write runs.

A *record* is one evaluated point (one model configuration, one attack, one data subset). It is a JSON
object::

    {"schema": 3, "key": "<32 hex>", "spec": {...}, "result": {...}, "meta": {...},
     "provenance": {...}, "checksum": "<sha256>"}

* ``spec`` holds everything that determines the numbers (model weights ``model`` and architecture fingerprint
  ``arch``, active sites with their α/centre/layout/backward/statistics, transfer source, attack and budget,
  data, seed, batch size);
  ``key = content_hash(spec)`` (:mod:`msparse.evaluation.hashing`). Library versions are *not* in the spec: they
  are provenance (:mod:`msparse.evaluation.provenance`).
* ``result`` holds the numbers (counts, accuracies, Wilson intervals, per-example flags).
* ``meta`` holds human labels (model name, data source, statistics mode, tags); not part of the key.
* ``provenance`` says how the record was made (git commit, library versions, device, wall time).
* ``checksum`` covers all of the above (:func:`seal`); a record whose checksum or key does not match is treated as
  corrupted and recomputed. So is one whose displayed numbers (n, counts, accuracies, Wilson intervals,
  per-component accuracies, a binarization test's pass rate, an indicator's firing flag) do not follow from its
  per-image flags or its other numbers, or whose fields have the wrong JSON type (:func:`check_record`, on every
  read): an edited and re-sealed record is caught too. A record of a schema newer than :data:`SCHEMA` is refused by name (:class:`NewerSchema`) and never
  overwritten. Records of older schemas are upgraded by :mod:`msparse.evaluation.migration`.
"""
from __future__ import annotations

import math
import string
from typing import Any, Mapping

from ..errors import CorruptRecord
from .hashing import content_hash

__all__ = ["SCHEMA", "seal", "trusted", "check_record", "NewerSchema"]

#: the record format written now (schema 1: library versions in the key; 2: no architecture in the key)
SCHEMA = 3


def seal(doc: dict) -> dict:
    """``doc`` with its ``checksum``: the sha256 of everything else in it (what :func:`trusted` checks)."""
    body = {k: v for k, v in doc.items() if k != "checksum"}
    doc = dict(body)
    doc["checksum"] = content_hash(body, length=64)
    return doc


class NewerSchema(CorruptRecord):
    """A record written by a newer msparse (its schema is above :data:`SCHEMA`): refused by name, never read as
    the current schema, never moved aside or overwritten."""


def _schema_check(doc: dict, key: str | None) -> None:
    s = doc.get("schema", 1)
    if not _is_int(s) or s < 1:
        raise CorruptRecord(f"schema is {_describe(s)}, not a schema number")
    if s > SCHEMA:
        raise NewerSchema(f"record {doc.get('key', key)} has schema {s}, newer than this msparse ({SCHEMA}): "
                           "upgrade msparse to read it")


def trusted(doc: Any, key: str | None = None) -> dict:
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
             "model": _STR, "skip": _STR},
    "spec.attack": {"name": _STR, "eps": _NUM, "norm": _STR, "n_iter": _INT, "n_restarts": _INT,
                    "n_queries": _INT},
    "spec.data": {"n": _INT, "hash": _STR},
    "meta": {"model": _OPT_STR, "data": _OPT_STR, "stats": _OPT_STR, "tags": _OBJ},
    "provenance": {"versions": _OBJ, "key_history": _LIST, "device": _OPT_STR, "commit": _OPT_STR,
                   "wall_s": (lambda v: v is None or _is_num(v), "a number")},
    "result": {"n": _INT, "clean": _INT, "robust": _INT, "clean_acc": _NUM, "robust_acc": _NUM,
               "clean_ci": _PAIR, "robust_ci": _PAIR, "clean_flags": _STR, "robust_flags": _STR,
               "components": _OBJ, "not_attacked": _INT, "flags": _STR, "valid": _INT, "passed": _INT,
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


_NOT_ROBUST = str.maketrans({ch: "0" for ch in string.ascii_lowercase + "-"})   # outcome -> '1' where robust
_CLEAN = str.maketrans({ch: "1" for ch in string.ascii_lowercase + "-"})        # outcome -> '1' where clean-correct
_SKIPPED = str.maketrans({ch: "0" for ch in string.ascii_lowercase + "1"} | {"-": "1"})   # outcome -> '1' where skipped


def _check_evaluation(spec: dict, res: dict) -> None:
    """An evaluation record (:func:`msparse.evaluation.evaluate.merge_results`, :func:`msparse.evaluation.shards.merge_records`):
    ``n``, the clean and robust counts, accuracies and Wilson intervals come from ``clean_flags``/``robust_flags``;
    every component's ``outcome`` ("0" clean-wrong, "1" robust, letter j broken by its j-th attack, "-" not attacked:
    exactly the clean-correct images of a cascade stage's ``spec.skip``) marks the same
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
        if len(out) != n or not set(out) <= set("01-" + string.ascii_lowercase[:len(attacks)]):
            raise CorruptRecord(f"{where}.outcome is not one of 0, 1, - or an attack's letter per image")
        if out.translate(_CLEAN) != cf:
            raise CorruptRecord(f"{where}.outcome marks other images clean-correct than result.clean_flags")
        skip = spec.get("skip")
        want_skipped = 0 if skip is None or len(skip) != n else int(skip, 2) & int(cf, 2)
        if int(out.translate(_SKIPPED), 2) != want_skipped:
            raise CorruptRecord(f"{where}.outcome marks other images not attacked ('-') than the clean-correct "
                                "images of spec.skip")
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


def _check_indicators(spec: dict, res: dict) -> None:
    """An indicators record (:mod:`msparse.evaluation.indicator_records`): ``n``, ``n_attacked`` and ``clean_acc``
    come from ``clean_flags``; ``pgd_acc`` is a share of the ``n`` images no above ``clean_acc``; every indicator is
    one the spec's thresholds name, with that threshold, ``n`` = ``n_attacked``, a value in [0, 1] (a share of
    the attacked images, but for ``unstable_predictions``) or null, and ``fires`` exactly when value > threshold."""
    for name in ("n", "n_attacked", "clean_acc", "clean_flags", "pgd_acc", "indicators"):
        if name not in res:
            raise CorruptRecord(f"result.{name} is missing")
    cf = res["clean_flags"]
    if not cf or cf.strip("01"):
        raise CorruptRecord("result.clean_flags is empty or holds characters other than 0 and 1")
    n, k = len(cf), cf.count("1")
    _agree("result.n", res["n"], n, "its clean_flags")
    if "n" in spec.get("data", {}):
        _agree("result.n", res["n"], spec["data"]["n"], "spec.data.n")
    _agree("result.n_attacked", res["n_attacked"], k, "its clean_flags")
    _agree("result.clean_acc", res["clean_acc"], k / n, f"its clean_flags ({k} of {n})")
    p = res["pgd_acc"]
    if p is not None and not (_is_num(p) and 0 <= p <= k / n + 1e-12 and abs(p * n - round(p * n)) < 1e-9):
        raise CorruptRecord(f"result.pgd_acc is {p!r}, not a share of the {n} images at most result.clean_acc")
    thresholds = (spec.get("test") or {}).get("thresholds")
    inds = res["indicators"]
    if not isinstance(thresholds, dict) or not isinstance(inds, dict):
        raise CorruptRecord("spec.test.thresholds and result.indicators must be objects")
    for name, ind in inds.items():
        where = f"result.indicators[{name!r}]"
        if name not in thresholds or not isinstance(ind, dict):
            raise CorruptRecord(f"{where} is not an indicator of spec.test.thresholds")
        v = ind.get("value")
        _agree(f"{where}.threshold", ind.get("threshold"), float(thresholds[name]), "spec.test.thresholds")
        _agree(f"{where}.n", ind.get("n"), k, "result.n_attacked")
        if v is not None and not (_is_num(v) and 0 <= v <= 1):
            raise CorruptRecord(f"{where}.value is {_describe(v)}, not a number in [0, 1] or null")
        if v is not None and name != "unstable_predictions" and abs(v * k - round(v * k)) > 1e-9:
            raise CorruptRecord(f"{where}.value is {v}, not a share of the {k} attacked images")
        fires = v is not None and v > thresholds[name]
        if ind.get("fires") is not fires:
            raise CorruptRecord(f"{where}.fires is {_describe(ind.get('fires'))} but its value {v} and threshold "
                                f"{thresholds[name]} give {fires}")


def check_record(doc: Mapping) -> None:
    """Raise :class:`~msparse.errors.CorruptRecord` naming the first field of record ``doc`` that readers could not
    trust: a field of the wrong JSON type (:data:`_FIELDS`), or a displayed number that disagrees with the
    per-image flags it is computed from — ``n``, clean/robust counts, accuracies, Wilson intervals and per-component
    accuracies of an evaluation record (``spec`` has an ``attack``), ``n``/``valid``/``passed``/``pass_rate`` of a
    binarization record, the counts, thresholds and firing flags of an indicators record. Costs a few string scans
    per record (no recomputation). Run on every read (:meth:`Store.get`) and write (:meth:`Store.put`): a record
    edited and re-sealed with a new checksum is still refused when its numbers do not follow from its flags."""
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
    elif spec.get("kind") == "indicators":
        _check_indicators(spec, res)
    elif spec.get("kind") is None and ("attack" in spec or "clean_flags" in res or "robust_flags" in res):
        _check_evaluation(spec, res)
