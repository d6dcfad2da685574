"""The worst case as a cascade: attacks cheapest first, each run only on the images still standing.

The robust accuracy that stands is a per-image worst case over many attacks (:mod:`msparse.evaluation.evidence`).
Computed as independent runs, every attack pays for every image, although an image broken by the first attack
needs no second one; AutoAttack runs its own four attacks as such a cascade for that reason (Croce & Hein 2020,
``AutoAttack.run_standard_evaluation``). Here every stage is an ordinary record of the store:

* a stage whose attack already has a full record on these images (same model, α, ε, budget, seed) reuses it;
* otherwise the stage is evaluated with ``skip`` = the images an earlier stage broke (or the model gets wrong):
  its record marks them as not attacked (``spec["skip"]``, outcome ``-``), its key differs from the full run's,
  and the evidence layer reads a skipped image as "no evidence", never as robust or broken. No per-attack number
  is read off a stage that skipped images: the book's per-attack columns come from full runs only.

The worst case of the cascade equals the pooled worst case of its stage records (each image is broken by the first
stage that breaks it, and stands only if every stage attacked it and none broke it).

**The same strength at α = 0.** On the base (every α = 0) BPDA, the surrogate and a transfer from the base are the
official gradient (:func:`msparse.attacks.base.direct_equivalent`): a stage that would repeat an earlier stage's
computation runs instead under the next unused attack seed, so the base receives as many runs of each loss as the
defence (:class:`msparse.evaluation.evidence.Comparison`). A cascade that extends stored evidence (``pooled``) counts
the computations of those records as done too: a stage that would repeat one (on the base, e.g. the surrogate's
APGD-CE after AutoAttack's APGD-CE stage) runs under the next unused seed, on both sides alike.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..errors import InputError
from .evaluate import DEFAULT_BATCH_SIZE, Result, _resolve_store, evaluate, evaluation_plan
from .evidence import stage_flags
from .store import Store

__all__ = ["Stage", "StageResult", "Cascade", "cascade", "balance_base", "run_key", "DEFAULT_STAGES"]


@dataclass(frozen=True)
class Stage:
    """One stage: an attack name (:func:`msparse.attacks.base.parse_attack`) and its budget (None: the cascade's)."""
    attack: str
    n_iter: int | None = None
    n_restarts: int | None = None
    n_queries: int | None = None
    label: str = ""

    @property
    def title(self) -> str:
        return self.label or self.attack


#: the book's cascade, cheapest first (forward+backward passes per attacked image at the default budget in
#: brackets): the official gradient (100), BPDA with margin-loss PGD (2 × 100), BPDA with APGD-CE then APGD-DLR
#: (100 + 100), the sigmoid surrogate (one APGD-CE per temperature), a transfer from the base (its APGD on the
#: base), adv-lib's APGD and FMN through BPDA (an implementation independent of AutoAttack), standard AutoAttack
#: (APGD-CE, APGD-T, FAB-T, Square 5000) and gradient estimation (20 steps of 64 queries). An image broken by an
#: early stage costs nothing later.
DEFAULT_STAGES: tuple[Stage, ...] = (
    Stage("apgd-ce", label="official gradient (APGD-CE)"),
    Stage("bpda:pgd", n_restarts=2, label="BPDA, margin PGD (2 restarts)"),
    Stage("bpda:apgd", label="BPDA, APGD-CE + DLR"),
    Stage("surrogate:apgd-ce", label="surrogate gradient"),
    Stage("transfer:apgd", label="transfer from the base"),
    Stage("bpda:advlib-apgd", label="adv-lib APGD (BPDA)"),
    Stage("bpda:advlib-fmn", label="adv-lib FMN (BPDA)"),
    Stage("aa", label="AutoAttack (standard)"),
    Stage("gradest", n_iter=20, label="gradient estimation"),
)


@dataclass
class StageResult:
    """What one stage did: ``attacked`` images (clean-correct and standing before it), ``broken`` of them,
    ``standing`` after it; ``reused``: ``"full"`` (a full record of this attack was in the store), ``"stored"``
    (this stage's record was), or ``""`` (computed now); ``wall_s``: the record's recorded compute time."""
    stage: Stage
    key: str
    seed: int
    attacked: int
    broken: int
    standing: int
    reused: str
    wall_s: float | None


@dataclass
class Cascade:
    """The cascade's per-image worst case: ``flags`` [N] (robust = clean and no stage broke it), ``clean`` [N],
    and one :class:`StageResult` per stage, in order."""
    flags: np.ndarray
    clean: np.ndarray
    stages: list[StageResult] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.flags)

    @property
    def robust_acc(self) -> float:
        return float(self.flags.mean()) if self.n else float("nan")

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.stages]

    def wall_s(self, *, computed_only: bool = False) -> float:
        """Compute seconds of the stage records (all of them, or those computed by this call)."""
        return float(sum(s.wall_s or 0.0 for s in self.stages if not computed_only or not s.reused))

    def table(self):
        """One row per stage (pandas): attack, images attacked, broken, standing after, reused, seconds."""
        import pandas as pd

        return pd.DataFrame([{"stage": s.stage.title, "attack": s.stage.attack, "seed": s.seed,
                              "attacked": s.attacked, "broken": s.broken, "standing": s.standing,
                              "record": s.key[:12], "reused": s.reused or "no",
                              "seconds": None if s.wall_s is None else round(s.wall_s, 1)} for s in self.stages])


