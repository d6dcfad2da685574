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

__all__ = ["evaluate_alphas", "first_images", "worst_case", "stands", "data_label"]


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


def stands(direct: Sequence[Mapping], adaptive: Sequence[Mapping]) -> list[dict]:
    """``adaptive`` rows (e.g. BPDA) with the page's robust accuracy that stands added: at each of their α, the
    per-image worst case of the direct attack (the row of ``direct`` at that α, same images) and the adaptive one
    (:func:`worst_case`): ``stands``, ``stands_lo``, ``stands_hi`` (%, 95% Wilson) and, against α = 0 on the same
    images, ``d_stands`` (pp) and ``p_stands`` (exact McNemar). Rows whose α has no direct row are returned as
    they are, without these keys."""
    at = {round(float(r["alpha"]), 9): r for r in direct}
    pairs = [(at[round(float(r["alpha"]), 9)], r) for r in adaptive if round(float(r["alpha"]), 9) in at]
    worst = iter(worst_case([d for d, _ in pairs], [a for _, a in pairs]) if pairs else [])
    out = []
    for r in adaptive:
        row = dict(r)
        if round(float(r["alpha"]), 9) in at:
            w = next(worst)
            row.update(stands=w["robust"], stands_lo=w["robust_lo"], stands_hi=w["robust_hi"])
            if "d_robust" in w:
                row.update(d_stands=w["d_robust"], p_stands=w["p_robust"])
        out.append(row)
    return out
