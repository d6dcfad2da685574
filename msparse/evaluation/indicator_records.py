"""The indicators of attack failure (:mod:`msparse.attacks.indicators`, Pintor et al., NeurIPS 2022) as a record of
the results store, computed once and read back by the book.

An indicators record has the evaluation record's shape (``spec`` with model, arch, sites, attack, data, seed;
``result``; ``meta``; ``provenance``) plus ``spec["kind"] = "indicators"`` and the run's parameters
(``spec["test"]``: restarts, ε = 1 run, noise draws, transfer surrogate, thresholds), so it is keyed, listed,
reused and verified like the binarization records of :mod:`msparse.evaluation.binarize`. The attack is the
secml-torch L∞ PGD-CE of :func:`~msparse.attacks.indicators.attack_indicators` (``spec["attack"]``: ε, steps,
step size); the sites' backward mode (``"exact"``: the direct attack, ``"identity"``: BPDA) is in ``spec["sites"]``,
so at α = 0 (no active site) the direct and the BPDA run are one record.

``result`` holds ``n``, the clean flags of the images (``"1"`` classified correctly: the images attacked),
``n_attacked``, ``clean_acc``, the PGD robust accuracy ``pgd_acc`` (None when the logits have no gradient) and
``indicators``: per name its ``value`` (None when it could not be computed), ``threshold``, ``fires``, ``n``,
``reading`` and ``source``. :func:`msparse.evaluation.integrity.check_record` checks those numbers against each
other and the spec; :func:`recompute` is what ``msparse results verify`` compares a stored record with.
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from .evaluate import EVAL_PROTOCOL, describe_model, stored_or_writable
from .hashing import content_hash, data_hash
from .provenance import provenance

__all__ = ["KIND", "INDICATORS_VERSION", "indicator_record", "recompute", "differences", "indicator_rows"]

KIND = "indicators"
#: bump when what an indicator measures changes (msparse/attacks/indicators.py): it is in every record's key
INDICATORS_VERSION = 1


def _spec(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, step_size: float,
          restarts: int, unconstrained: bool, noise_draws: int, transfer: bool, seed: int) -> dict:
    from ..attacks.indicators import THRESHOLDS

    desc = describe_model(model)
    return {"protocol": EVAL_PROTOCOL, "kind": KIND, "model": desc["model"], "arch": desc["arch"],
            "sites": desc["sites"], "source": None,
            "attack": {"name": "pgd-ce", "eps": float(eps), "norm": "Linf", "n_iter": int(steps),
                       "step_size": float(step_size), "n_restarts": 1},
            "test": {"version": INDICATORS_VERSION, "restarts": int(restarts), "unconstrained": bool(unconstrained),
                     "noise_draws": int(noise_draws), "surrogate": "base" if transfer else None,
                     "thresholds": dict(THRESHOLDS)},
            "data": {"hash": data_hash(x, y), "n": len(x), "shape": list(x.shape[1:])},
            "seed": int(seed), "batch_size": len(x)}


def _number(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def _compute(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: dict) -> dict:
    """The ``result`` of ``spec`` (the model as it is: its α and backward modes)."""
    from ..attacks.indicators import _AtAlphaZero, attack_indicators

    atk, test = spec["attack"], spec["test"]
    model.eval()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).cpu()
    run = attack_indicators(model, x, y, eps=atk["eps"], steps=atk["n_iter"], step_size=atk["step_size"],
                            restarts=test["restarts"], unconstrained=test["unconstrained"],
                            noise_draws=test["noise_draws"],
                            surrogate=_AtAlphaZero(model) if test["surrogate"] == "base" else None, seed=spec["seed"])
    flags = "".join("1" if c else "0" for c in clean.tolist())
    assert run.n_attacked == flags.count("1"), "the attacked images are the clean-correct ones"

    def value(i):   # a share of the attacked images exactly (attack_indicators means in float32)
        v = _number(i.value)
        return v if v is None or i.name == "unstable_predictions" else round(v * i.n) / i.n

    pgd = _number(run.pgd_accuracy)
    return {"n": run.n, "n_attacked": run.n_attacked, "clean_acc": run.n_attacked / run.n, "clean_flags": flags,
            "pgd_acc": None if pgd is None else round(pgd * run.n) / run.n,
            "indicators": {i.name: {"value": value(i), "threshold": i.threshold, "fires": i.fires, "n": i.n,
                                    "reading": i.reading, "source": i.source} for i in run.indicators}}


def indicator_record(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255, steps: int = 20,
                     step_size: float | None = None, restarts: int = 2, unconstrained: bool = True,
                     noise_draws: int = 16, transfer: bool | None = None, seed: int = 0, store=None,
                     name: str | None = None, data: str | None = None, tags: dict | None = None) -> dict:
    """The indicators of attack failure of an L∞ PGD-CE run (``steps`` iterations, step ``step_size``, default
    2.5 ε / steps) against ``model`` as it is (its α and its sites' backward mode: set BPDA with
    :func:`msparse.core.placement.backward_mode`) on images x [N, C, H, W] with labels y [N], as a record;
    reused from ``store`` when present, else computed and written there (``store`` as in
    :func:`~msparse.evaluation.evaluate.evaluate`: a Store or folder, None = the default store, False = neither
    read nor written). ``restarts``, ``unconstrained`` and ``noise_draws`` as in
    :func:`~msparse.attacks.indicators.attack_indicators`; ``transfer`` (default: the model has an active site)
    adds the transfer indicator with the same network at α = 0 as the surrogate. ``name``, ``data`` and ``tags``
    are labels (``meta``), not part of the key."""
    if transfer is None:
        transfer = bool(describe_model(model)["sites"])
    step = float(step_size) if step_size is not None else 2.5 * float(eps) / steps
    spec = _spec(model, x, y, eps=eps, steps=steps, step_size=step, restarts=restarts, unconstrained=unconstrained,
                 noise_draws=noise_draws, transfer=transfer, seed=seed)
    key = content_hash(spec)
    store, rec = stored_or_writable(store, key)
    if rec is not None:
        return rec
    t0 = time.perf_counter()
    result = _compute(model, x, y, spec)
    meta = {k: v for k, v in {"model": name, "data": data, "tags": tags}.items() if v is not None}
    prov = provenance(x.device, wall_s=time.perf_counter() - t0, n=len(x), data_source=data)
    from .provenance import _version
    prov["versions"]["secml-torch"] = _version("secml-torch")   # the attack and trackers the numbers come from
    rec = {"key": key, "spec": spec, "result": result, "meta": meta, "provenance": prov}
    if store is not None:
        store.put(rec)
    return rec


def recompute(rec: dict, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The record ``rec`` recomputed on ``model`` (set up as the record's sites say) and its images, store
    untouched: a record with the same spec and a fresh result (what ``msparse results verify`` compares)."""
    spec = rec["spec"]
    new = _spec(model, x, y, eps=spec["attack"]["eps"], steps=spec["attack"]["n_iter"],
                step_size=spec["attack"]["step_size"], restarts=spec["test"]["restarts"],
                unconstrained=spec["test"]["unconstrained"], noise_draws=spec["test"]["noise_draws"],
                transfer=spec["test"]["surrogate"] == "base", seed=spec["seed"])
    out = {"key": content_hash(new), "spec": new, "result": None}
    if out["key"] == rec["key"]:
        out["result"] = _compute(model, x, y, new)
    return out


