"""Evidence: every stored attack on one configuration, pooled into one per-image worst case, with the attack
budget each side of a comparison received.

A robust accuracy is a property of a *point*: the host model (weights, and architecture where the record names
it), the active MeanSparse sites as the forward sees them (α, centre, layout, statistics — not the backward mode,
which changes only the attacker's gradient), the threat model (ε, norm) and the images. Every attack record of the
store on that point, whatever page, attack, gradient route or seed made it, is an upper bound on the point's
robust accuracy, image by image; their per-image worst case is *the robust accuracy that stands*. Records made on
more images count for fewer: a record on the first m images of a split serves the first n ≤ m (checked by the
hash of those images, never by the label alone).

A comparison of α with α = 0 (:func:`compare`) is fair only when the base was attacked at least as hard as the
defence. The budget of a side is counted in *runs* (:class:`Run`): one loss (CE, DLR, targeted DLR, FAB-T,
Square's margin, the estimated-gradient margin) run once from one random start along one gradient route (the
official gradient, BPDA, one surrogate temperature, a transfer source), with its iterations. Runs that are the
same computation count once (APGD-CE inside APGD-CE+T is APGD-CE with the same seed). On the base (every α = 0)
BPDA, the surrogate and a transfer from the base *are* the official gradient, so they add nothing there; the base
instead needs as many runs of each loss from other random starts (attack seeds) as the defence received, each
with at least the defence's iterations. :attr:`Comparison.missing` lists what the base lacks;
:func:`msparse.report.referee.referee_verdict` refuses a negative verdict on an unequal comparison.

    ev = pool(store, point_of(record), n=1000)      # Evidence: flags, clean flags, runs, records
    cmp = compare(store, point_of(record))           # both sides at the largest n both have
    cmp.fair, cmp.missing, cmp.base.robust, cmp.new.robust
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from ..attacks.base import parse_attack
from ..attacks.registry import get_attack, resolve_params
from ..errors import InputError
from .hashing import data_hash
from .store import Store

__all__ = ["Point", "Run", "Evidence", "Comparison", "point_of", "pool", "compare", "records_at", "runs_of", "fill_base",
           "base_record_for_gap", "gap_losses", "record_for_loss", "typical_budget", "budget", "LOSSES", "largest_n"]

def loss_of(attack: str, params: Mapping | None = None) -> str:
    """The loss a run of registered ``attack`` maximises (:meth:`msparse.attacks.registry.AttackMethod.loss_of`):
    ``"CE"``, ``"targeted DLR"``, ``"Square (margin)"``, ``"margin (pgd)"``…; a run's budget unit is its iterations,
    or queries for Square, times the target classes of a targeted attack."""
    cls = get_attack(attack)
    return cls.loss_of(resolve_params(cls, params or {}))


#: AutoAttack component -> the loss it maximises, as :func:`loss_of` labels it
LOSSES: dict[str, str] = {a: loss_of(a) for a in ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "gradest")}

_LABEL = re.compile(r"^(?P<family>\S+/\w+) (?P<start>\d+)\.\.(?P<last>\d+)(?P<tail>.*)$")


# --------------------------------------------------------------------------------------------------
# the point
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Point:
    """What one robust accuracy is a property of (see the module docstring). ``sites``: sorted
    ``(name, α, centre, layout, statistics hash)`` of the active sites, empty for the base; ``images``: the
    image family of the record's data label (``"cifar10/test 0.. (offline)"``), or its data hash when the label
    names no family."""
    model: str
    arch: str | None
    sites: tuple
    eps: float
    norm: str
    images: str

    @property
    def base(self) -> "Point":
        """The same host, threat model and images with every site at α = 0."""
        return Point(self.model, self.arch, (), self.eps, self.norm, self.images)

    @property
    def alpha(self) -> float | str:
        alphas = sorted({s[1] for s in self.sites})
        return 0.0 if not alphas else (alphas[0] if len(alphas) == 1 else "mixed")


def _family(rec: Mapping) -> str:
    m = _LABEL.match(str((rec.get("meta") or {}).get("data") or ""))
    if m is None or int(m.group("start")) != 0:
        return "hash:" + rec["spec"]["data"]["hash"]
    return f"{m.group('family')} 0..{m.group('tail')}"


def point_of(rec: Mapping) -> Point:
    """The point a record measures (raises :class:`~msparse.errors.InputError` for a record that is no attack
    record, e.g. a binarization test)."""
    spec = rec["spec"]
    if spec.get("kind"):
        raise InputError(f"record {rec['key'][:12]} is a {spec['kind']} record, not an attack on a model")
    atk = spec["attack"]
    sites = tuple(sorted((name, float(s["alpha"]), s.get("centre"), s.get("layout"), s.get("stats"))
                         for name, s in (spec.get("sites") or {}).items()))
    return Point(spec["model"], spec.get("arch"), sites, round(float(atk["eps"]), 9), atk["norm"], _family(rec))


# --------------------------------------------------------------------------------------------------
# runs: what an attack record spent
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Run:
    """One run of one loss from one random start along one gradient route; ``budget`` is its iterations
    (APGD, FAB, the estimator) or queries (Square), times the target classes of a targeted attack."""
    loss: str
    route: str
    seed: int
    restart: int
    budget: int


def runs_of(rec: Mapping, *, base: bool | None = None) -> set[Run]:
    """The runs of an attack record. ``base`` (default: the record has no active site): every route collapses to
    the official gradient, so BPDA, surrogate and transfer runs are the direct runs with the same seed."""
    spec = rec["spec"]
    atk = spec["attack"]
    if base is None:
        base = not spec.get("sites")
    out: set[Run] = set()
    if atk["name"] == "none":
        return out
    seed, restarts = int(spec.get("seed", 0)), int(atk.get("n_restarts", 1))
    taus = atk.get("surrogate_taus") or [None]
    for comp in parse_attack(atk["name"]):
        routes = [comp.mode] if comp.mode != "surrogate" else [f"surrogate τ={t:g}" for t in taus]
        if comp.mode == "transfer":
            routes = [f"transfer from {str(spec.get('source') or 'the base')[:12]}"]
        if base:
            routes = ["direct"]
        for a in comp.attacks:
            loss = loss_of(a, comp.params_of(a))
            if a == "square":
                b = int(atk.get("n_queries", 5000))
            elif a in ("apgd-t", "fab-t"):
                b = int(atk.get("n_iter", 100)) * int(atk.get("n_target_classes", 9))
            else:
                b = int(atk.get("n_iter", 100))
            for route in routes:
                for r in range(restarts):
                    out.add(Run(loss, route, seed, r, b))
    return out


def budget(runs: Iterable[Run]) -> dict[str, tuple[int, int]]:
    """``{loss: (number of runs, largest budget of one run)}``."""
    out: dict[str, list] = defaultdict(lambda: [0, 0])
    for r in runs:
        out[r.loss][0] += 1
        out[r.loss][1] = max(out[r.loss][1], r.budget)
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}


# --------------------------------------------------------------------------------------------------
# the store, indexed by point
# --------------------------------------------------------------------------------------------------

_INDEX: dict[str, tuple[tuple, dict[Point, list[dict]]]] = {}


def _stamp(st: Store) -> tuple:
    d = st.root / "records"
    try:
        s = d.stat()
        return (s.st_mtime_ns, s.st_size, len(st.keys()))
    except OSError:
        return (None,)


def _index(st: Store) -> dict[Point, list[dict]]:
    """Every attack record of the store by its point (cached until the records folder changes)."""
    hit = _INDEX.get(str(st.root))
    stamp = _stamp(st)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    idx: dict[Point, list[dict]] = defaultdict(list)
    for rec in st:
        if rec["spec"].get("kind") or "robust_flags" not in rec.get("result", {}):
            continue
        if rec["spec"]["attack"]["name"] == "none":
            continue
        idx[point_of(rec)].append(rec)
    _INDEX[str(st.root)] = (stamp, dict(idx))
    return _INDEX[str(st.root)][1]


class _Images:
    """Hashes of the first n images of an image family, loaded once per family (``cifar10/<split>`` only)."""

    def __init__(self):
        self.cache: dict[str, tuple] = {}

    def prefix_hash(self, family: str, n: int) -> str | None:
        if family.startswith("hash:"):
            return None
        m = re.match(r"^cifar10/(\w+) 0\.\.", family)
        if m is None:
            return None
        have = self.cache.get(family)
        if have is None or len(have[0]) < n:
            from ..data.loading import load_data
            try:
                x, y = load_data("cifar10", m.group(1), n=max(n, 1000 if m.group(1) == "test" else n))
            except Exception:   # data not available here: no pooling across numbers of images
                try:
                    x, y = load_data("cifar10", m.group(1), n=n)
                except Exception:
                    return None
            have = (x, y, {})
            self.cache[family] = have
        x, y, hashes = have
        if n > len(x):
            return None
        if n not in hashes:
            hashes[n] = data_hash(x[:n], y[:n])
        return hashes[n]


_IMAGES = _Images()


def records_at(st: Store, point: Point, n: int) -> list[dict]:
    """The records of ``point`` whose images begin with the first ``n`` of its image family (hash-checked)."""
    out = []
    for rec in _index(st).get(point, []):
        m = rec["spec"]["data"]["n"]
        if m < n:
            continue
        if point.images.startswith("hash:"):
            if m == n:
                out.append(rec)
            continue
        if _IMAGES.prefix_hash(point.images, m) != rec["spec"]["data"]["hash"]:
            continue
        if m != n and _IMAGES.prefix_hash(point.images, n) is None:
            continue
        out.append(rec)
    return out


def largest_n(st: Store, *points: Point) -> int:
    """The largest n on which every one of ``points`` has at least one record (0 if none)."""
    # a record on m images serves every n <= m, so the answer is the smallest of the points' largest records
    return min((max((r["spec"]["data"]["n"] for r in _index(st).get(p, [])), default=0) for p in points), default=0)


# --------------------------------------------------------------------------------------------------
# pooled evidence
# --------------------------------------------------------------------------------------------------

@dataclass
class Evidence:
    """Every record of one point on its first ``n`` images, pooled. ``flags``/``clean``: per-image robust and
    clean flags [n] (robust = survived every attack); ``runs``: the distinct runs behind them; ``records``: one
    dict per record (key, attack, its n, seed, its runs, its flags and robust accuracy on these n images; for a
    cascade stage ``stage`` is True, ``robust`` None, and ``attacked``/``broken`` count what it attacked and broke)."""
    point: Point
    n: int
    flags: list[bool]
    clean: list[bool]
    runs: set[Run]
    records: list[dict] = field(default_factory=list)

    @property
    def robust(self) -> float:
        """Robust accuracy that stands, percent."""
        return 100.0 * sum(self.flags) / self.n if self.n else float("nan")

    @property
    def clean_acc(self) -> float:
        return 100.0 * sum(self.clean) / self.n if self.n else float("nan")

    @property
    def budget(self) -> dict[str, tuple[int, int]]:
        return budget(self.runs)

    @property
    def attacks(self) -> list[str]:
        """The attack names pooled, each once, in the order of the records."""
        seen: list[str] = []
        for r in self.records:
            if r["attack"] not in seen:
                seen.append(r["attack"])
        return seen

    @property
    def beyond_official(self) -> bool:
        """Whether anything but the official gradient attacked this point: BPDA, the surrogate, a transfer, or a
        gradient-free attack (Square, gradient estimation)."""
        return any(r.route != "direct" or r.loss in (LOSSES["square"], LOSSES["gradest"]) for r in self.runs)

    def direct_attacks(self) -> set[str]:
        """The attack names of the records that attack through the official gradient only."""
        return {r["attack"] for r in self.records if r["direct"]}

    def direct_flags(self, attacks: set[str] | None = None) -> list[bool] | None:
        """Per-image worst case over the records that attack through the official gradient only (no BPDA,
        surrogate or transfer): what the paper's evaluation measures. None without such a record. ``attacks``: only
        these attack names — on a base, pass the defence's :meth:`direct_attacks`, since there BPDA, the surrogate
        and a transfer from the base collapse to direct attacks the defence did not receive through its official
        gradient (the same attacks on both sides)."""
        rows = [r for r in self.records if r["direct"] and (attacks is None or r["attack"] in attacks)]
        if not rows:
            return None
        return [all(r["flags"][i] == "1" for r in rows) for i in range(self.n)]


def stage_flags(rec: Mapping) -> str:
    """A record's per-image robust flags as evidence: ``1`` where it left the image standing *or did not attack it*
    (a cascade stage's skipped images, :mod:`msparse.evaluation.cascade`: no evidence either way), ``0`` where the
    image is misclassified clean or was broken. For a full run these are its robust flags."""
    flags, skip = rec["result"]["robust_flags"], rec["spec"].get("skip")
    if not skip:
        return flags
    return "".join("1" if s == "1" and c == "1" else f for f, s, c in zip(flags, skip, rec["result"]["clean_flags"]))


def pool(st: Store, point: Point, n: int) -> Evidence:
    """The per-image worst case of every record of ``point`` on its first ``n`` images (see the module docstring).
    Raises :class:`~msparse.errors.InputError` when the store has none."""
    recs = records_at(st, point, n)
    if not recs:
        raise InputError(f"no stored attack record of this configuration covers its first {n} images "
                         f"(model {point.model[:12]}, α {point.alpha}, ε {point.eps:.5g} {point.norm})")
    flags = [True] * n
    clean = None
    runs: set[Run] = set()
    rows = []
    for rec in sorted(recs, key=lambda r: (r["spec"]["attack"]["name"], r["spec"].get("seed", 0), r["key"])):
        res = rec["result"]
        f = stage_flags(rec)[:n]
        flags = [a and c == "1" for a, c in zip(flags, f)]
        if clean is None:
            clean = [c == "1" for c in res["clean_flags"][:n]]
        mine = runs_of(rec)
        runs |= mine
        name = rec["spec"]["attack"]["name"]
        stage = "skip" in rec["spec"]
        row = {"key": rec["key"], "attack": name, "n_record": rec["spec"]["data"]["n"], "runs": mine,
               "stage": stage, "seed": rec["spec"].get("seed", 0), "flags": f,
               "robust": None if stage else 100.0 * f.count("1") / n,
               "direct": all(c.mode == "direct" for c in parse_attack(name))}
        if stage:   # a cascade stage: what it attacked and broke here, never a robust accuracy of its attack
            skip, cf = rec["spec"]["skip"][:n], res["clean_flags"][:n]
            row["attacked"] = sum(1 for s_, c in zip(skip, cf) if s_ == "0" and c == "1")
            row["broken"] = row["attacked"] - sum(1 for s_, c in zip(skip, res["robust_flags"][:n]) if s_ == "0" and c == "1")
        rows.append(row)
    return Evidence(point, n, flags, clean or [False] * n, runs, rows)


# --------------------------------------------------------------------------------------------------
# comparisons with α = 0
# --------------------------------------------------------------------------------------------------

def _budget_gaps(have: Mapping, need: Mapping) -> dict[str, str]:
    """``{loss: what `have` lacks}`` against ``need`` (both ``{loss: (runs, budget per run)}``)."""
    out = {}
    for loss, (k, b) in need.items():
        hk, hb = have.get(loss, (0, 0))
        gaps = []
        if hk < k:
            gaps.append(f"{k - hk} more run{'s' if k - hk != 1 else ''} ({hk} of {k})")
        if hb < b:
            gaps.append(f"a budget of {b} per run (has {hb})")
        if gaps:
            out[loss] = " and ".join(gaps)
    return out


@dataclass
class Comparison:
    """The defence (``new``, at the point's α) and its base (α = 0) pooled on the same first ``n`` images, and
    whether the base received at least the defence's attack budget (:attr:`missing` empty)."""
    base: Evidence
    new: Evidence

    @property
    def n(self) -> int:
        return self.new.n

    @property
    def missing(self) -> dict[str, str]:
        """``{loss: what the base lacks}``: fewer runs of a loss than the defence received, or runs of fewer
        iterations (queries); empty when the comparison is fair."""
        return _budget_gaps(self.base.budget, self.new.budget)

    @property
    def extra(self) -> dict[str, str]:
        """``{loss: what the defence lacks}``: the converse of :attr:`missing` -- a base attacked harder than its
        defence lowers the base and so overstates a gain (and understates a loss)."""
        return _budget_gaps(self.new.budget, self.base.budget)

    @property
    def fair(self) -> bool:
        return not self.missing

    def describe_budget(self) -> str:
        """One line: the runs per loss each side received, base/α, e.g. ``runs per loss (base/α): CE 9/9, DLR 1/1``."""
        have, need = self.base.budget, self.new.budget
        parts = [f"{loss} {have.get(loss, (0, 0))[0]}/{need.get(loss, (0, 0))[0]}"
                 for loss in sorted(set(have) | set(need))]
        return "runs per loss (base/α): " + ", ".join(parts)


def compare(st: Store, point: Point, n: int | None = None) -> Comparison:
    """``point`` against its base, both pooled on the first ``n`` images (default: the largest n both have)."""
    if not point.sites:
        raise InputError("compare needs a point with active sites (α > 0); this is the base itself")
    n = n or largest_n(st, point, point.base)
    if not n:
        raise InputError(f"the store has no records of both this configuration and its base "
                         f"(model {point.model[:12]}, α {point.alpha})")
    return Comparison(pool(st, point.base, n), pool(st, point, n))


def load_index(st: Store | str | None = None) -> dict[Point, list[dict]]:
    """The store's attack records by point (for listing what a store holds)."""
    return _index(st if isinstance(st, Store) else Store(st))


def describe_records(ev: Evidence) -> str:
    """The records behind an evidence, for folded provenance: ``key[:12] attack (seed, n)`` per record."""
    return ", ".join(f"{r['key'][:12]} {r['attack']} (seed {r['seed']}, n {r['n_record']})" for r in ev.records)



def gap_losses(cmp: Comparison) -> list[str]:
    """The losses of which the base of ``cmp`` has fewer runs than the defence, in the defence's order."""
    return [loss for loss, (k, _) in cmp.new.budget.items() if cmp.base.budget.get(loss, (0, 0))[0] < k]


def record_for_loss(records: Sequence[Mapping], loss: str, budget: int, *, full_only: bool = False) -> dict | None:
    """The cheapest of ``records`` with a run of ``loss`` at least ``budget`` iterations long (or the cheapest with any
    run of it); None when none runs it. ``full_only``: full runs only (no cascade stage)."""
    cands = [r for r in records
             if not (full_only and "skip" in r["spec"]) and any(x.loss == loss for x in runs_of(r))]
    if not cands:
        return None

    def cost(r):
        return (sum(x.budget for x in runs_of(r)) * r["spec"]["data"]["n"], r["spec"]["attack"]["name"])

    long_enough = [r for r in cands if max(x.budget for x in runs_of(r) if x.loss == loss) >= budget]
    return min(long_enough or cands, key=cost)


def typical_budget(ev: Evidence, loss: str) -> int:
    """The median length (iterations) of ``ev``'s runs of ``loss``."""
    b = sorted(x.budget for x in ev.runs if x.loss == loss)
    return b[len(b) // 2]


def base_record_for_gap(st: Store, cmp: Comparison, *, full_only: bool = False) -> tuple[str, dict] | None:
    """``(loss, record)``: the first loss of which the base of ``cmp`` has fewer runs than the defence and some base
    record (on at least ``cmp.n`` images) runs, with the cheapest such record whose run of it is at least as long as
    the defence's median run of it (or the cheapest with any run of it); None when no loss has fewer runs, or no base
    record runs any that has. ``full_only``: full runs only (no cascade stage). What :func:`fill_base` reruns and
    :func:`msparse.evaluation.cascade.balance_base` runs again as a stage."""
    recs = records_at(st, cmp.base.point, cmp.n)
    for loss in gap_losses(cmp):
        best = record_for_loss(recs, loss, typical_budget(cmp.new, loss), full_only=full_only)
        if best is not None:
            return loss, best
    return None


def fill_base(st: Store, cmp: Comparison, *, rebuilder=None, progress: bool = False, max_runs: int = 12) -> list[str]:
    """Compute what the base of ``cmp`` lacks: for each loss with fewer runs than the defence received, the cheapest
    base record of that loss whose run is at least as long as the defence's median run of it (on at least ``cmp.n``
    images) is rerun under attack seeds it has not used yet (:func:`msparse.evaluation.verify.rerun`: same model, images, attack and budget), until every loss
    has as many runs or ``max_runs`` reruns were made. A gap in iterations is not filled here (it needs another
    attack budget; :attr:`Comparison.missing` keeps saying so). Returns the keys of the records it computed or
    found."""
    from .verify import Rebuilder, rerun

    rb = rebuilder or Rebuilder()
    made: list[str] = []
    while len(made) < max_runs:
        pick = base_record_for_gap(st, cmp, full_only=True)
        if pick is None:
            break
        best = pick[1]
        used = {r["spec"].get("seed", 0) for r in records_at(st, cmp.base.point, cmp.n)
                if "skip" not in r["spec"] and r["spec"]["attack"] == best["spec"]["attack"]}
        seed = next(s for s in range(1 << 20) if s not in used)
        res = rerun(best, seed=seed, store=st, rebuilder=rb, progress=progress)
        made.append(res.key)
        _INDEX.pop(str(st.root), None)
        cmp = Comparison(pool(st, cmp.base.point, cmp.n), cmp.new)
    return made
