"""Evaluation: ``evaluate()`` one configuration under one attack (sweeps are :mod:`msparse.evaluation.sweep`).

Every point is one record in a :class:`~msparse.evaluation.store.Store`, keyed by a content hash of what
determines it (host-model weights and architecture fingerprint, active sites with their α/centre/backward/statistics,
attack and budget, data, seed, batch size; library versions are provenance, not key). Evaluation runs batch by batch;
each finished batch is written as a shard, so a run killed at any moment resumes where it stopped, and a
finished record is reused by every later call (the CLI, notebooks, the book).

This module owns one point: its key (:func:`evaluation_plan`, pure: the executor asks it which points are
stored), its computation (:func:`evaluate`), the result schema and its one merge of consecutive image ranges
(:func:`merge_results`: batches here, index shards in :mod:`.shards`), and :class:`Result`. Above it, in the
order data flows: :mod:`.shards` (image ranges of one point) < :mod:`.executor` (where points run) <
:mod:`.sweep` (grids of points).

>>> res = evaluate(model, x, y, attack="apgd-ce", eps=8/255)          # doctest: +SKIP
>>> res.clean_acc, res.robust_acc, res.robust_ci                       # doctest: +SKIP
"""
from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from .._device import model_device
from ..attacks.autoattack import autoattack_checks, predict, run_attack, square_check
from ..attacks.base import AttackConfig, attack_params, canonical_name, direct_equivalent, parse_attack
from ..attacks.diagnostics import zero_gradient_fraction
from ..core.placement import backward_mode, blocked_fractions, named_operators
from ..errors import InputError, InputTypeError, UnknownNameError
from .fingerprint import fingerprint
from .significance import Paired, mcnemar, wilson
from .hashing import content_hash, data_hash, flags_to_str, model_checksum, str_to_flags, tensor_hash
from .provenance import provenance
from .store import Store

__all__ = ["evaluate", "Result", "evaluation_plan", "EvalPlan", "merge_results", "describe_model", "host_checksum",
           "EVAL_PROTOCOL", "DEFAULT_BATCH_SIZE", "NOT_IN_KEY", "progress_bar"]

#: bump when the meaning of a record changes (invalidates every stored record)
EVAL_PROTOCOL = 1
#: images per batch for every new evaluation (the CLI, sweeps and the book alike), so a point computed by
#: one is reused by the others; the key records min(batch size, n), the batch the attack actually saw
DEFAULT_BATCH_SIZE = 500
_NORMS = {"linf": "Linf", "l2": "L2"}
_ROBUST, _CLEAN_WRONG = "1", "0"
#: outcome of a clean-correct image a cascade stage did not attack (an earlier stage broke it)
NOT_ATTACKED = "-"
_DIAG_N = 32


# --------------------------------------------------------------------------------------------------
# the result object
# --------------------------------------------------------------------------------------------------