def run_key(rec: Mapping[str, Any]) -> str:
    """The key of the full run a record's computation belongs to: its own key for a full run, the key its spec has
    without the skip mask for a cascade stage (:func:`msparse.evaluation.evaluate.evaluation_plan`)."""
    from .hashing import content_hash

    spec = rec["spec"]
    return rec["key"] if "skip" not in spec else content_hash({k: v for k, v in spec.items() if k != "skip"})


def _as_stage(s) -> Stage:
    if isinstance(s, Stage):
        return s
    if isinstance(s, str):
        return Stage(s)
    raise InputError(f"a cascade stage is an attack name or a Stage, got {type(s).__name__}")


def cascade(model: nn.Module, x: torch.Tensor, y: torch.Tensor, stages: Sequence[Stage | str] = DEFAULT_STAGES, *,
            eps: float = 8 / 255, norm: str = "Linf", seed: int = 0, n_iter: int = 100, n_restarts: int = 1,
            n_queries: int = 5000, batch_size: int = DEFAULT_BATCH_SIZE, source: nn.Module | None = None,
            store: Store | str | os.PathLike | bool | None = None, name: str | None = None,
            data: str | None = None, stats: str | None = None, tags: Mapping[str, Any] | None = None,
            progress: bool = False, standing: Sequence[bool] | None = None,
            pooled: Sequence[Mapping[str, Any]] = ()) -> Cascade:
    """Run ``stages`` in order on ``model`` (x [N, C, H, W] in [0, 1], y [N]), each on the images still standing
    (see the module docstring). Every stage is a record of ``store`` (reused when present, resumable when
    interrupted); arguments as :func:`msparse.evaluation.evaluate.evaluate`, ``n_iter``/``n_restarts``/``n_queries``
    being the default budget of stages that set none.

    ``standing`` [N] bools: start from these images instead of every image (e.g. the images the store's evidence
    leaves standing, :func:`msparse.evaluation.evidence.pool`: what is broken there needs no attack here); the
    pooled worst case is then the cascade's flags and-ed with that evidence. ``pooled``: the records of that
    evidence; no stage repeats the computation of one of them (:func:`run_key`): it runs under the next unused
    seed instead, a stored full run of a stage's own attack included."""
    stages = [_as_stage(s) for s in stages]
    if standing is not None:
        standing = np.asarray(standing, dtype=bool).reshape(-1)
        if len(standing) != len(x):
            raise InputError(f"standing has {len(standing)} flags for {len(x)} images; give one per image")
    if not stages:
        raise InputError("a cascade needs at least one stage (an attack name)")
    st = _resolve_store(store)
    used: set[str] = {run_key(r) for r in pooled}
    clean: np.ndarray | None = None
    out: list[StageResult] = []
    for stage in stages:
        kw = dict(eps=eps, norm=norm, batch_size=batch_size, source=source,
                  n_iter=stage.n_iter or n_iter, n_restarts=stage.n_restarts or n_restarts,
                  n_queries=stage.n_queries or n_queries)
        s_seed = int(seed)
        plan = evaluation_plan(model, x, y, stage.attack, seed=s_seed, **kw)
        while plan.key in used:   # on the base BPDA/transfer are the direct attack: another random start instead
            s_seed += 1
            plan = evaluation_plan(model, x, y, stage.attack, seed=s_seed, **kw)
        used.add(plan.key)
        labels = dict(name=name, data=data, stats=stats,
                      tags={**(dict(tags) if tags else {}), "cascade": stage.title}, progress=progress)
        full = st.get(plan.key) if st is not None else None
        if full is not None or (standing is None and not out):   # a full run: stored, or the first stage
            res = (Result.from_record(full, cached=True) if full is not None
                   else evaluate(model, x, y, stage.attack, seed=s_seed, store=st if st is not None else False,
                                 **kw, **labels))
            reused = "full" if full is not None else ""
        else:
            res = evaluate(model, x, y, stage.attack, seed=s_seed, store=st if st is not None else False,
                           skip=~standing, **kw, **labels)
            reused = "stored" if res.cached else ""
        rec = res.to_record()
        ev = np.array([c == "1" for c in stage_flags(rec)], dtype=bool)
        if clean is None:
            clean = res.clean_flags
            standing = clean.copy() if standing is None else clean & standing
        before = standing.copy()
        standing = standing & ev
        out.append(StageResult(stage, res.key, s_seed, int(before.sum()), int((before & ~standing).sum()),
                               int(standing.sum()), reused, (res.provenance or {}).get("wall_s")))
    return Cascade(standing, clean, out)


