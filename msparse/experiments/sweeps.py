"""α sweeps of a set-up model through the one engine, :func:`msparse.evaluation.sweep.sweep`.

:func:`evaluate_alphas` is what the pages call: one sweep over α (optionally on a subset of sites, with another
centre or backward mode, on test or training images, crafted on another ``source``), every point a record of the
results store (reused when present), returned as display rows (:func:`msparse.report.tables.display_rows`).
:func:`worst_case` combines attacks run on the same images per image; :func:`stands` adds that worst case of the
direct and the adaptive attack to a page's adaptive rows (the robust accuracy that stands).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import InputError

from .setup import Setup

__all__ = ["evaluate_alphas", "first_images", "worst_case", "stands", "pooled", "pooled_rows", "budget_gaps", "data_label"]


def data_label(s: Setup, split: str, n: int) -> str:
    """The data label stored with a record, e.g. ``"cifar10/test 0..499 (offline)"``."""
    indices = s.data_info["indices"] if split == "test" else f"0..{n - 1}"
    kind = (s.data_info if split == "test" else s.train_info).get("kind")
    return f"cifar10/{split} {indices} ({kind})"


def evaluate_alphas(s: Setup, alphas: Sequence[float], *, attack: str = "apgd-ce", eps: float = 8 / 255,
                    norm: str = "Linf", n_iter: int = 100, seed: int = 0, split: str = "test",
                    sites: Sequence | None = None, centre: str | None = None, backward: str | None = None,
                    label: str | None = None, progress: bool = True, n_queries: int = 5000,
                    n_restarts: int = 1, source=None, **extra) -> list[dict]:
    """Evaluate ``attack`` at each α (applied to ``sites``, default all; ``centre``/``backward`` at every site)
    on the setup's test images (``split="test"``) or as many training images (``"train"``), through
    :func:`~msparse.evaluation.sweep.sweep` with its default batch size, so the CLI and the book share records.

    Returns display rows (:func:`msparse.report.tables.display_rows`: percent, ``d_robust`` in pp and
    ``p_robust`` against α = 0 on the same images when α = 0 is in ``alphas``), each with ``split`` and
    ``extra`` added. ``source``: the model ``transfer:`` attacks are crafted on (default: the model at α = 0).
    """
    from ..evaluation.sweep import sweep
    from ..report.tables import display_rows

    x, y = (s.x, s.y) if split == "test" else (s.x_train[: len(s.x)], s.y_train[: len(s.y)])
    sw = sweep(s.model, x, y, alphas=[float(a) for a in alphas], eps=eps, attack=attack, norm=norm, seed=seed,
               n_iter=n_iter, n_restarts=n_restarts, n_queries=n_queries, source=source,
               sites=None if sites is None else {"subset": list(sites)},
               centres=None if not centre else [centre], backward=None if not backward else [backward],
               store=s.store, name=s.model_name, data=data_label(s, split, len(x)),
               stats_label=str(extra.get("statistics", s.stats["mode"])),
               tags={"book": label or "sweep", "split": split}, progress="lines" if progress else False,
               compare=any(float(a) == 0.0 for a in alphas))
    return display_rows(sw, split=split, **extra)


def _robust_from(flags: Sequence[bool]) -> dict:
    """Robust accuracy of per-image flags with its 95% Wilson interval, in percent (display-row keys)."""
    from ..evaluation.significance import wilson

    k, n = sum(map(bool, flags)), len(flags)
    lo, hi = wilson(k, n)
    return {"robust": 100 * k / n, "robust_lo": 100 * lo, "robust_hi": 100 * hi}


def first_images(rows: Sequence[Mapping], n: int) -> list[dict]:
    """Rows of :func:`evaluate_alphas` restricted to their first ``n`` images (robust flags, n and robust accuracy
    with its Wilson interval; the paired columns dropped), to be set beside an attack run on those images only."""
    out = []
    for r in rows:
        if r["n"] < n:
            raise InputError(f"cannot take the first {n} images of a row of {r['n']}")
        flags = r["robust_flags"][:n]
        row = {k: v for k, v in r.items() if k not in ("d_robust", "p_robust", "key")}
        out.append({**row, "n": n, "robust_flags": flags, **_robust_from([c == "1" for c in flags])})
    return out


def worst_case(*row_lists: Sequence[Mapping]) -> list[dict]:
    """Per-image worst case over attacks run on the same images at the same α (rows of :func:`evaluate_alphas`,
    same α order): an image counts as robust only if it survives every attack."""
    from ..evaluation.significance import mcnemar

    out, base = [], None
    for rows in zip(*row_lists):
        if len({r["alpha"] for r in rows}) != 1 or len({r["n"] for r in rows}) != 1:
            raise InputError("worst_case needs rows of the same alpha and the same images, in the same order")
        flags = [all(c == "1" for c in chars) for chars in zip(*(r["robust_flags"] for r in rows))]
        row = {k: v for k, v in rows[0].items() if k not in ("d_robust", "p_robust")}
        row.update(**_robust_from(flags), key=None,
                   attack="worst of " + ", ".join(r["attack"] for r in rows),
                   robust_flags="".join("1" if f else "0" for f in flags))
        if row["alpha"] == 0.0 and base is None:
            base = flags
        elif base is not None:
            pr = mcnemar(base, flags)
            row.update(d_robust=100 * pr.delta, p_robust=pr.p_value)
        out.append(row)
    return out


def stands(direct: Sequence[Mapping], adaptive: Sequence[Mapping], store=None) -> list[dict]:
    """``adaptive`` rows (e.g. BPDA) with the robust accuracy that stands added: at each of their α, every stored
    attack record of that configuration on the row's images pooled image by image
    (:func:`msparse.evaluation.evidence.pool`: this page's direct attack and BPDA, and whatever any other page, seed
    or attack stored on those images), so the book has one such number per model, α and images. Adds ``stands``,
    ``stands_lo``, ``stands_hi`` (%, 95% Wilson), ``stands_attacks`` (the attacks pooled) and, against α = 0 pooled
    on the same images, ``d_stands`` (pp), ``p_stands`` (exact McNemar) and ``stands_fair`` (False when the base
    received fewer runs or iterations of some loss than the defence). Rows whose α has no ``direct`` row are returned
    as they are."""
    have = {round(float(r["alpha"]), 9) for r in direct}
    out = []
    for r in adaptive:
        row = dict(r)
        if round(float(r["alpha"]), 9) in have:
            row.update(pooled(r, store))
        out.append(row)
    return out


def pooled_rows(rows: Sequence[Mapping], store=None) -> list[dict]:
    """The robust accuracy that stands at each row's configuration and images, as rows shaped like
    :func:`worst_case`'s (``robust``, its interval, ``robust_flags``, ``attack`` naming what was pooled, and Δ / p
    against the α = 0 row among ``rows``, plus ``fair``: the base received at least the defence's budget). Every
    row needs a stored record (``key``); the same images in every row."""
    from ..evaluation import evidence as ev
    from ..evaluation.significance import mcnemar
    from ..report.tables import open_store

    st = open_store(store)
    out, base = [], None
    for r in rows:
        rec = st.get(r["key"]) if r.get("key") else None
        if rec is None:
            raise InputError(f"pooled_rows needs stored records; the row at α = {r.get('alpha')} has none")
        point = ev.point_of(rec)
        e = ev.pool(st, point, int(r["n"]))
        row = {k: v for k, v in r.items() if k not in ("d_robust", "p_robust")}
        row.update(**_robust_from(e.flags), key=None, robust_flags="".join("1" if f else "0" for f in e.flags),
                   attack="every stored attack (" + ", ".join(e.attacks) + ")", evidence=e)
        if not point.sites and base is None:
            base = e
        elif base is not None:
            pr = mcnemar(base.flags, e.flags)
            row.update(d_robust=100 * pr.delta, p_robust=pr.p_value, fair=ev.Comparison(base, e).fair)
        out.append(row)
    return out


def budget_gaps(base_row: Mapping, row: Mapping) -> dict:
    """``{"missing": what the base lacks, "extra": what the defence lacks}`` for two :func:`pooled_rows` rows
    (:attr:`msparse.evaluation.evidence.Comparison.missing` and ``.extra``; the keyword arguments of
    :func:`msparse.report.referee.referee_verdict`); both empty for rows that carry no pooled evidence (rows built
    elsewhere, e.g. by :func:`worst_case`)."""
    from ..evaluation.evidence import Comparison

    if "evidence" not in base_row or "evidence" not in row:
        return {"missing": {}, "extra": {}}
    c = Comparison(base_row["evidence"], row["evidence"])
    return {"missing": c.missing, "extra": c.extra}


def pooled(row: Mapping, store=None) -> dict:
    """The robust accuracy that stands at ``row``'s configuration and images (a display row with a record key):
    ``stands``, ``stands_lo``, ``stands_hi``, ``stands_attacks`` and, for α > 0, ``d_stands``, ``p_stands``,
    ``stands_fair`` (see :func:`stands`). Empty without a stored record behind the row."""
    from ..evaluation import evidence as ev
    from ..evaluation.significance import mcnemar
    from ..report.tables import open_store

    st = open_store(store)
    rec = st.get(row["key"]) if row.get("key") else None
    if rec is None:
        return {}
    point = ev.point_of(rec)
    n = int(row["n"])
    new = ev.pool(st, point, n)
    lo_hi = _robust_from(new.flags)
    out = {"stands": lo_hi["robust"], "stands_lo": lo_hi["robust_lo"], "stands_hi": lo_hi["robust_hi"],
           "stands_attacks": ", ".join(new.attacks)}
    if point.sites and ev.records_at(st, point.base, n):
        cmp = ev.Comparison(ev.pool(st, point.base, n), new)
        pr = mcnemar(cmp.base.flags, new.flags)
        out.update(d_stands=100 * pr.delta, p_stands=pr.p_value, stands_fair=cmp.fair)
    return out