@dataclass
class Result:
    """One evaluated point: accuracies with Wilson 95% intervals, per-example flags, provenance.

    Accuracies are fractions in [0, 1]. ``clean_flags``/``robust_flags`` are bool arrays [N] in the
    order of the evaluated images. ``cached`` is True when the record came from the store.
    """
    key: str
    spec: dict
    result: dict
    meta: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    cached: bool = False

    @classmethod
    def from_record(cls, rec: dict, cached: bool = False) -> "Result":
        return cls(rec["key"], rec["spec"], rec["result"], rec.get("meta", {}),
                   rec.get("provenance", {}), cached)

    def to_record(self) -> dict:
        return {"key": self.key, "spec": self.spec, "result": self.result, "meta": self.meta,
                "provenance": self.provenance}

    # numbers -------------------------------------------------------------------------------------
    n = property(lambda self: self.result["n"])
    clean_acc = property(lambda self: self.result["clean_acc"])
    robust_acc = property(lambda self: self.result["robust_acc"])
    clean_ci = property(lambda self: tuple(self.result["clean_ci"]))
    robust_ci = property(lambda self: tuple(self.result["robust_ci"]))
    attack = property(lambda self: self.spec["attack"]["name"])
    eps = property(lambda self: self.spec["attack"]["eps"])

    @property
    def clean_flags(self) -> np.ndarray:
        return np.array(str_to_flags(self.result["clean_flags"]), dtype=bool)

    @property
    def robust_flags(self) -> np.ndarray:
        return np.array(str_to_flags(self.result["robust_flags"]), dtype=bool)

    @property
    def components(self) -> dict[str, dict]:
        """Per attack component: robust accuracy and accuracy after each AutoAttack attack."""
        return self.result.get("components", {})

    def component_flags(self, name: str) -> np.ndarray:
        """Robust flags [N] of one component of a worst-case attack (e.g. ``"bpda:apgd-ce+t"``)."""
        comps = self.components
        if name not in comps:
            raise UnknownNameError(f"no component {name!r}; this result has {list(comps)}")
        return np.array([c == _ROBUST for c in comps[name]["outcome"]], dtype=bool)

    @property
    def skipped(self) -> np.ndarray | None:
        """[N] bools: the images this record did not attack (a cascade stage), or None for a full run."""
        s = self.spec.get("skip")
        return None if s is None else np.array([c == "1" for c in s], dtype=bool)

    @property
    def warnings(self) -> dict[str, int]:
        """AutoAttack's warnings during this evaluation (message -> count)."""
        return self.result.get("diagnostics", {}).get("messages", {})

    @property
    def diagnostics(self) -> dict:
        """Gradient-masking diagnostics: AutoAttack messages, zero-gradient fractions, blocked
        fraction per site (on the first 32 clean images)."""
        return self.result.get("diagnostics", {})

    def compare(self, base: "Result", which: str = "robust") -> Paired:
        """Exact McNemar test of this result against ``base`` on the same images."""
        if self.spec["data"]["hash"] != base.spec["data"]["hash"]:
            raise InputError("paired comparison needs the same images: the data hashes differ")
        if which not in ("robust", "clean"):
            raise UnknownNameError(f"which must be 'robust' or 'clean', got {which!r}")
        get = (lambda r: r.robust_flags) if which == "robust" else (lambda r: r.clean_flags)
        return mcnemar(get(base), get(self))

    def __repr__(self) -> str:
        lo, hi = self.robust_ci
        sites = self.spec.get("sites") or {}
        alphas = sorted({s["alpha"] for s in sites.values()})
        a = "0" if not alphas else (f"{alphas[0]:g}" if len(alphas) == 1 else "mixed")
        return (f"Result({self.attack}, eps={self.eps:.5g}, alpha={a} on {len(sites)} sites, "
                f"n={self.n}: clean {100 * self.clean_acc:.2f}%, robust {100 * self.robust_acc:.2f}% "
                f"[{100 * lo:.2f}, {100 * hi:.2f}]{', cached' if self.cached else ''})")


# --------------------------------------------------------------------------------------------------
# describing a model (what goes into the key)
# --------------------------------------------------------------------------------------------------

def _alpha7(a: float) -> float:
    # α lives in a float32 buffer (0.15 -> 0.150000006); 7 significant digits give the value set
    return float(f"{float(a):.7g}")


def host_checksum(model: nn.Module) -> str:
    """Checksum of the host model's weights: every state-dict tensor except the MeanSparse buffers."""
    prefixes = tuple(f"{name}." for name, _ in named_operators(model))
    return model_checksum(model, exclude={k for k in model.state_dict() if prefixes and k.startswith(prefixes)})


