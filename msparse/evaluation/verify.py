"""Drift verification: recompute stored records under the running install and compare them per example.

A record's key holds what determines the experiment (weights, sites with α/centre/backward/statistics,
attack and budget, data, seed, batch size); the library versions it was computed with are provenance.
So a record made with torch 2.15 is reused under torch 2.14 — and :func:`verify` is how that reuse is
checked rather than assumed: it rebuilds the exact configuration from the record alone, recomputes it
without touching the store, and compares the clean and robust flags of every example.

Rebuilding a record needs no recipe stored with it:

* the model from ``meta.model`` (any name :func:`msparse.models.registry.load_model` knows, or ``random:<family>``),
  its default placement (the paper's ResNet-18 preset for the family, every activation otherwise), and
  the host-weights checksum must equal ``spec.model`` and its architecture fingerprint ``spec.arch`` (a record of
  an older schema has none: :func:`migrate`, ``python -m msparse results migrate``, gives it one by rebuilding
  its model the same way, :func:`record_architecture`);
* the images from ``meta.data`` (``cifar10/<split> a..b``) or the first ``spec.data.n`` test/train
  images, accepted only if their hash equals ``spec.data.hash``;
* the statistics by trying the recipes the book and CLI use (exact statistics of the first 1000, 3000,
  256, 100, 300 or 512 training images; the official procedure on 3000 in stored and class-sorted
  order) until every active site's statistics hash equals the record's;
* the transfer source (``spec.source``) among the base model and each reverse-attention gate
  (:class:`msparse.models.resnet.RAAuxPath`), matched by description.

The recomputed key must equal the record's key, so the comparison is of the same experiment. A record
that cannot be rebuilt is reported as such with the reason, never counted as agreeing.

    python -m msparse results verify --sample 5        # five random records
    python -m msparse results verify 1a2b3c4d5e6f ...  # by key (prefixes work)
"""
from __future__ import annotations

import random
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from ..core.calibration import calibrate, restore_stats, stats_snapshot
from ..core.placement import named_operators, set_alpha, sparsify
from ..data.loading import load_data
from ..errors import CorruptRecord, InputError, UnknownNameError
from .evaluate import describe_model, evaluate, host_checksum
from .fingerprint import fingerprint
from .hashing import content_hash, data_hash, tensor_hash
from .integrity import check_record
from .migration import Migration, has_architecture
from .provenance import record_versions, versions
from .store import Store

__all__ = ["Check", "Rebuilder", "verify", "verify_record", "rerun", "rerun_key", "resolve_keys", "cost", "STATS_RECIPES",
           "MODEL_ALIASES", "record_architecture", "migrate"]

#: statistics recipes tried in order: (label, mode, number of training images, class-sorted order)
STATS_RECIPES: tuple[tuple[str, str, int, bool], ...] = (
    ("exact, train 0..999", "exact", 1000, False),
    ("exact, train 0..2999", "exact", 3000, False),
    ("exact, train 0..255", "exact", 256, False),
    ("exact, train 0..99", "exact", 100, False),
    ("exact, train 0..299", "exact", 300, False),
    ("exact, train 0..511", "exact", 512, False),
    ("official (batch 512), train 0..2999", "official", 3000, False),
    ("official (batch 512), train 0..2999 class-sorted", "official", 3000, True),
)

#: labels that earlier versions wrote in ``meta.model`` for models the registry now names otherwise
MODEL_ALIASES = {"offline-default": "msparse/default"}

_DATA_RE = re.compile(r"cifar10/(test|train) (\d+)\.\.(\d+)")


@dataclass
class Check:
    """The outcome of recomputing one record.

    ``status``: ``"agree"`` (every example's clean and robust flag equal, and every number readers see — n,
    counts, accuracies, Wilson intervals, per-component accuracies, a binarization test's pass rate — equal to the
    recomputed one), ``"disagree"``, ``"cannot rebuild"`` or ``"corrupted"`` (the stored record does not verify:
    its file, or its numbers against its own flags, :func:`~msparse.evaluation.integrity.check_record`); ``detail``
    says why. ``clean_agree``/``robust_agree``: examples whose flag agrees, of ``n``.
    """
    key: str
    model: str | None
    attack: str
    n: int
    status: str
    clean_agree: int = 0
    robust_agree: int = 0
    detail: str = ""
    made_with: dict = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "agree"

    def row(self) -> dict:
        return {"key": self.key[:12], "model": self.model, "attack": self.attack, "n": self.n,
                "made with torch": self.made_with.get("torch"), "clean agree": f"{self.clean_agree}/{self.n}",
                "robust agree": f"{self.robust_agree}/{self.n}", "status": self.status,
                "wall s": round(self.wall_s, 1), "detail": self.detail}