def differences(stored: dict, now: dict) -> list[str]:
    """The numbers readers see that differ between a stored indicators ``result`` and its recomputation ``now``
    (``n``, ``n_attacked``, ``pgd_acc``, the clean flags, each indicator's value and firing), as
    ``"field (stored, now)"``; empty when they agree."""
    out = []

    def cmp(label, a, b):
        if a != b:
            out.append(f"{label} ({a!r} stored, {b!r} now)")

    for f in ("n", "n_attacked", "clean_flags", "pgd_acc"):
        cmp(f, stored.get(f), now.get(f))
    a, b = stored.get("indicators") or {}, now.get("indicators") or {}
    for name in sorted(set(a) | set(b)):
        for f in ("value", "fires"):
            cmp(f"indicators[{name!r}].{f}", (a.get(name) or {}).get(f), (b.get(name) or {}).get(f))
    return out


def indicator_rows(rec: dict, **extra) -> list[dict]:
    """One display row per indicator of a stored record, in :data:`~msparse.attacks.indicators.THRESHOLDS` order:
    ``indicator``, ``value`` (NaN when not computed), ``fires``, ``rule``, ``reading``, ``n_attacked``, ``key``,
    plus ``extra``."""
    from ..attacks.indicators import THRESHOLDS

    inds = rec["result"]["indicators"]
    rows = []
    for name in [n for n in THRESHOLDS if n in inds] + [n for n in inds if n not in THRESHOLDS]:
        i = inds[name]
        rows.append({**extra, "indicator": name, "value": math.nan if i["value"] is None else i["value"],
                     "fires": i["fires"], "rule": f"value > {i['threshold']:g}", "reading": i["reading"],
                     "n_attacked": rec["result"]["n_attacked"], "key": rec["key"]})
    return rows