def balance_base(model: nn.Module, x: torch.Tensor, y: torch.Tensor, store: Store, new_point, *, max_stages: int = 12,
                 **kw) -> list[StageResult]:
    """Give the base the runs per loss its defence received, as cascade stages (the cheap counterpart of
    :func:`msparse.evaluation.evidence.fill_base`, which reruns full records).

    ``model``: the base (every α = 0) on the images ``x`` [N, C, H, W], ``y`` [N] of the comparison; ``new_point``:
    the defence's point (:func:`msparse.evaluation.evidence.point_of`). While the base has fewer runs of a loss than
    the defence pooled on these N images (:attr:`msparse.evaluation.evidence.Comparison.missing`; e.g. the
    surrogate's three temperatures are three CE runs on the defence, one on the base, where the surrogate is the
    direct gradient), the cheapest base record with a run of that loss at least as long as the defence's median run
    of it is run again, under its next unused seed, as a stage on the images the base's evidence leaves standing.
    A loss no base record runs (e.g. the defence's margin-loss BPDA PGD or adv-lib's FMN) is given to the base by
    the cheapest defence record that runs it, its attack unchanged (on the base, where every α is 0, BPDA's identity
    backward, the surrogate and the transfer from the base are the direct gradient). At most ``max_stages`` stages;
    a gap in iterations is not filled (it needs another budget). ``kw``: as :func:`cascade` (budget defaults, batch
    size, labels). Returns the stages run, in order."""
    from .evidence import (Comparison, base_record_for_gap, gap_losses, pool, record_for_loss, records_at,
                           typical_budget)

    kw = {k: v for k, v in kw.items() if k not in ("eps", "norm")}   # the threat model is the record's
    n = len(x)
    base_point = new_point.base
    out: list[StageResult] = []
    for _ in range(max_stages):
        cmp = Comparison(pool(store, base_point, n), pool(store, new_point, n))
        pick = base_record_for_gap(store, cmp)
        if pick is None:
            defence = records_at(store, new_point, n)
            pick = next(((loss, r) for loss in gap_losses(cmp)
                         if (r := record_for_loss(defence, loss, typical_budget(cmp.new, loss))) is not None), None)
            whose = "the defence's attack"
        else:
            whose = "another run"
        if pick is None:
            break
        loss, best = pick
        atk = best["spec"]["attack"]
        stage = Stage(atk["name"], n_iter=atk.get("n_iter"), n_restarts=atk.get("n_restarts"),
                      n_queries=atk.get("n_queries"),
                      label=f"base: {whose} of {loss} ({atk['name']})")
        c = cascade(model, x, y, [stage], store=store, standing=cmp.base.flags,
                    pooled=records_at(store, base_point, n),
                    eps=float(atk["eps"]), norm=atk.get("norm", "Linf"), **kw)
        out.extend(c.stages)
    return out