class _CannotRebuild(Exception):
    pass


def _corrupted(key: str | None, err: Exception) -> Check:
    """The :class:`Check` of a stored record that does not verify (nothing is recomputed)."""
    return Check(key=str(key or "?"), model=None, attack="?", n=0, status="corrupted",
                 detail=f"the stored record does not verify: {err}")


def cost(rec: dict) -> float:
    """A rough cost of recomputing a record: images × attack iterations (× attacks in the name)."""
    spec = rec["spec"]
    atk = spec["attack"]
    name = atk["name"]
    if name == "none":
        return float(spec["data"]["n"])
    k = 1 + name.count(",") + name.count("+") + (name.endswith("apgd") or name.endswith(":apgd"))
    if "aa" in re.split(r"[:,+]", name):
        k += 3
    return float(spec["data"]["n"]) * atk.get("n_iter", 100) * k


def resolve_keys(store: Store, keys: Iterable[str]) -> list[str]:
    """Full keys for ``keys`` (unique prefixes allowed); :class:`~msparse.errors.UnknownNameError` naming any
    unknown or ambiguous one."""
    have = store.keys()
    out = []
    for k in keys:
        hits = [h for h in have if h.startswith(k)]
        if len(hits) != 1:
            why = "no record" if not hits else f"{len(hits)} records"
            raise UnknownNameError(f"key {k!r} matches {why} in {store.root}; give a longer prefix "
                                   "(`python -m msparse results` lists the keys)")
        out.append(hits[0])
    return out


