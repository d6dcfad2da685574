"""Sweeps: a grid of configurations (α, ε, site subsets, centres, statistics modes, backward modes), one record
per point, each compared with the base model (every α = 0) on the same images.

This module owns grids: the points (:func:`sweep`, :func:`site_subsets`) and their table (:class:`Sweep`). It sits
on top of the evaluation layer: each point is set on the model, handed to :mod:`.executor` when a cluster is
chosen (which computes the missing records), then read back through :func:`~msparse.evaluation.evaluate.evaluate`;
the model's site state is kept by :func:`msparse.core.placement.preserved_sites`.

>>> sw = sweep(model, x, y, alphas=[0, 0.1, 0.2], attack="apgd")        # doctest: +SKIP
>>> sw.table()                                                         # doctest: +SKIP
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from ..core.calibration import calibrate
from ..core.placement import base_model, operators, preserved_sites, set_alpha, site_state, sites as _sites
from ..errors import InputError, UnknownNameError
from .evaluate import DEFAULT_BATCH_SIZE, Result, evaluate, progress_bar
from .executor import Job, get_executor
from .significance import Paired
from .store import Store

__all__ = ["sweep", "Sweep", "site_subsets", "COLUMNS"]


def site_subsets(model: nn.Module, kind: str = "all") -> dict[str, list[str] | None]:
    """Named site subsets for sweeps (paper Tables 7 and 8).

    kind: ``"all"`` ({"all": None}), ``"single"`` (one subset per site, ``"single:<index>"``),
    ``"cumulative"`` (sites 0..i, ``"cumulative:<index>"``), ``"tags"`` (one subset per site tag,
    ``"tag:<tag>"``, e.g. tag:main_path and tag:after_add).
    """
    ss = _sites(model)
    if kind != "all" and not ss:
        raise InputError("the model has no MeanSparse sites: call msparse.sparsify(model, ...) first")
    if kind == "all":
        return {"all": None}
    if kind == "single":
        return {f"single:{s.index}": [s.name] for s in ss}
    if kind == "cumulative":
        return {f"cumulative:{s.index}": [t.name for t in ss if t.index <= s.index] for s in ss}
    if kind == "tags":
        tags = sorted({t for s in ss for t in s.tags})
        if not tags:
            raise InputError("the sites of this model carry no tags; use a preset placement")
        return {f"tag:{t}": [s.name for s in ss if t in s.tags] for t in tags}
    raise UnknownNameError(f"unknown site subset kind {kind!r}; choose from all, single, cumulative, tags")


#: columns of :meth:`Sweep.table`, in order (accuracies and differences are fractions in [0, 1] / [-1, 1])
COLUMNS = ("attack", "eps", "n", "clean", "clean_lo", "clean_hi", "robust", "robust_lo", "robust_hi",
           "d_clean", "d_robust", "gained", "lost", "p_clean", "p_robust", "cached", "key", "robust_flags")


@dataclass
class Sweep:
    """Results of a sweep: one point (dict of axis values), one :class:`Result` and one paired
    comparison with the base model (all α = 0, same attack/ε/images) per entry.

    :meth:`rows` / :meth:`table` is the one row schema every caller uses (the CLI, the experiments, the
    book): the point's axes (``alpha``, ``eps``, and ``sites``/``stats``/``centre``/``backward`` when swept),
    then :data:`COLUMNS`. Accuracies, intervals and differences are fractions; percent is for display only.
    """
    points: list[dict]
    results: list[Result]
    base: dict[float, Result]
    paired: list[Paired | None]
    paired_clean: list[Paired | None]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self):
        return iter(zip(self.points, self.results, self.paired))

    def rows(self) -> list[dict]:
        out = []
        for pt, r, pr, pc in zip(self.points, self.results, self.paired, self.paired_clean):
            row = dict(pt)
            row.update(attack=r.attack, eps=r.eps, n=r.n, clean=r.clean_acc, clean_lo=r.clean_ci[0],
                       clean_hi=r.clean_ci[1], robust=r.robust_acc, robust_lo=r.robust_ci[0],
                       robust_hi=r.robust_ci[1], d_clean=None, d_robust=None, gained=None, lost=None,
                       p_clean=None, p_robust=None)
            if pr is not None:
                row.update(d_clean=pc.delta, d_robust=pr.delta, gained=pr.gained, lost=pr.lost,
                           p_clean=pc.p_value, p_robust=pr.p_value)
            row.update(cached=r.cached, key=r.key, robust_flags=r.result["robust_flags"])
            out.append(row)
        return out

    def table(self):
        """A pandas DataFrame of :meth:`rows`: the axis columns, then :data:`COLUMNS` — n, clean and robust
        accuracy with Wilson 95% bounds, d_clean/d_robust vs the base, gained/lost (discordant pairs), exact
        McNemar p-values on clean and robust flags, cached, key, per-example robust flags."""
        import pandas as pd

        return pd.DataFrame(self.rows())

    def records(self, store=None) -> list[dict]:
        """The stored records behind the points (and the bases), for provenance."""
        st = store if isinstance(store, Store) else Store(store)
        keys = dict.fromkeys([r.key for r in self.results] + [b.key for b in self.base.values()])
        return [rec for rec in (st.get(k) for k in keys) if rec is not None]


def _as_list(v, default):
    if v is None:
        return [default]
    if isinstance(v, (str, float, int)):
        return [v]
    return list(v)


def sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
          alphas: Iterable[float] = (0.0,), eps: float | Iterable[float] = 8 / 255,
          attack: str = "apgd-ce", sites: str | Mapping[str, Sequence | None] | None = None,
          centres: Iterable[str] | None = None, stats: Iterable[str] | None = None,
          calib_data=None, calib_batch_size: int = 512, backward: Iterable[str] | None = None,
          norm: str = "Linf", seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE, n_iter: int = 100,
          n_restarts: int = 1, n_queries: int = 5000, source: nn.Module | None = None, store=None,
          name: str | None = None, data: str | None = None, stats_label: str | None = None,
          tags: Mapping[str, Any] | None = None, progress: bool | str = True, compare: bool = True,
          cluster=None) -> Sweep:
    """Evaluate a grid of configurations, one record per point, each compared with the base model.

    Axes (the grid is their product; ``None`` keeps the model's current setting):
        alphas: α values, applied to every site of the current subset (others get 0).
        eps: ε values.
        sites: None (all sites), a kind for :func:`site_subsets` ("single", "cumulative", "tags"),
            or a mapping label -> list of site names/indices (None = all sites).
        centres: centre references ("mean", "zero", "global").
        stats: statistics modes ("exact", "official"); recalibrates on ``calib_data`` once per mode
            and reuses the statistics for every other point.
        backward: backward modes ("exact", "identity") used by the attack.
    The base (every α = 0) is evaluated once per ε (a point with every α = 0 *is* the base: one
    record); each point gets an exact McNemar test against it on the same images. ``source``: the model
    ``transfer:`` attacks are crafted on (default: the model at α = 0). ``stats_label``: the statistics'
    label in the records' meta. ``progress``: True = a bar, ``"lines"`` = one line per point (the book's
    log), False = silent. The model's α, backward, centre and statistics are restored afterwards.
    ``cluster``: where the points are computed (:mod:`msparse.evaluation.executor`: None = the one set by
    ``executor.using(...)`` or ``$MSPARSE_CLUSTER``, else this process; ``"local:N"``, a scheduler address,
    ``"slurm:N"``). On a cluster the missing points are computed by the workers into the store first, then
    read back here exactly as the in-process sweep reads stored records (``cached`` stays False for them).
    """
    alphas = [float(a) for a in _as_list(alphas, 0.0)]
    eps_l = [float(e) for e in _as_list(eps, 8 / 255)]
    if not alphas or not eps_l:
        raise InputError("sweep needs at least one alpha and one eps")
    if isinstance(sites, str):
        subsets = site_subsets(model, sites)
    elif sites is None:
        subsets = {"all": None}
    else:
        subsets = dict(sites)
    centres_l = _as_list(centres, None)
    stats_l = _as_list(stats, None)
    backs_l = _as_list(backward, None)
    if stats_l != [None] and calib_data is None:
        raise InputError("sweep(stats=[...]) recalibrates: pass calib_data (un-augmented training "
                         "images, a tensor [N, C, H, W] or a loader)")
    mods = operators(model)
    if not mods and (any(a > 0 for a in alphas) or centres_l != [None] or stats_l != [None]
                     or backs_l != [None]):
        raise InputError("the model has no MeanSparse sites: call msparse.sparsify(model, ...) and "
                         "msparse.calibrate(model, data) before sweeping alpha")
    common = dict(norm=norm, seed=seed, batch_size=batch_size, n_iter=n_iter,
                  n_restarts=n_restarts, n_queries=n_queries, store=store, name=name, data=data,
                  progress=False, source=source)
    grid = list(itertools.product(stats_l, centres_l, backs_l, list(subsets.items()), alphas, eps_l))
    points, results, paired, paired_clean = [], [], [], []
    base: dict[float, Result] = {}

    def configured():   # sets the model up for each grid point in turn
        current_stats = object()
        for st_mode, centre, back, (label, subset), a, e in grid:
            if st_mode is not None and st_mode != current_stats:
                calibrate(model, calib_data, mode=st_mode, batch_size=calib_batch_size)
                current_stats = st_mode
            if mods:
                for m in mods:
                    if centre is not None:
                        m.centre = centre
                    if back is not None:
                        m.set_backward(back)
                if subset is None:
                    set_alpha(model, a)
                else:
                    set_alpha(model, {s: a for s in subset})
            pt = {"alpha": a, "eps": e}
            if len(subsets) > 1 or sites is not None:
                pt["sites"] = label
            if st_mode is not None:
                pt["stats"] = st_mode
            if centre is not None:
                pt["centre"] = centre
            if back is not None:
                pt["backward"] = back
            t = {**(tags or {}), **{k: v for k, v in pt.items() if k not in ("alpha", "eps")}}
            yield st_mode, a, e, pt, t

    computed = _on_cluster(cluster, model, x, y, attack, configured, common, stats_label, tags, compare, mods,
                           progress)
    bar = progress_bar(len(grid), f"sweep {attack}", progress is True, unit="point")
    try:
        with preserved_sites(model):
            for st_mode, a, e, pt, t in configured():
                t0 = time.perf_counter()
                r = evaluate(model, x, y, attack, eps=e, stats=st_mode or stats_label, tags=t or None, **common)
                if r.key in computed:
                    r.cached = False
                if progress == "lines":
                    print(f"  α={a:<5g} {attack:<10s} clean {100 * r.clean_acc:5.1f}%  robust "
                          f"{100 * r.robust_acc:5.1f}%  [{100 * r.robust_ci[0]:.1f}, {100 * r.robust_ci[1]:.1f}]  "
                          f"{'stored' if r.cached else f'{time.perf_counter() - t0:.1f}s'}", flush=True)
                pr = pc = None
                if compare:
                    if e not in base:
                        if all(float(m.alpha) == 0.0 for m in mods):   # this point is the base itself
                            base[e] = r
                        else:
                            with base_model(model):
                                base[e] = evaluate(model, x, y, attack, eps=e, stats=st_mode or stats_label,
                                                   tags=tags, **common)
                            base[e].cached = base[e].cached and base[e].key not in computed
                    pr, pc = r.compare(base[e]), r.compare(base[e], "clean")
                points.append(pt)
                results.append(r)
                paired.append(pr)
                paired_clean.append(pc)
                bar.update(1)
                if hasattr(bar, "set_postfix_str"):
                    bar.set_postfix_str(f"alpha={a:g} robust={100 * r.robust_acc:.1f}%")
    finally:
        bar.close()
    return Sweep(points, results, base, paired, paired_clean)


def _on_cluster(cluster, model, x, y, attack, configured, common, stats_label, tags, compare, mods,
                progress) -> set:
    """The cluster hook: when an executor other than this process is chosen, compute every missing point
    (and base) of the grid on it first; returns the keys computed there (empty in-process)."""
    ex = get_executor(cluster)
    if not ex.distributed:
        return set()
    keep = ("eps", "norm", "seed", "batch_size", "n_iter", "n_restarts", "n_queries", "name", "data")
    kw = {k: v for k, v in common.items() if k in keep}
    jobs, seen = [], set()
    with preserved_sites(model):
        for st_mode, a, e, pt, t in configured():
            jobs.append(Job(site_state(model), attack, {**kw, "eps": e, "stats": st_mode or stats_label,
                                                        "tags": t or None}))
            if compare and e not in seen:
                seen.add(e)
                if not all(float(m.alpha) == 0.0 for m in mods):
                    with base_model(model):
                        jobs.append(Job(site_state(model), attack, {**kw, "eps": e, "stats": st_mode or stats_label,
                                                                    "tags": tags}))
    return ex.run(model, x, y, jobs, store=common["store"], source=common["source"], progress=progress)
