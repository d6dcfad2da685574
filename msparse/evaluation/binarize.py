"""The binarization test (:mod:`msparse.attacks.binarization`) as a record of the results store.

A binarization record has the evaluation record's shape (``spec`` with model, sites, attack, data, seed; ``result``;
``meta``; ``provenance``) plus ``spec["kind"] = "binarization"`` and the test's parameters, so it is keyed,
listed, reused and verified like every other record. ``result["flags"]`` holds one character per image:
``"1"`` the attack found the planted adversarial region, ``"0"`` it did not, ``"-"`` no separable task could be
built (the sample is invalid and does not count).
"""
from __future__ import annotations

import time

import torch
from torch import nn

from ..attacks.base import parse_attack, canonical_name
from .evaluate import EVAL_PROTOCOL, describe_model, stored_or_writable
from .hashing import content_hash, data_hash
from .provenance import provenance

__all__ = ["binarization_record", "KIND", "PARAMS"]

KIND = "binarization"
#: the test's fixed parameters (recorded in the key)
PARAMS = {"n_inner": 63, "inner": 0.5}


def binarization_record(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str = "apgd-ce", *, eps: float = 8 / 255,
                        n_iter: int = 100, seed: int = 0, store=None, name: str | None = None,
                        data: str | None = None, tags: dict | None = None) -> dict:
    """The binarization test of ``attack`` on images x [N, C, H, W] through ``model`` as it is (its α), as a
    record (the labels y [N] only identify the images: the test's task is built per image); reused from ``store``
    when present, else computed and written there (``store`` as in :func:`~msparse.evaluation.evaluate.evaluate`:
    a Store or folder, None = the default store, False = neither read nor written)."""
    from ..attacks.binarization import binarization_test

    comps = parse_attack(attack)
    if len(comps) != 1:
        from ..errors import InputError
        raise InputError(f"the binarization test runs one attack at a time, got {attack!r}")
    model.eval()
    desc = describe_model(model)
    spec = {"protocol": EVAL_PROTOCOL, "kind": KIND, "model": desc["model"], "arch": desc["arch"],
            "sites": desc["sites"],
            "source": None,
            "attack": {"name": canonical_name(comps), "eps": float(eps), "norm": "Linf", "n_iter": int(n_iter),
                       "n_restarts": 1, "n_queries": max(int(n_iter) * 10, 100), "n_target_classes": 1},
            "test": dict(PARAMS),
            "data": {"hash": data_hash(x, y), "n": len(x),
                     "shape": list(x.shape[1:])},
            "seed": int(seed), "batch_size": 1}
    key = content_hash(spec)
    store, rec = stored_or_writable(store, key)
    if rec is not None:
        return rec
    t0 = time.perf_counter()
    out = binarization_test(model, x, attack, eps=eps, n_iter=n_iter, seed=seed, **PARAMS)
    flags = "".join("-" if f is None else ("1" if f else "0") for f in out.flags)
    result = {"n": out.n, "valid": out.valid, "passed": out.passed,
              "pass_rate": out.pass_rate if out.valid else None, "flags": flags}
    meta = {k: v for k, v in {"model": name, "data": data, "tags": tags}.items() if v is not None}
    rec = {"key": key, "spec": spec, "result": result, "meta": meta,
           "provenance": provenance(next(model.parameters()).device, wall_s=time.perf_counter() - t0, n=len(x),
                                    data_source=data)}
    if store is not None:
        store.put(rec)
    return rec