def describe_model(model: nn.Module) -> dict:
    """``{"model": host checksum, "arch": architecture fingerprint, "sites": {...active sites...}}`` for the
    record key.

    The host checksum names the weights, the fingerprint (:func:`msparse.evaluation.fingerprint.fingerprint`) the
    rest of what the host computes (module classes, their configuration, tensors outside the state dict, registry
    entry and version): two models with the same weights and another forward are described apart. Both leave out
    every MeanSparse operator, so a sparsified model with all α = 0 has the same description as the plain model
    (it computes the same function). Each active site (α > 0) contributes its α, centre, layout, backward mode and
    a hash of its statistics.
    """
    sites = {}
    for name, m in named_operators(model):
        a = float(m.alpha)
        if a == 0.0:
            continue
        if not m.calibrated:
            raise InputError(f"site {name!r} has alpha={a:g} but no statistics: run "
                             "msparse.calibrate(model, data) before evaluating")
        sites[name] = {"alpha": _alpha7(a), "centre": m.centre, "layout": m.layout,
                       "backward": m.backward, "stats": tensor_hash(m.mean, m.var, length=16)}
    return {"model": host_checksum(model), "arch": fingerprint(model), "sites": sites}


# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------

def _check_inputs(model, x, y, eps, norm, seed, batch_size) -> tuple[torch.Tensor, float, str]:
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise InputTypeError(f"x and y must be torch tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.ndim < 2:
        raise InputError(f"x must be a batch of images [N, C, H, W], got shape {tuple(x.shape)}")
    if len(x) == 0:
        raise InputError("no data to evaluate: x is empty (N = 0)")
    if y.ndim != 1:
        raise InputError(f"y must be a vector of labels [N], got shape {tuple(y.shape)}")
    if len(x) != len(y):
        raise InputError(f"x has {len(x)} images but y has {len(y)} labels")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise InputError(f"y must hold integer class labels, got dtype {y.dtype}")
    if not x.dtype.is_floating_point:
        raise InputError(f"x must be a float tensor of pixels in [0, 1], got dtype {x.dtype}")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0 or not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"x must hold pixels in [0, 1] (AutoAttack works in that box), got values "
                         f"in [{lo:.3g}, {hi:.3g}]; put the normalisation inside the model")
    if int(y.min()) < 0:
        raise InputError(f"labels must be >= 0, got {int(y.min())}")
    if isinstance(norm, str) and norm.lower() in _NORMS:
        norm = _NORMS[norm.lower()]
    else:
        raise InputError(f"norm must be 'Linf' or 'L2', got {norm!r}")
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise InputError(f"eps must be a number > 0, got {eps!r}") from None
    if not math.isfinite(e) or e <= 0:
        raise InputError(f"eps must be a finite number > 0, got {eps!r}")
    if norm == "Linf" and e >= 1:
        raise InputError(f"eps={e:g} is not a valid Linf radius for pixels in [0, 1] "
                         f"(did you mean {e:g}/255 = {e / 255:.5f}?)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 63:
        raise InputError(f"seed must be an integer from 0 to 2**63 - 1 (torch's generator range), got {seed!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    return y.long(), e, norm


def _resolve_store(store) -> Store | None:
    if store is False:
        return None
    if store is None or store is True:
        return Store()
    if isinstance(store, Store):
        return store
    return Store(store)


def stored_or_writable(store, key: str) -> tuple[Store | None, dict | None]:
    """``(store, record)``: the store ``store`` names (None for ``False``) and its record ``key``, or, when it has
    none, ``(store, None)`` after checking the store is writable (fail before computing, not after)."""
    st = _resolve_store(store)
    if st is None:
        return None, None
    rec = st.get(key)
    if rec is None:
        st.check_writable()
    return st, rec


# --------------------------------------------------------------------------------------------------
# one batch
# --------------------------------------------------------------------------------------------------

def _outcome_string(clean: torch.Tensor, broken_by: torch.Tensor, skipped: torch.Tensor | None = None) -> str:
    out = []
    skipped = [False] * len(clean) if skipped is None else skipped.tolist()
    for c, b, s in zip(clean.tolist(), broken_by.tolist(), skipped):
        out.append(_CLEAN_WRONG if not c else NOT_ATTACKED if s else (_ROBUST if b < 0 else chr(ord("a") + int(b))))
    return "".join(out)


def _check_skip(skip, n: int) -> str | None:
    """``skip`` (None, a sequence of N bools, or a flags string of N ``0``/``1``) as a flags string, or None when
    no image is skipped (the key of a full run never changes)."""
    if skip is None:
        return None
    if isinstance(skip, str):
        if set(skip) - {"0", "1"}:
            raise InputError("skip must be a string of '0'/'1' flags (1 = do not attack this image), one per image")
        flags = skip
    else:
        try:
            flags = flags_to_str([bool(v) for v in (skip.tolist() if hasattr(skip, "tolist") else skip)])
        except TypeError:
            raise InputTypeError(f"skip must be a sequence of booleans, one per image; got {type(skip).__name__}") \
                from None
    if len(flags) != n:
        raise InputError(f"skip has {len(flags)} flags for {n} images; give one per image (1 = do not attack)")
    return flags if "1" in flags else None


def _eval_batch(model, xb, yb, components, cfg, *, device, source, n_classes, batch_size,
                run_checks, skip: torch.Tensor | None = None) -> dict:
    t0 = time.perf_counter()
    xb, yb = xb.to(device), yb.to(device)
    clean = predict(model, xb).eq(yb)
    targets = clean if skip is None else clean & ~skip.to(device)   # the images the attacks run on
    messages: list[str] = []
    if run_checks:
        names = sorted({a for c in components for a in c.attacks})
        _, msgs = autoattack_checks(model, xb, yb, names, cfg, randomized=True)
        messages += msgs
    comps = {}
    for c in components:
        if c.preset == "none":
            continue
        out = run_attack(model, xb, yb, c, cfg, clean=targets, batch_size=batch_size,
                         device=device, source=source, n_classes=n_classes,
                         only=None if skip is None else targets)
        comps[c.name] = _outcome_string(clean.cpu(), out.broken_by, None if skip is None else skip.cpu())
        messages += out.messages
    return {"n": len(xb), "clean": flags_to_str(clean.cpu()), "components": comps,
            "messages": messages, "wall_s": time.perf_counter() - t0}


def _diagnostics(model, x, y, device) -> dict:
    """Gradient-masking diagnostics on one batch of clean images."""
    x, y = x.to(device), y.to(device)
    out: dict[str, Any] = {"n_diag": len(x)}
    out["zero_grad"] = zero_gradient_fraction(model, x, y)
    mods = named_operators(model)
    if mods and any(float(m.alpha) > 0 for _, m in mods):
        with backward_mode(model, "identity"):
            out["zero_grad_identity"] = zero_gradient_fraction(model, x, y)
        fr = blocked_fractions(model, x)
        out["blocked"] = {k: round(v, 6) for k, v in fr.items()}
        active = [v for (n, m) in mods for k, v in fr.items() if k == n and float(m.alpha) > 0]
        out["blocked_mean"] = float(np.mean(active)) if active else 0.0
    return out


def _after(outcome: str, attacks: Sequence[str]) -> dict[str, float]:
    n = len(outcome)
    res = {}
    for j, a in enumerate(attacks):
        ok = sum(1 for ch in outcome if ch == _ROBUST or (ch != _CLEAN_WRONG and ord(ch) - 97 > j))
        res[a] = ok / n
    return res


def merge_results(parts: Sequence[Mapping]) -> dict:
    """The ``result`` of a record from the results of consecutive image ranges, in image order: the one merge of
    the result schema (the batches of :func:`evaluate`, the index shards of
    :func:`msparse.evaluation.shards.merge_records`).

    Each part holds ``n``, ``clean_flags``, ``components`` (name -> ``{"attacks", "outcome"}``) and, optionally,
    ``diagnostics["messages"]`` (message -> count). Everything is rebuilt from the concatenated *per-example*
    flags, never from the parts' accuracies: an image is robust when it is clean and every component leaves it
    robust; counts, accuracies, Wilson intervals and each component's accuracy after each of its attacks follow.
    The merged ``diagnostics`` hold the messages summed over the parts."""
    n = sum(int(p["n"]) for p in parts)
    clean = "".join(p["clean_flags"] for p in parts)
    robust = [ch == "1" for ch in clean]
    comps = {}
    for name, c0 in (parts[0]["components"] if parts else {}).items():
        outcome = "".join(p["components"][name]["outcome"] for p in parts)
        flags = [ch == _ROBUST for ch in outcome]
        robust = [r and f for r, f in zip(robust, flags)]
        comps[name] = {"attacks": list(c0["attacks"]), "outcome": outcome, "robust": sum(flags),
                       "robust_acc": sum(flags) / n, "after": _after(outcome, c0["attacks"])}
    k_clean, k_rob = clean.count("1"), sum(robust)
    skipped = max((c["outcome"].count(NOT_ATTACKED) for c in comps.values()), default=0)
    msgs = Counter()
    for p in parts:
        msgs.update((p.get("diagnostics") or {}).get("messages") or {})
    return {
        "n": n, "clean": k_clean, "robust": k_rob,
        "clean_acc": k_clean / n, "robust_acc": k_rob / n,
        "clean_ci": list(wilson(k_clean, n)), "robust_ci": list(wilson(k_rob, n)),
        "clean_flags": clean, "robust_flags": flags_to_str(robust),
        "components": comps,
        "diagnostics": {"messages": dict(msgs)},
        **({"not_attacked": skipped} if skipped else {}),
    }


def _batch_result(payload: dict, components) -> dict:
    """One batch's shard payload (as :func:`_eval_batch` writes it) as a part for :func:`merge_results`."""
    return {"n": payload["n"], "clean_flags": payload["clean"],
            "components": {c.name: {"attacks": c.attacks, "outcome": payload["components"][c.name]}
                           for c in components if c.preset != "none"},
            "diagnostics": {"messages": Counter(payload["messages"])}}


# --------------------------------------------------------------------------------------------------
# the plan of an evaluation: its record key, known before anything runs
# --------------------------------------------------------------------------------------------------

#: keywords of :func:`evaluate` that only label a record or shape its run: not part of the key
NOT_IN_KEY = ("name", "data", "stats", "tags", "progress", "diagnostics")


@dataclass(frozen=True)
class EvalPlan:
    """What :func:`evaluate` will compute, known without running anything: the record's ``key`` and ``spec``, the
    attack ``components`` (after :func:`~msparse.attacks.base.direct_equivalent`), its ``cfg``, the
    ``batch_size`` the attack sees (min(batch size, N)) and the labels ``y`` as int64."""
    key: str
    spec: dict
    components: list
    cfg: AttackConfig
    batch_size: int
    y: torch.Tensor


def evaluation_plan(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str = "apgd-ce", *,
                    eps: float = 8 / 255, norm: str = "Linf", seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE,
                    n_iter: int = 100, n_restarts: int = 1, n_queries: int = 5000,
                    source: nn.Module | None = None, skip=None) -> EvalPlan:
    """The plan (record key, spec, attack) of ``evaluate(model, x, y, attack, ...)`` with these arguments; the
    inputs are checked as :func:`evaluate` checks them. Pure: nothing runs, the models and the store are not
    touched (the executor learns which points are stored this way, :mod:`msparse.evaluation.executor`)."""
    y, eps_f, norm = _check_inputs(model, x, y, eps, norm, seed, batch_size)
    components = parse_attack(attack)
    cfg = AttackConfig(eps=eps_f, norm=norm, seed=int(seed), n_iter=int(n_iter),
                       n_restarts=int(n_restarts), n_queries=int(n_queries))
    for v, nm in ((n_iter, "n_iter"), (n_restarts, "n_restarts"), (n_queries, "n_queries")):
        if int(v) < 1:
            raise InputError(f"{nm} must be >= 1, got {v!r}")
    desc = describe_model(model)
    if not desc["sites"] and source is None:
        components = direct_equivalent(components)
    batch_size = min(int(batch_size), len(x))
    skip_flags = _check_skip(skip, len(x))
    spec = {
        "protocol": EVAL_PROTOCOL,
        "model": desc["model"],
        "arch": desc["arch"],
        "sites": desc["sites"],
        "source": None if source is None else describe_model(source),
        "attack": {"name": canonical_name(components),
                   **{k: v for k, v in cfg.as_dict().items() if k != "seed"},
                   **attack_params(components)},
        "data": {"hash": data_hash(x, y), "n": len(x), "shape": list(x.shape[1:])},
        "seed": int(seed),
        "batch_size": int(batch_size),
    }
    if skip_flags is not None:   # a cascade stage (msparse.evaluation.cascade): which images it does not attack
        spec["skip"] = skip_flags
    return EvalPlan(content_hash(spec), spec, components, cfg, batch_size, y)


# --------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------

def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str = "apgd-ce", *,
             eps: float = 8 / 255, norm: str = "Linf", seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE,
             n_iter: int = 100, n_restarts: int = 1, n_queries: int = 5000,
             source: nn.Module | None = None, store: Store | str | os.PathLike | bool | None = None,
             name: str | None = None, data: str | None = None, stats: str | None = None,
             tags: Mapping[str, Any] | None = None, progress: bool = False,
             diagnostics: bool = True, skip=None) -> Result:
    """Clean and robust accuracy of ``model`` on images x [N, C, H, W] in [0, 1], labels y [N].

    Args:
        attack: see :mod:`msparse.attacks.base` (``"none"``, ``"apgd-ce"``, ``"apgd"``, ``"aa"``,
            ``"bpda"``, ``"transfer"``, ``"worst:apgd,bpda"``, ...). On a model with no active site and no
            ``source``, BPDA and transfer compute the direct attack and share its record
            (:func:`msparse.attacks.base.direct_equivalent`).
        eps, norm: threat model (``"Linf"`` or ``"L2"``); eps for pixels in [0, 1] (8/255, 0.5).
        seed: AutoAttack seed (fixed and recorded; AutoAttack reseeds at every attack and batch).
        batch_size: images per batch; one batch = one resumable shard. The key holds min(batch_size, N),
            the batch AutoAttack actually sees (its random starts depend on it).
        n_iter, n_restarts, n_queries: attack budget (AutoAttack: 100, 1, 5000).
        source: model to craft ``transfer`` attacks on (default: this model with every α = 0).
        store: a Store or folder (default: ``$MSPARSE_RESULTS`` or ``<repo>/results``); False =
            compute without reading or writing records.
        name, data, stats, tags: labels stored with the record (not part of the key).
        progress: show a tqdm bar over batches.
        diagnostics: add blocked fractions per site and zero-gradient fractions (first 32 images).
        skip: [N] bools (or a ``0``/``1`` string), True = do not attack this image: a stage of a cascade
            (:mod:`msparse.evaluation.cascade`). The mask enters the key (``spec["skip"]``); a skipped clean-correct
            image has outcome ``-`` and counts as not robust, so the record's robust accuracy is *not* the
            attack's: read it only through :mod:`msparse.evaluation.evidence`, which treats a skipped image as
            no evidence. No image skipped = the full run's record.
    Returns:
        a :class:`Result`. The model's training flag, α, backward modes and the caller's RNG state
        are left as they were.
    """
    plan = evaluation_plan(model, x, y, attack, eps=eps, norm=norm, seed=seed, batch_size=batch_size,
                           n_iter=n_iter, n_restarts=n_restarts, n_queries=n_queries, source=source, skip=skip)
    y, components, cfg, batch_size = plan.y, plan.components, plan.cfg, plan.batch_size
    skip_t = None if "skip" not in plan.spec else torch.tensor([c == "1" for c in plan.spec["skip"]])
    spec, key = plan.spec, plan.key
    st = _resolve_store(store)
    device = model_device(model)
    was_training = model.training
    src_training = source.training if source is not None else False
    model.eval()
    if source is not None:
        source.eval()
    try:
        meta = {k: v for k, v in {"model": name, "data": data, "stats": stats,
                                  "tags": dict(tags) if tags else None}.items() if v is not None}
        if st is not None:
            rec = st.get(key)
            if rec is not None:
                if st.shard_dir(key).exists():   # killed between writing the record and cleanup
                    st.drop_shards(key)
                return Result.from_record(_merge_meta(rec, meta), cached=True)
            st.check_writable()   # fail now, not after the first batch

        try:
            with torch.no_grad():
                n_classes = int(model(x[:1].to(device)).shape[-1])
        except RuntimeError as e:   # a shape or channel mismatch: the images are not what the model takes
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"the model cannot run on x of shape {tuple(x.shape)} ({first}); pass images "
                             "[N, C, H, W] of the size the model takes") from e
        if int(y.max()) >= n_classes:
            raise InputError(f"labels must be in [0, {n_classes}) for a model with {n_classes} "
                             f"outputs, got a label {int(y.max())}")

        n = len(x)
        n_shards = math.ceil(n / batch_size)
        shards: list[dict | None] = [None] * n_shards
        resumed = 0
        if st is not None:
            for i in range(n_shards):
                p = st.get_shard(key, i)
                if p is not None and p.get("n") == min(batch_size, n - i * batch_size):
                    shards[i] = p
                    resumed += 1
        todo = [i for i in range(n_shards) if shards[i] is None]
        bar = progress_bar(len(todo), f"{spec['attack']['name']} eps={cfg.eps:.4g}", progress)
        try:
            for i in todo:
                sl = slice(i * batch_size, min(n, (i + 1) * batch_size))
                payload = _eval_batch(model, x[sl], y[sl], components, cfg, device=device,
                                      source=source, n_classes=n_classes, batch_size=batch_size,
                                      run_checks=(i == 0), skip=None if skip_t is None else skip_t[sl])
                if st is not None:
                    st.put_shard(key, i, payload)
                shards[i] = payload
                bar.update(1)
        finally:
            bar.close()

        t0 = time.perf_counter()
        result = merge_results([_batch_result(s, components) for s in shards])
        diag = result["diagnostics"]
        for c in components:   # AutoAttack's check that Square did not beat the gradient attacks
            if "square" in c.attacks and c.mode != "transfer":
                accs = {"clean": result["clean_acc"], **result["components"][c.name]["after"]}
                for m in square_check(accs):
                    diag["messages"][m] = diag["messages"].get(m, 0) + 1
        if diagnostics:   # on at most 32 clean images: cheap next to any attack
            k = min(n, batch_size, _DIAG_N)
            diag.update(_diagnostics(model, x[:k], y[:k], device))
        wall = sum(s["wall_s"] for s in shards) + (time.perf_counter() - t0)
        record = {"key": key, "spec": spec, "result": result, "meta": meta,
                  "provenance": provenance(device, wall_s=wall, n=n, data_source=data,
                                           batches=n_shards, batches_resumed=resumed)}
        if st is not None:
            st.put(record)
            st.drop_shards(key)
        return Result.from_record(record, cached=False)
    finally:
        model.train(was_training)
        if source is not None:
            source.train(src_training)


def _merge_meta(rec: dict, meta: dict) -> dict:
    """A stored record with the labels of a new request added in memory (first labels win; tags are merged).

    Reading a record never rewrites it: the committed store stays byte for byte what was committed."""
    old = rec.get("meta", {})
    new = dict(old)
    for k, v in meta.items():
        if k == "tags":
            new["tags"] = {**v, **(old.get("tags") or {})}
        elif k not in old:
            new[k] = v
    return rec if new == old else {**rec, "meta": new}


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass

    def set_postfix_str(self, *a, **k):
        pass


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "batch"):
    """A tqdm bar over ``total`` steps, or a silent stand-in when ``enabled`` is false or there is nothing to do."""
    if not enabled or total == 0:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
