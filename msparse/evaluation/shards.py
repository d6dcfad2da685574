"""Index shards: one large evaluation split into image ranges that are records of their own, merged exactly.

A shard is ``evaluate`` on images [a, b) with the same attack, seed and batch size: a record keyed by its own
data hash, computed by any worker, resumable like any record. The merged record is built from the shards'
*per-example* flags, never from their accuracies (:func:`msparse.evaluation.evaluate.merge_results`, the merge
``evaluate`` applies to its batches): concatenated clean flags and per-component outcomes, then exact counts,
exact Wilson intervals (and, downstream, exact McNemar tests on the same flags). It gets the spec, and therefore
the key, of the unsharded evaluation of all images, so every reader (the sweep, the book) finds it as if it had
been computed in one piece.

This module owns the arithmetic of shards: where they start (:func:`shard_bounds`) and how their records become
one (:func:`merge_records`). It runs nothing; :mod:`.executor` computes the shards
(``Executor(shard_size=...)``, :func:`~msparse.evaluation.executor.evaluate_sharded`).

Why shard boundaries are multiples of the batch size: ``evaluate`` runs AutoAttack batch by batch, and
AutoAttack reseeds at every attack and batch, so an image's random starts depend on which batch it is in and
on its position there. A shard that starts at a multiple of the batch size sees exactly the batches of the
unsharded run (the last one possibly short in both), hence the same random starts and the same per-example
results. A boundary anywhere else regroups the images and changes their random starts: the numbers would be
just as valid, but not identical to the unsharded run's.

Why an average of shard accuracies is wrong: shards of unequal size (the last one) would be weighted equally,
and the interval of a mean of per-shard accuracies is not the binomial interval of the pooled count. The
merged record is the pooled count k/n with its Wilson interval.
"""
from __future__ import annotations

from typing import Sequence

from ..errors import InputError
from .evaluate import merge_results
from .hashing import content_hash, data_hash
from .provenance import provenance

__all__ = ["shard_bounds", "merge_records"]


def shard_bounds(n: int, batch_size: int, shard_size: int | None) -> list[tuple[int, int]]:
    """Index ranges ``[(a, b), ...]`` covering ``range(n)``; every boundary is a multiple of ``batch_size``
    (``shard_size`` is rounded down to one, at least one batch). ``shard_size`` None or >= n: one range."""
    if n < 1 or batch_size < 1:
        raise InputError(f"shard_bounds needs n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    if shard_size is None or shard_size >= n:
        return [(0, n)]
    if shard_size < 1:
        raise InputError(f"shard_size must be >= 1, got {shard_size}")
    step = max(batch_size, (int(shard_size) // batch_size) * batch_size)
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def merge_records(parts: Sequence[dict], x, y) -> dict:
    """The record of the evaluation of all of ``x, y`` from the records of its shards, in image order.

    The shards must share everything but their images (model, sites, attack, seed, batch size); the merged
    ``spec`` is theirs with the data of all images, so its key is the unsharded evaluation's key. Counts,
    accuracies and Wilson intervals come from the concatenated per-example flags; ``diagnostics`` are the
    first shard's (the same first images) with AutoAttack's messages summed over shards (its pre-checks run
    once per shard, so their messages may be counted more often than in one piece)."""
    if not parts:
        raise InputError("merge_records needs at least one shard record")
    strip = lambda s: {k: v for k, v in s.items() if k not in ("data", "batch_size")}   # noqa: E731
    first = parts[0]["spec"]
    for p in parts[1:]:
        if strip(p["spec"]) != strip(first):
            raise InputError("these shards are not of one evaluation: their model, sites, attack or seed differ")
        if p["spec"]["batch_size"] > first["batch_size"]:
            raise InputError("shards of one evaluation share the batch size")
    n = sum(int(p["result"]["n"]) for p in parts)
    if n != len(x):
        raise InputError(f"the shards hold {n} images, the evaluation {len(x)}")
    spec = {**first, "data": {"hash": data_hash(x, y), "n": len(x), "shape": list(x.shape[1:])}}
    result = merge_results([p["result"] for p in parts])
    diag = {k: v for k, v in (parts[0]["result"].get("diagnostics") or {}).items() if k != "messages"}
    diag["messages"] = result["diagnostics"]["messages"]
    result["diagnostics"] = diag
    prov0 = parts[0].get("provenance") or {}
    wall = sum(float((p.get("provenance") or {}).get("wall_s") or 0.0) for p in parts)
    prov = provenance(None, wall_s=wall, n=n, data_source=(parts[0].get("meta") or {}).get("data"),
                      merged_from=[{"key": p["key"], "n": p["result"]["n"]} for p in parts])
    prov["device"] = prov0.get("device", prov.get("device"))
    meta = dict(parts[0].get("meta") or {})
    return {"key": content_hash(spec), "spec": spec, "result": result, "meta": meta, "provenance": prov}