class Rebuilder:
    """Caches loaded models, data and statistics snapshots across the records of one run."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.models: dict[str, tuple] = {}
        self.data: dict[tuple, tuple] = {}
        self.stats: dict[str, list] = {}

    def model(self, name: str):
        if name not in self.models:
            from ..models.front import resolve   # every model name (``random:<family>`` too) and its placement
            try:
                m, placement = resolve(name, "cifar10", "Linf", device=self.device)
            except Exception as e:  # any load failure is a reason, reported per record
                raise _CannotRebuild(f"model {name!r} cannot be loaded here ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0] if str(e) else ''})") from None
            sparsify(m, placement)
            m.eval()
            self.models[name] = (m, None)
        return self.models[name][0]

    def images(self, rec: dict):
        spec, meta = rec["spec"], rec.get("meta", {})
        n = spec["data"]["n"]
        cands = []
        m = _DATA_RE.search(str(meta.get("data") or ""))
        if m:
            cands.append((m.group(1), int(m.group(2)), int(m.group(3)) - int(m.group(2)) + 1))
        cands += [("test", 0, n), ("train", 0, n)]
        for split, start, count in cands:
            if count != n:
                continue
            k = (split, start, count)
            if k not in self.data:
                x, y = load_data("cifar10", split, n=count, start=start)
                self.data[k] = (x.to(self.device), y.to(self.device), data_hash(x, y))
            x, y, h = self.data[k]
            if h == spec["data"]["hash"]:
                return x, y
        raise _CannotRebuild(f"no CIFAR-10 subset found here with the record's data hash "
                             f"(meta.data = {meta.get('data')!r}, n = {n})")

    def calibrate_to(self, name: str, model, wanted: dict[str, str]) -> str:
        """Load the statistics whose per-site hashes equal ``wanted`` ({site: stats hash}); returns the label."""
        import torch

        mods = dict(named_operators(model))
        snaps = self.stats.setdefault(name, [])

        def hashes():
            return {s: tensor_hash(mods[s].mean, mods[s].var, length=16) for s in wanted if s in mods}

        for label, snap in snaps:
            restore_stats(model, snap)
            if hashes() == wanted:
                return label
        for label, mode, n, sort in STATS_RECIPES:
            if any(lab == label for lab, _ in snaps):
                continue
            x, y = load_data("cifar10", "train", n=n)
            if sort:
                x = x[torch.argsort(y, stable=True)]
            kw = {"batch_size": 512} if mode == "official" else {}
            calibrate(model, x.to(self.device), mode=mode, **kw)
            snaps.append((label, stats_snapshot(model)))
            if hashes() == wanted:
                return label
        raise _CannotRebuild("none of the statistics recipes (msparse.evaluation.verify.STATS_RECIPES) gives the "
                             "record's statistics hashes")

    def source(self, model, want):
        if want is None:
            return None
        cands = []
        if getattr(model, "reverse_attention", False):
            from ..models.resnet import RAAuxPath
            cands += [RAAuxPath(model, b) for b in range(len(model.layer4))]
        for c in cands:
            if describe_model(c) == want:
                return c
        raise _CannotRebuild("the record's transfer source is not the base model or a reverse-attention gate")


#: the numbers readers see, compared between a stored record and its recomputation (besides the flags)
_SHOWN = ("n", "clean", "robust", "clean_acc", "robust_acc", "clean_ci", "robust_ci")
_SHOWN_COMPONENT = ("robust", "robust_acc", "after")
_SHOWN_BINARIZATION = ("n", "valid", "passed", "pass_rate")


def _differing(stored: dict, now: dict, binarization: bool = False) -> list[str]:
    """The displayed fields of ``stored`` (a record's result) that are not those of ``now`` (its recomputation),
    as ``"field (stored, now)"``."""
    out = []

    def cmp(label, a, b):
        if a != b:
            out.append(f"{label} ({a!r} stored, {b!r} now)")

    for f in _SHOWN_BINARIZATION if binarization else _SHOWN:
        cmp(f, stored.get(f), now.get(f))
    if not binarization:
        comps_a, comps_b = stored.get("components") or {}, now.get("components") or {}
        for name in sorted(set(comps_a) | set(comps_b)):
            a, b = comps_a.get(name) or {}, comps_b.get(name) or {}
            for f in _SHOWN_COMPONENT:
                cmp(f"components[{name!r}].{f}", a.get(f), b.get(f))
    return out


def _verify_binarization(chk: Check, rec: dict, model, x, y, t0: float) -> Check:
    """Recompute a binarization-test record (:mod:`msparse.evaluation.binarize`) and compare its per-image flags."""
    from .binarize import binarization_record

    spec, atk = rec["spec"], rec["spec"]["attack"]
    new = binarization_record(model, x, y, atk["name"], eps=atk["eps"], n_iter=atk["n_iter"], seed=spec["seed"],
                              store=False)
    if new["key"] != rec["key"]:
        chk.detail = "the rebuilt binarization test has another key than the record"
    else:
        a, b = new["result"]["flags"], rec["result"]["flags"]
        chk.clean_agree = chk.robust_agree = sum(u == v for u, v in zip(a, b))
        numbers = _differing(rec["result"], new["result"], binarization=True)
        chk.status = "agree" if a == b and not numbers else "disagree"
        chk.detail = f"binarization test: {b.count('1')}/{len(b) - b.count('-')} passed stored, " \
                     f"{a.count('1')}/{len(a) - a.count('-')} now"
        if numbers:
            chk.detail += "; numbers differ: " + ", ".join(numbers)
    chk.wall_s = time.perf_counter() - t0
    return chk


def _verify_indicators(chk: Check, rec: dict, model, x, y, t0: float) -> Check:
    """Recompute an indicators record (:mod:`msparse.evaluation.indicator_records`) and compare its numbers."""
    from .indicator_records import differences, recompute

    new = recompute(rec, model, x, y)
    if new["key"] != rec["key"]:
        chk.detail = "the rebuilt indicators run has another key than the record"
    else:
        numbers = differences(rec["result"], new["result"])
        a, b = new["result"]["clean_flags"], rec["result"]["clean_flags"]
        chk.clean_agree = chk.robust_agree = sum(u == v for u, v in zip(a, b))
        chk.status = "disagree" if numbers else "agree"
        chk.detail = "indicators: " + ("every value and firing flag equal" if not numbers else
                                       "numbers differ: " + ", ".join(numbers))
    chk.wall_s = time.perf_counter() - t0
    return chk


def _named_model(rec: dict, rb: Rebuilder):
    """``(name, model)``: the model ``meta.model`` names (:data:`MODEL_ALIASES` applied), rebuilt with its default
    placement; :class:`_CannotRebuild` unless its host weights are the record's (``spec["model"]``)."""
    meta = rec.get("meta") or {}
    name = MODEL_ALIASES.get(meta.get("model"), meta.get("model"))
    if not name:
        raise _CannotRebuild("the record does not name its model (meta.model)")
    model = rb.model(name)
    if host_checksum(model) != rec["spec"]["model"]:
        raise _CannotRebuild(f"the weights of {name!r} here differ from the record's (host checksum)")
    return name, model


def record_architecture(rec: dict, rebuilder: Rebuilder | None = None) -> dict:
    """``{"arch": ..., "source": ...}``: the architecture fingerprints
    (:func:`~msparse.evaluation.fingerprint.fingerprint`) of the model a record of any schema was computed with and
    of its transfer source (None without one), what :func:`~msparse.evaluation.migration.upgrade_record` needs to give
    an older record its schema-3 key.

    The model is the one ``meta.model`` names, rebuilt here, and its host weights must equal ``spec["model"]``;
    the source is the one model among it and its reverse-attention gates (:class:`msparse.models.resnet.RAAuxPath`)
    whose host weights equal ``spec["source"]["model"]``. Nothing is evaluated: loading the model is the cost.
    Raises :class:`~msparse.errors.InputError` with the reason when the record cannot be rebuilt here."""
    try:
        return _record_architecture(rec, rebuilder or Rebuilder())
    except _CannotRebuild as e:
        raise InputError(f"record {rec['key'][:12]} cannot be rebuilt here: {e}") from None


def _record_architecture(rec: dict, rb: Rebuilder) -> dict:
    name, model = _named_model(rec, rb)
    src = rec["spec"].get("source")
    out = {"arch": fingerprint(model), "source": None}
    if src is not None:
        cands = [model]
        if getattr(model, "reverse_attention", False):
            from ..models.resnet import RAAuxPath
            cands += [RAAuxPath(model, b) for b in range(len(model.layer4))]
        found = {fingerprint(c) for c in cands if host_checksum(c) == src.get("model")}
        if len(found) != 1:
            raise _CannotRebuild(f"the record's transfer source is {'none' if not found else 'more than one'} of "
                                 f"{name!r} and its reverse-attention gates (by host checksum)")
        out["source"] = found.pop()
    return out


def migrate(store: Store | str | None = None, *, device: str = "cpu") -> Migration:
    """:meth:`Store.migrate <msparse.evaluation.store.Store.migrate>` with every record's model rebuilt here
    (:func:`record_architecture`, one load per model name): older records get their schema-3 key without being
    recomputed; those whose model cannot be rebuilt are left as they are, with the reason."""
    st = store if isinstance(store, Store) else Store(store)
    rb = Rebuilder(device)

    def architecture(rec: dict):
        try:
            return _record_architecture(rec, rb)
        except _CannotRebuild as e:
            return str(e)

    return st.migrate(architecture)


@contextmanager
def _rebuilt(rec: dict, rb: Rebuilder):
    """The record's model with its sites set as the record's (α, centre, backward, statistics), its images and its
    transfer source: yields ``(model, x, y, source, statistics label)``; every site is reset afterwards. Raises
    :class:`_CannotRebuild` with the reason when any part cannot be matched."""
    spec, meta = rec["spec"], rec.get("meta", {})
    name, model = _named_model(rec, rb)
    if not has_architecture(spec):
        raise _CannotRebuild(f"the record is of schema {rec.get('schema', 1)}: its key does not name the model's "
                             "architecture; run `python -m msparse results migrate` first")
    set_alpha(model, 0.0)
    if describe_model(model)["arch"] != spec["arch"]:
        raise _CannotRebuild(f"the architecture of {name!r} here differs from the record's (fingerprint)")
    x, y = rb.images(rec)
    sites = spec.get("sites") or {}
    mods = dict(named_operators(model))
    missing = [s for s in sites if s not in mods]
    if missing:
        raise _CannotRebuild(f"the record has sites {missing[:3]} that the default placement of "
                             f"{name!r} does not have")
    label = "none"
    if sites:
        label = rb.calibrate_to(name, model, {s: v["stats"] for s, v in sites.items()})
    try:
        for s, v in sites.items():
            mods[s].centre = v["centre"]
            mods[s].set_backward(v["backward"])
        set_alpha(model, {s: v["alpha"] for s, v in sites.items()} if sites else 0.0)
        if describe_model(model)["sites"] != sites:
            raise _CannotRebuild("the rebuilt sites do not describe as the record's (α, centre, layout)")
        yield model, x, y, rb.source(model, spec.get("source")), label
    finally:
        set_alpha(model, 0.0)
        for m in mods.values():
            m.centre = "mean"
            m.set_backward("exact")


def _evaluate_as(rec: dict, model, x, y, source, *, seed: int, batch_size: int | None = None, **kw):
    """:func:`~msparse.evaluation.evaluate.evaluate` with the record's attack and budget (and batch size, unless
    given)."""
    spec, atk = rec["spec"], rec["spec"]["attack"]
    return evaluate(model, x, y, atk["name"], eps=atk["eps"], norm=atk["norm"], seed=seed,
                    batch_size=batch_size or spec["batch_size"], n_iter=atk.get("n_iter", 100),
                    n_restarts=atk.get("n_restarts", 1), n_queries=atk.get("n_queries", 5000), source=source,
                    skip=spec.get("skip") if len(x) == spec["data"]["n"] else None, **kw)


def verify_record(rec: dict, rebuilder: Rebuilder | None = None) -> Check:
    """Recompute one record (store untouched) and compare its per-example flags and the numbers readers see with
    the stored ones. A record whose numbers do not follow from its own flags is ``"corrupted"`` without being
    recomputed (:func:`~msparse.evaluation.integrity.check_record`)."""
    try:
        check_record(rec)
    except CorruptRecord as e:
        return _corrupted(rec.get("key") if isinstance(rec, dict) else None, e)
    rb = rebuilder or Rebuilder()
    spec, res, meta = rec["spec"], rec["result"], rec.get("meta", {})
    name = MODEL_ALIASES.get(meta.get("model"), meta.get("model"))
    chk = Check(key=rec["key"], model=name, attack=spec["attack"]["name"], n=int(res.get("n", 0)),
                status="cannot rebuild", made_with=record_versions(rec))
    t0 = time.perf_counter()
    try:
        with _rebuilt(rec, rb) as (model, x, y, source, label):
            if spec.get("kind") == "binarization":
                return _verify_binarization(chk, rec, model, x, y, t0)
            if spec.get("kind") == "indicators":
                return _verify_indicators(chk, rec, model, x, y, t0)
            r = _evaluate_as(rec, model, x, y, source, seed=spec["seed"], store=False, diagnostics=False)
        if r.key != rec["key"]:
            raise _CannotRebuild("the rebuilt experiment has another key than the record "
                                 "(something in the spec differs)")
        c_new, c_old = r.result["clean_flags"], res["clean_flags"]
        r_new, r_old = r.result["robust_flags"], res["robust_flags"]
        chk.clean_agree = sum(a == b for a, b in zip(c_new, c_old))
        chk.robust_agree = sum(a == b for a, b in zip(r_new, r_old))
        numbers = _differing(res, r.result)
        same = c_new == c_old and r_new == r_old and not numbers
        chk.status = "agree" if same else "disagree"
        chk.detail = f"statistics: {label}"
        if not same:
            chk.detail += (f"; clean {100 * res['clean_acc']:.1f}% stored vs {100 * r.clean_acc:.1f}% now, "
                           f"robust {100 * res['robust_acc']:.1f}% vs {100 * r.robust_acc:.1f}%")
        if numbers:
            chk.detail += "; numbers differ: " + ", ".join(numbers)
    except _CannotRebuild as e:
        chk.detail = str(e)
    chk.wall_s = time.perf_counter() - t0
    return chk


@dataclass
class _Variant:
    spec: dict                  # the varied experiment's spec (its key is the spec's content hash)
    images: tuple | None        # (x, y) when the images differ from the record's, else None
    data: str | None            # the data label stored with it


def _variant(rec: dict, seed: int | None, n: int | None, rb: Rebuilder) -> _Variant:
    """``rec``'s spec with the attack seed and/or the number of images changed. ``n``: the first ``n`` images of
    the record's split from the record's first image (the record's own images must be the first of them); the batch
    size stays the record's when it split the record's images, else it is the evaluation default (the record's
    batch held all its images)."""
    from .evaluate import DEFAULT_BATCH_SIZE

    spec, meta = rec["spec"], rec.get("meta", {})
    new = {**spec, "seed": int(spec["seed"] if seed is None else seed)}
    n_rec = spec["data"]["n"]
    if n is None or int(n) == n_rec:
        return _Variant(new, None, meta.get("data"))
    n = int(n)
    if n < n_rec:
        raise _CannotRebuild(f"n = {n} is fewer than the record's {n_rec} images; rerun extends a record")
    if spec.get("skip"):
        raise _CannotRebuild("it is a cascade stage (it skipped the images earlier stages broke); extend the cascade "
                             "with msparse.evaluation.cascade instead")
    m = _DATA_RE.search(str(meta.get("data") or ""))
    split, start = (m.group(1), int(m.group(2))) if m else ("test", 0)
    key = (split, start, n)
    if key not in rb.data:
        try:
            x, y = load_data("cifar10", split, n=n, start=start)
        except Exception as e:   # fewer images than asked, or data missing here: a reason, not a crash
            raise _CannotRebuild(f"the first {n} CIFAR-10 {split} images from {start} are not available here "
                                 f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        rb.data[key] = (x.to(rb.device), y.to(rb.device), data_hash(x, y))
    x, y, h = rb.data[key]
    if data_hash(x[:n_rec].cpu(), y[:n_rec].cpu()) != spec["data"]["hash"]:
        raise _CannotRebuild(f"the record's images are not the first {n_rec} CIFAR-10 {split} images from {start}")
    batch = spec["batch_size"] if spec["batch_size"] < n_rec else DEFAULT_BATCH_SIZE
    new.update(data={**spec["data"], "hash": h, "n": n}, batch_size=min(batch, n))
    label = f"cifar10/{split} {start}..{start + n - 1}" + (" (offline)" if "(offline)" in str(meta.get("data")) else "")
    return _Variant(new, (x, y), label)


def rerun_key(rec: dict, *, seed: int | None = None, n: int | None = None, rebuilder: Rebuilder | None = None) -> str:
    """The key :func:`rerun` gives ``rec``'s experiment under ``seed`` and/or on ``n`` images (no model is built)."""
    try:
        return content_hash(_variant(rec, seed, n, rebuilder or Rebuilder()).spec)
    except _CannotRebuild as e:
        raise InputError(f"record {rec['key'][:12]} cannot be rerun here: {e}") from None


def rerun(rec: dict, *, seed: int | None = None, n: int | None = None, store: Store | str | None = None,
          rebuilder: Rebuilder | None = None, progress: bool = False):
    """``rec``'s experiment under attack seed ``seed`` and/or on the first ``n`` images of its split (more than the
    record's; None: the record's) — model, sites, attack and budget exactly the record's — as a
    :class:`~msparse.evaluation.evaluate.Result`.

    The store's record of it is returned when it has one (no model is rebuilt); otherwise the experiment is rebuilt
    from the record alone, as :func:`verify_record` does, and computed into ``store`` (resumable, like every
    evaluation), tagged ``rerun_of`` the record. Its key is the one a page evaluating the same model, α and attack
    with that seed on those images computes, so pages and reruns share records. Raises
    :class:`~msparse.errors.InputError` naming the reason when the record cannot be rebuilt here (a
    binarization-test record, unknown weights, images or statistics not found)."""
    from .evaluate import Result, _resolve_store

    what = " and ".join(w for w in (f"seed {seed}" if seed is not None else "",
                                    f"{n} images" if n is not None else "") if w) or "its own settings"
    if rec["spec"].get("kind"):
        raise InputError(f"record {rec['key'][:12]} is a record of kind {rec['spec']['kind']!r}; rerun takes attack "
                         "records")
    st = _resolve_store(store)
    rb = rebuilder or Rebuilder()
    meta = rec.get("meta", {})
    try:
        var = _variant(rec, seed, n, rb)
        key = content_hash(var.spec)
        have = st.get(key) if st is not None else None
        if have is not None:
            return Result.from_record(have, cached=True)
        with _rebuilt(rec, rb) as (model, x, y, source, _):
            x, y = var.images or (x, y)
            r = _evaluate_as(rec, model, x, y, source, seed=var.spec["seed"], batch_size=var.spec["batch_size"],
                             store=st if st is not None else False, name=meta.get("model"), data=var.data,
                             stats=meta.get("stats"), tags={**(meta.get("tags") or {}), "rerun_of": rec["key"]},
                             progress=progress)
    except _CannotRebuild as e:
        raise InputError(f"record {rec['key'][:12]} cannot be rerun with {what} here: {e}") from None
    if r.key != key:
        raise InputError(f"record {rec['key'][:12]} rebuilt as another experiment (key {r.key[:12]}, expected "
                         f"{key[:12]}): something in its spec is not rebuilt; it was stored under its own key")
    return r


def verify(store: Store | str | None = None, keys: Sequence[str] | None = None, *, sample: int | None = None,
           seed: int = 0, max_cost: float | None = None, device: str = "cpu",
           log: Callable[[str], None] | None = print) -> list[Check]:
    """Recompute records of ``store`` under the running install and compare them per example.

    Args:
        keys: records to check (unique key prefixes allowed); default all (or a sample).
        sample: check ``sample`` records drawn at random (``seed``) instead of all.
        max_cost: only records whose :func:`cost` (images × iterations) is at most this.
    Returns:
        one :class:`Check` per record, in the order checked; first a ``"corrupted"`` one for every chosen record
        file that does not verify (it is never sampled away or filtered out by cost).
    Raises:
        :class:`~msparse.errors.InputError` when there is nothing to check: no record in the store, or none
        matching ``max_cost`` (a verification of nothing is not a pass).
    """
    st = store if isinstance(store, Store) else Store(store)
    chosen = resolve_keys(st, keys) if keys else st.keys()
    recs, out = [], []
    for k in chosen:
        try:
            rec = st.read(k)
        except (ValueError, OSError) as e:   # CorruptRecord (a ValueError) and StoreError (an OSError)
            out.append(_corrupted(k, e))
            continue
        if rec is not None:
            recs.append(rec)
    if not chosen:
        raise InputError(f"{st.root} holds no records to verify; pass the folder that holds them (--store DIR)")
    if max_cost is not None:
        cheap = [r for r in recs if cost(r) <= max_cost]
        if recs and not cheap and not out:
            raise InputError(f"none of the {len(recs)} records of {st.root} costs at most {max_cost:g} "
                             f"image-iterations (the cheapest costs {min(map(cost, recs)):g}); raise --max-cost")
        recs = cheap
    if sample is not None and sample < len(recs):
        recs = random.Random(seed).sample(recs, sample)
    if not recs and not out:
        raise InputError(f"none of the {len(chosen)} chosen records of {st.root} could be read (see the warnings)")
    run = versions()
    if log:
        log(f"verifying {len(recs) + len(out)} record(s) of {st.root} under torch {run['torch']}, "
            f"pyautoattack {run['pyautoattack']}")
        for c in out:
            log(f"  {c.key[:12]}: {c.status}; {c.detail}")
    rb = Rebuilder(device)
    for rec in recs:
        c = verify_record(rec, rb)
        out.append(c)
        if log:
            log(f"  {c.key[:12]} {str(c.model):34s} {c.attack:16s} n={c.n:<5d} made with torch "
                f"{c.made_with.get('torch')}: {c.status} (clean {c.clean_agree}/{c.n}, robust "
                f"{c.robust_agree}/{c.n}; {c.wall_s:.1f} s){'; ' + c.detail if c.detail else ''}")
    return out
