"""The book: notebook helpers (parameters, model setup, α sweeps from stored records, verdicts,
provenance), and the build — run every notebook with papermill, then build the Jupyter Book offline.

    python -m msparse book            # the whole book on the offline default model (CPU, records reused)
    python -m msparse book --quick    # CI: every notebook with small parameters
    python -m msparse.book --only fig1_operator table1_alpha

Notebooks live in ``notebooks/<name>.md`` as MyST Markdown text notebooks (jupytext, no outputs); each is
read through jupytext and executed by papermill into ``book/_executed/<name>.ipynb``, and the HTML goes to
``book/_build/html/`` (both ignored). The ipywidgets JavaScript is fetched from the npm
registry at build time (``npm pack``, sha512-checked) into ``book/_widgets_js/`` (ignored), never committed.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["NOTEBOOKS", "PROFILES", "check_params", "setup", "Setup", "evaluate_alphas", "result_row",
           "provenance_table", "versions_note", "setup_provenance", "verdict", "compare_table", "worst_case", "run_notebooks", "fetch_widget_js", "build_book",
           "BuildReport", "main", "run", "add_arguments", "RANDOM_PREFIX"]

REPO = Path(__file__).resolve().parent.parent
BOOK_DIR = REPO / "book"
NOTEBOOK_DIR = REPO / "notebooks"
EXECUTED = "_executed"
WIDGET_JS = "_widgets_js"
RANDOM_PREFIX = "random:"  # "random:resnet18-gelu-w16": random weights, for infrastructure tests only

#: (notebook name, title), in book order
NOTEBOOKS: tuple[tuple[str, str], ...] = (
    ("fig1_operator", "Fig. 1–2: the operator on a real channel"),
    ("table1_alpha", "Table 1: clean and APGD-CE vs α"),
    ("fig3_headline", "Fig. 3 and the README table: clean and AutoAttack"),
    ("alpha_explorer", "Explore α"),
    ("table2_activations", "Table 2: activation functions"),
    ("table3_threat_models", "Table 3: L∞ vs L2"),
    ("table4_training", "Table 4: PGD-AT vs TRADES (and ANCRA)"),
    ("table5_centre", "Table 5: centre reference"),
    ("table6_attack_power", "Table 6: attack power"),
    ("table7_sites", "Table 7: single and cumulative sites"),
    ("table8_main_vs_add", "Table 8: main path vs after addition"),
    ("adaptive", "Adaptive evaluation: BPDA and transfer"),
    ("standard_training", "Standard training"),
    ("statistics", "Statistics: exact vs official, and how many images"),
)

#: parameter overrides per build profile ("default" = each notebook's own parameters cell)
PROFILES: dict[str, dict] = {
    "default": {},
    "quick": {"n_examples": 24, "n_train": 256, "n_iter": 5, "alphas": [0.0, 0.35], "train_alphas": [0.0, 0.35],
              "eps_grid": [2, 8], "n_sizes": [64, 256], "site_indices": [0, 1, 16],
              "results_dir": str(BOOK_DIR / "_cache" / "results-quick")},
}

#: parameters of every batch build: no live ipywidgets (a static page cannot drive them, and executing widget
#: output under nbclient can lose the kernel's reply and leave a cell waiting until its timeout)
BUILD_PARAMETERS: dict = {"live": False}

#: per-notebook overrides on top of a profile (e.g. keep Table 7's single α in the quick profile)
NOTEBOOK_PROFILES: dict[str, dict[str, dict]] = {
    "quick": {"table7_sites": {"alphas": [0.35]}, "standard_training": {"alphas": [0.0, 0.5]},
              "statistics": {"n_train": 512, "n_sizes": [128, 512]}, "fig3_headline": {"n_queries": 50}},
}

_NPM = {  # package@version -> (sha512 integrity, {file in the tarball: file name in _widgets_js})
    "requirejs@2.3.8": ("sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
                        {"package/require.js": "require.js"}),
    "@jupyter-widgets/html-manager@1.0.15": (
        "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        {"package/dist/embed-amd.js": "embed-amd.js", "package/dist/*.woff2": None, "package/dist/*.woff": None,
         "package/dist/*.ttf": None, "package/dist/*.eot": None, "package/dist/*.svg": None}),
}


# ================================================================================================
# notebook parameters
# ================================================================================================
_DATA_SOURCES = ("auto", "offline", "official")


def _positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"notebook parameter {name} must be a positive integer, got {v!r}")
    return v


def check_model_name(name: str) -> str:
    """Raise :class:`~msparse.errors.InputError` unless ``name`` is a model the registry knows for CIFAR-10 L∞
    (:func:`msparse.models.registry.model_entry`), a family checkpoint ``*.pt``, or ``random:<name>``."""
    from .errors import InputError, ModelLoadError
    from .models.registry import model_entry

    if not isinstance(name, str) or not name:
        raise InputError(f"notebook parameter model must be a model name, got {name!r}")
    bare = name[len(RANDOM_PREFIX):] if name.startswith(RANDOM_PREFIX) else name
    if bare.endswith(".pt"):  # a family checkpoint with its card
        return name
    try:
        model_entry(bare, "cifar10", "Linf")
    except ModelLoadError as e:   # "unknown model ...", with close matches
        raise InputError(str(e)) from None
    except InputError as e:       # a malformed family name, e.g. an unknown activation
        raise InputError(f"unknown model {name!r}: {e}") from None
    return name


def check_params(**p) -> dict:
    """Validate a notebook's parameters (called in its first cell); returns them normalised.

    Raises ValueError with a clear message for an unknown model, n ≤ 0, α < 0, an unknown attack, ε ≤ 0, ...
    """
    from .attacks.base import parse_attack
    from .core.operator import check_alpha

    out = dict(p)
    if "model" in p:
        check_model_name(p["model"])
    if "dataset" in p and p["dataset"] != "cifar10":
        raise ValueError(f"notebook parameter dataset={p['dataset']!r}: the book's notebooks run on 'cifar10' "
                         "(ImageNet/CIFAR-100 models need data and checkpoints that are not available offline)")
    if "data_source" in p and p["data_source"] not in _DATA_SOURCES:
        raise ValueError(f"notebook parameter data_source must be one of {_DATA_SOURCES}, got {p['data_source']!r}")
    for k in ("n_examples", "n_train", "n_iter"):
        if k in p:
            _positive_int(k, p[k])
    for k in ("alphas", "train_alphas", "alpha"):
        if k in p:
            vals = p[k] if isinstance(p[k], (list, tuple)) else [p[k]]
            if not vals:
                raise ValueError(f"notebook parameter {k} must not be empty")
            try:
                out[k] = check_alpha(p[k]) if k == "alpha" else [check_alpha(a) for a in vals]
            except ValueError as e:
                raise ValueError(f"notebook parameter {k}: {e}") from None
    for k in ("attack", "adaptive_attack"):
        if k in p:
            parse_attack(p[k])
    if "eps" in p:
        e = p["eps"]
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e <= 0 or e >= 1:
            raise ValueError(f"notebook parameter eps must be in (0, 1) for pixels in [0, 1] (e.g. 8/255), got {e!r}")
    if "eps_grid" in p:
        if not p["eps_grid"] or any(not isinstance(e, (int, float)) or e <= 0 or e > 255 for e in p["eps_grid"]):
            raise ValueError(f"notebook parameter eps_grid lists ε in units of 1/255 in (0, 255], got {p['eps_grid']!r}")
    if "device" in p:
        import torch

        d = p["device"]
        if d not in ("cpu", "auto") and not str(d).startswith("cuda"):
            raise ValueError(f"notebook parameter device must be 'cpu', 'cuda[:k]' or 'auto', got {d!r}")
        if str(d).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={d!r} but no CUDA device is available here; use 'cpu' or 'auto'")
    if "seed" in p and (isinstance(p["seed"], bool) or not isinstance(p["seed"], int) or p["seed"] < 0):
        raise ValueError(f"notebook parameter seed must be an integer >= 0, got {p['seed']!r}")
    if "use_stored" in p and not isinstance(p["use_stored"], bool):
        raise ValueError(f"notebook parameter use_stored must be True or False, got {p['use_stored']!r}")
    return out


# ================================================================================================
# setup: model + sites + statistics + data (cached in-process)
# ================================================================================================
@dataclass
class Setup:
    """A model ready for MeanSparse experiments: sparsified, calibrated, α = 0; data on the device."""

    model_name: str
    model: object
    sites: list
    placement: str
    x: object  # test images [N, 3, 32, 32]
    y: object
    x_train: object  # the statistics images (also used for "train" evaluations)
    y_train: object
    data_info: dict
    train_info: dict
    stats: dict
    device: str
    store: object  # what evaluate(store=...) gets
    card: dict = field(default_factory=dict)

    @property
    def is_random(self) -> bool:
        return self.model_name.startswith(RANDOM_PREFIX)

    def describe(self) -> str:
        """One line saying which model, data and statistics produced the numbers."""
        weights = "RANDOM weights (infrastructure test, numbers meaningless)" if self.is_random else \
            self.card.get("source", "")
        return (f"model **{self.model_name}** ({weights}); {len(self.sites)} MeanSparse sites "
                f"(placement {self.placement}); statistics: {self.stats['mode']} on {self.stats['n_samples']} "
                f"training images; test data: {self.data_info.get('source')} (n={self.data_info.get('n')}, "
                f"indices {self.data_info.get('indices')}); device {self.device}")


_SETUPS: dict = {}


def _default_placement(model) -> str:
    from .models.resnet import ResNet18

    return "ResNet-18/cifar10/Linf/v1" if isinstance(model, ResNet18) else "activations"


def load(model: str, device: str = "cpu"):
    """:func:`msparse.models.registry.load_model` plus ``random:<name>`` (the architecture, random weights)."""
    from .models.registry import load_model

    if model is None:
        raise ValueError("no model given (None): this model is not available here")
    if model.endswith(".pt"):
        return load_model(checkpoint=model, device=device)
    if model.startswith(RANDOM_PREFIX):
        import torch

        torch.manual_seed(0)
        return load_model(model[len(RANDOM_PREFIX):], pretrained=False, device=device)
    return load_model(model, device=device)


def setup(model: str = "msparse/default", *, n_examples: int = 200, n_train: int = 1000, data_source: str = "auto",
          placement: str | None = None, stats_mode: str = "exact", device: str = "cpu", use_stored: bool = True,
          results_dir: str | None = None, split_start: int = 0) -> Setup:
    """Load ``model``, put MeanSparse at its placement (the paper's ResNet-18 preset for the project's
    ResNet-18 family), calibrate on the first ``n_train`` training images, load ``n_examples`` test images.
    Cached per argument set, so a notebook re-run (or a widget) does not redo it."""
    from ._device import resolve_device
    from .core.calibration import calibrate
    from .core.placement import sparsify
    from .data import load_data

    device = str(resolve_device(device))
    key = (model, n_examples, n_train, data_source, placement, stats_mode, device, split_start)
    if key not in _SETUPS:
        m = load(model, device)
        pl = placement or _default_placement(m)
        sites = sparsify(m, pl)
        xt, yt, tinfo = load_data("cifar10", "train", n=n_train, source=data_source, return_info=True)
        stats = calibrate(m, xt.to(device), mode=stats_mode)
        x, y, info = load_data("cifar10", "test", n=n_examples, source=data_source, start=split_start,
                               return_info=True)
        _SETUPS[key] = Setup(model, m, sites, pl, x.to(device), y.to(device), xt.to(device), yt.to(device),
                             info.to_dict(), tinfo.to_dict(), stats, device, None,
                             dict(getattr(m, "msparse_card", {}) or {}))
    s = _SETUPS[key]
    s.store = False if not use_stored else (results_dir or None)
    return s


# ================================================================================================
# evaluation through the results store
# ================================================================================================
def result_row(r, **extra) -> dict:
    """A :class:`msparse.evaluation.evaluate.Result` as a flat row, accuracies in % with 95% Wilson bounds."""
    row = dict(extra)
    row.update(n=r.n, clean=100 * r.clean_acc, clean_lo=100 * r.clean_ci[0], clean_hi=100 * r.clean_ci[1],
               robust=100 * r.robust_acc, robust_lo=100 * r.robust_ci[0], robust_hi=100 * r.robust_ci[1],
               attack=r.attack, eps=r.eps, key=r.key, cached=r.cached, robust_flags=r.result["robust_flags"])
    return row


def worst_case(*row_lists: Sequence[Mapping]) -> list[dict]:
    """Per-image worst case over attacks run on the same images at the same α (rows of :func:`evaluate_alphas`,
    same α order): an image counts as robust only if it survives every attack."""
    from .evaluation.significance import mcnemar, wilson

    out, base = [], None
    for rows in zip(*row_lists):
        if len({r["alpha"] for r in rows}) != 1 or len({r["n"] for r in rows}) != 1:
            raise ValueError("worst_case needs rows of the same alpha and the same images, in the same order")
        flags = [all(c == "1" for c in chars) for chars in zip(*(r["robust_flags"] for r in rows))]
        k, n = sum(flags), len(flags)
        lo, hi = wilson(k, n)
        row = {k: v for k, v in rows[0].items() if k not in ("d_robust", "p_robust")}
        row.update(robust=100 * k / n, robust_lo=100 * lo, robust_hi=100 * hi, key=None,
                   attack="worst of " + ", ".join(r["attack"] for r in rows),
                   robust_flags="".join("1" if f else "0" for f in flags))
        if row["alpha"] == 0.0 and base is None:
            base = flags
        elif base is not None:
            pr = mcnemar(base, flags)
            row.update(d_robust=100 * pr.delta, p_robust=pr.p_value)
        out.append(row)
    return out


def evaluate_alphas(s: Setup, alphas: Sequence[float], *, attack: str = "apgd-ce", eps: float = 8 / 255,
                    norm: str = "Linf", n_iter: int = 100, seed: int = 0, split: str = "test",
                    sites: Sequence | None = None, centre: str | None = None, backward: str | None = None,
                    label: str | None = None, progress: bool = True, n_queries: int = 5000,
                    n_restarts: int = 1, source=None, **extra) -> list[dict]:
    """Evaluate ``attack`` at each α (applied to ``sites``, default all) and return rows (see
    :func:`result_row`) with a paired McNemar comparison against α = 0 on the same images
    (``d_robust``, ``p_robust`` in pp / p-value). Stored records are reused; missing ones computed.
    ``source``: the model ``transfer:`` attacks are crafted on (default: the model at α = 0)."""
    from .core.placement import set_alpha, set_backward, set_centre
    from .evaluation.evaluate import evaluate

    x, y = (s.x, s.y) if split == "test" else (s.x_train[: len(s.x)], s.y_train[: len(s.y)])
    data = f"cifar10/{split} " + (s.data_info["indices"] if split == "test" else f"0..{len(x) - 1}") + \
        f" ({(s.data_info if split == 'test' else s.train_info).get('kind')})"
    rows, base = [], None
    common = dict(eps=eps, norm=norm, n_iter=n_iter, seed=seed, store=s.store, name=s.model_name, data=data,
                  n_queries=n_queries, n_restarts=n_restarts,
                  stats=str(extra.get("statistics", s.stats["mode"])), batch_size=max(len(x), 1))
    try:
        if centre:
            set_centre(s.model, centre)
        if backward:
            set_backward(s.model, backward)
        for i, a in enumerate(alphas):
            t0 = time.perf_counter()
            set_alpha(s.model, a if sites is None else {k: a for k in sites})
            run_as = _direct_at_zero(attack) if float(a) == 0.0 and source is None else attack
            r = evaluate(s.model, x, y, run_as, tags={"book": label or "sweep", "split": split}, source=source,
                         **common)
            if float(a) == 0.0 and base is None:
                base = r
            row = result_row(r, alpha=float(a), split=split, **extra)
            if base is not None and r is not base:
                pr = r.compare(base)
                row.update(d_robust=100 * pr.delta, p_robust=pr.p_value)
            rows.append(row)
            if progress:
                print(f"  α={a:<5g} {attack:<10s} clean {row['clean']:5.1f}%  robust {row['robust']:5.1f}%"
                      f"  [{row['robust_lo']:.1f}, {row['robust_hi']:.1f}]  "
                      f"{'stored' if r.cached else f'{time.perf_counter() - t0:.1f}s'}", flush=True)
    finally:
        set_alpha(s.model, 0.0)
        if centre:
            set_centre(s.model, "mean")
        if backward:
            set_backward(s.model, "exact")
    return rows


def _direct_at_zero(attack: str) -> str:
    """At α = 0 (no site active) BPDA and transfer-from-the-base are the direct attack: same computation, so the
    direct attack's record is used (``bpda:apgd-ce+t`` → ``apgd-ce+t``, ``transfer:apgd`` → ``apgd``)."""
    from .attacks.base import Attack, canonical_name, parse_attack

    comps = parse_attack(attack)
    if any(c.mode != "direct" for c in comps):
        direct = []
        for c in comps:
            d = Attack(c.preset, "direct")
            if d not in direct:
                direct.append(d)
        return canonical_name(direct)
    return attack


def try_setup(model: str, **kw) -> tuple[Setup | None, str]:
    """:func:`setup`, or ``(None, reason)`` when the model is not available here (e.g. not trained yet)."""
    try:
        return setup(model, **kw), ""
    except Exception as e:  # ModelLoadError, FileNotFoundError, ...
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def stats_snapshot(model) -> dict:
    """A copy of every site's statistics ``{site name: (mean, var)}``."""
    from .core.placement import operators

    return {op.site.name: (op.mean.detach().clone(), op.var.detach().clone(), int(op.n_samples))
            for op in operators(model)}


def restore_stats(model, snap: Mapping) -> None:
    """Put back statistics saved by :func:`stats_snapshot`."""
    from .core.placement import operators

    for op in operators(model):
        m, v, n = snap[op.site.name]
        op.load_statistics(m, v, max(n, 1))


def sigma_ratios(snap: Mapping, ref: Mapping) -> dict:
    """Per site: the median over channels of σ / σ_ref (channels with σ_ref > 0)."""
    import torch

    out = {}
    for name, (_, v, _) in snap.items():
        vr = ref[name][1]
        ok = vr > 0
        out[name] = float(torch.median((v[ok] / vr[ok]).sqrt())) if ok.any() else float("nan")
    return out


def versions_note(records: Sequence[Mapping]) -> str:
    """One sentence saying which of ``records`` were computed under other library versions than the running
    ones, e.g. "12 of 14 records were computed with torch 2.15.0 on cpu; this build runs torch 2.14.1 ..."
    (empty string when every record matches the running versions)."""
    from collections import Counter

    from .evaluation.store import versions, versions_differ

    now = versions()
    other = Counter()
    for rec in records:
        diff = versions_differ(rec, now)
        if diff:
            dev = str((rec.get("provenance") or {}).get("device", "?")).split(" (")[0]
            other[", ".join(f"{lib} {have}" for lib, (have, _) in sorted(diff.items())) + f" on {dev}"] += 1
    if not other:
        return ""
    made = "; ".join(f"{k} ({v} record{'s' * (v != 1)})" for k, v in other.most_common())
    libs = sorted({lib for rec in records for lib in versions_differ(rec, now)})
    running = ", ".join(f"{lib} {now.get(lib)}" for lib in libs)
    return (f"{sum(other.values())} of {len(records)} records on this page were computed with {made}; this build "
            f"runs {running}. Records are keyed by what determines the experiment, not by library versions; "
            "`python -m msparse results verify KEY` recomputes one here and compares every image, and "
            "`python -m msparse book --recompute-other-versions` rebuilds the book recomputing them.")


def provenance_table(rows: Sequence[Mapping], store=None):
    """Provenance of the records behind ``rows`` (key, model, attack, ε, n, torch, device, commit, created, wall
    time); displays :func:`versions_note` above the table when records were made under other library versions."""
    import pandas as pd

    from .evaluation.store import Store, record_versions

    st = store if isinstance(store, Store) else Store(store if store not in (None, False, True) else None)
    out, recs = [], []
    for r in rows:
        rec = st.get(r["key"]) if store is not False and r.get("key") else None
        if rec is not None:
            recs.append(rec)
        prov = (rec or {}).get("provenance", {})
        out.append({"record": (r.get("key") or "")[:12], "model": (rec or {}).get("meta", {}).get("model"),
                    "attack": r.get("attack"), "ε·255": round(255 * r.get("eps", 0), 2),
                    "α": r.get("alpha"), "n": r.get("n"),
                    "torch": record_versions(rec)["torch"] if rec is not None else None,
                    "device": prov.get("device", "not stored"),
                    "commit": (prov.get("commit") or "")[:8], "created": prov.get("created"),
                    "wall s": prov.get("wall_s"), "reused": r.get("cached")})
    note = versions_note(recs)
    if note:
        try:
            from IPython.display import Markdown, display

            display(Markdown(f"_{note}_"))
        except ImportError:  # pragma: no cover - IPython ships with the book extra
            print(note)
    return pd.DataFrame(out)


_BPDA_OF = {"RaWRN-70-16": "Amini2024MeanSparse_Ra_WRN_70_16", "WRN-94-16": "Amini2024MeanSparse_S-WRN-94-16",
            "WRN-70-16 (L2)": ("Amini2024MeanSparse_S-WRN-70-16", "cifar10", "L2"),
            "WRN-70-16 (CIFAR-100)": ("Amini2024MeanSparse_S-WRN-70-16", "cifar100", "Linf"),
            "Swin-L": "Amini2024MeanSparse_Swin-L", "ConvNeXt-L": "Amini2024MeanSparse_ConvNeXt-L"}


def robustbench_bpda(model: str) -> float | None:
    """RobustBench's BPDA ('external') accuracy of the MeanSparse version of a paper model label, or None."""
    from .report import paper

    key = _BPDA_OF.get(model)
    if key is None:
        return None
    e = paper.robustbench(*key) if isinstance(key, tuple) else paper.robustbench(key)
    return e.external


def headline_table():
    """The v2 README headline table with RobustBench's BPDA number beside each MeanSparse AA (reference values)."""
    import pandas as pd

    from .report import paper

    df = paper.table("readme_v2").frame().rename(columns={
        "clean_base": "clean base (README)", "aa_base": "AA base (README)", "clean_ms": "clean MeanSparse (README)",
        "aa_ms": "AA MeanSparse (README)"})
    df["BPDA MeanSparse (RobustBench)"] = [robustbench_bpda(m) for m in df.index]
    df["BPDA − AA base"] = [None if b is None else round(b - a, 2)
                            for b, a in zip(df["BPDA MeanSparse (RobustBench)"], df["AA base (README)"])]
    return df.astype(object).where(pd.notna(df), "—")


def bpda_table():
    """RobustBench's MeanSparse entries: base AA, the authors' AA, RobustBench's BPDA (reference values)."""
    import pandas as pd

    from .report import paper

    rows = []
    for b, m in paper.bpda_pairs():
        rows.append({"MeanSparse entry": m.name, "dataset / threat": f"{m.dataset} {m.threat_model} {m.eps}",
                     "base": b.name, "base AA": b.aa, "MeanSparse AA (authors)": m.aa,
                     "MeanSparse BPDA (RobustBench)": m.external, "BPDA − base AA": round(m.external - b.aa, 2),
                     "note": m.external_note})
    return pd.DataFrame(rows)


def diagnostics_table(rows: Sequence[Mapping], store=None):
    """Gradient-masking diagnostics stored with each record: mean blocked fraction over active sites, fraction of
    exactly-zero input gradients (official backward, and with the identity backward), AutoAttack's warnings."""
    import pandas as pd

    from .evaluation.store import Store

    if store is False:
        return pd.DataFrame([{"note": "use_stored=False: diagnostics are kept in the records only"}])
    st = store if isinstance(store, Store) else Store(store if store not in (None, True) else None)
    out = []
    for r in rows:
        rec = st.get(r["key"]) or {}
        d = rec.get("result", {}).get("diagnostics", {})
        out.append({"attack": r.get("attack"), "α": r.get("alpha"), "blocked (mean over sites)": d.get("blocked_mean"),
                    "zero input gradient (official)": d.get("zero_grad"),
                    "zero input gradient (identity backward)": d.get("zero_grad_identity"),
                    "AutoAttack warnings": "; ".join(f"{k} ×{v}" for k, v in (d.get("messages") or {}).items()) or "—",
                    "record": r["key"][:12]})
    return pd.DataFrame(out)


def setup_provenance(s: Setup):
    """Provenance of numbers computed directly from the model and data (not from records): the weights'
    checksum, the data source and indices, the statistics pass, the code commit."""
    import pandas as pd

    from .evaluation.store import git_commit

    rows = {"model": s.model_name, "weights source": s.card.get("source"), "weights sha256": s.card.get("sha256"),
            "test data": f"{s.data_info.get('source')} (indices {s.data_info.get('indices')})",
            "training data (statistics)": f"{s.train_info.get('source')} (indices {s.train_info.get('indices')})",
            "statistics": f"{s.stats['mode']}, {s.stats['n_samples']} images, {s.stats['n_batches']} batches",
            "placement": f"{s.placement} ({len(s.sites)} sites)", "device": s.device,
            "msparse commit": git_commit()}
    return pd.DataFrame({"value": rows})


def compare_table(rows: Sequence[Mapping], reference: Mapping[str, Mapping] | None = None, index: str = "alpha",
                  metrics: Sequence[str] = ("clean", "robust")):
    """Ours (value [95% CI], in %) beside labelled reference columns ``{label: {index value: value}}``."""
    import pandas as pd

    table = {}
    for r in rows:
        line = table.setdefault(r[index], {})
        for m in metrics:
            line[f"ours: {m} % [95% CI]"] = f"{r[m]:.1f} [{r[m + '_lo']:.1f}, {r[m + '_hi']:.1f}]"
        if "d_robust" in r:
            line["ours: Δrobust vs α=0 (pp), McNemar p"] = f"{r['d_robust']:+.1f}, p={r['p_robust']:.2g}"
    for lab, vals in (reference or {}).items():
        for k, v in vals.items():
            for idx in table:
                if isinstance(idx, (int, float)) and isinstance(k, (int, float)) and math.isclose(idx, k, abs_tol=1e-9):
                    table[idx][lab] = v
    df = pd.DataFrame.from_dict(table, orient="index").fillna("—")
    df.index.name = index
    return df


def verdict(status, detail: str = "") -> str:
    """The one-line verdict, as Markdown.

    ``status``: a :class:`msparse.report.verdicts.Verdict` (from one of the rules in
    :mod:`msparse.report.verdicts`; ``detail``, if given, is appended), or one of
    :data:`msparse.report.verdicts.STATUSES` with its ``detail`` text. The older status ``"not yet run here"`` is
    read as ``"not evaluated here"``."""
    from .report.verdicts import STATUSES, Verdict

    if isinstance(status, Verdict):
        return status.markdown() + (f" {detail}" if detail else "")
    status = {"not yet run here": "not evaluated here"}.get(status, status)
    if status not in STATUSES:
        raise ValueError(f"verdict status must be one of {list(STATUSES)}, got {status!r}")
    return Verdict(status, "", detail).markdown()


def trend(rows: Sequence[Mapping], alpha: float, what: str = "robust") -> str:
    """Plain-words reading of our change at ``alpha`` vs α = 0 (with its paired test)."""
    r = next((r for r in rows if math.isclose(r["alpha"], alpha, abs_tol=1e-9)), None)
    b = next((r for r in rows if r["alpha"] == 0.0), None)
    if r is None or b is None:
        return f"(no α={alpha:g} point)"
    d = r[what] - b[what]
    sig = ""
    if what == "robust" and "p_robust" in r:
        sig = f", paired McNemar p = {r['p_robust']:.2g}" + (" (not significant at this n)" if r["p_robust"] >= 0.05 else "")
    return f"{what} {b[what]:.1f}% → {r[what]:.1f}% at α={alpha:g} ({d:+.1f} pp, n={r['n']}{sig})"


def _sweep_pair(rows: Sequence[Mapping], alpha: float) -> tuple[Mapping | None, Mapping | None]:
    """The α = 0 row and the ``alpha`` row of an α sweep (None where missing)."""
    r = next((r for r in rows if math.isclose(r["alpha"], alpha, abs_tol=1e-9)), None)
    b = next((r for r in rows if r["alpha"] == 0.0), None)
    return b, r


def gain_verdict(rows: Sequence[Mapping], alpha: float, max_clean_drop: float | None = None,
                 claim: str | None = None):
    """:func:`msparse.report.verdicts.gain_claim` on the α = 0 and ``alpha`` rows of an α sweep (their per-image robust
    flags and clean accuracies); "not evaluated here" when the sweep has no such pair."""
    from .report import verdicts as V

    claim = claim or V.GAIN_CLAIM
    b, r = _sweep_pair(rows, alpha)
    if r is None or b is None:
        return V.not_evaluated(claim, f"no α={alpha:g} and α=0 pair was evaluated")
    return V.gain_claim(b, r, claim=claim,
                        max_clean_drop_pp=V.MAX_CLEAN_DROP_PP if max_clean_drop is None else max_clean_drop)


def claim_check(rows: Sequence[Mapping], alpha: float, max_clean_drop: float = 2.0) -> tuple[bool | None, str]:
    """Does the paper's claim 'MeanSparse at ``alpha`` raises robust accuracy at a small clean cost (a clean drop
    of at most ``max_clean_drop`` pp)' hold in ``rows``? Decided by :func:`msparse.report.verdicts.gain_claim` (paired
    exact McNemar test, Newcombe interval, equivalence margin). Returns ``(True / False / None, explanation)``:
    True = reproduced, False = not reproduced, None = inconclusive, too few images, or no α/α=0 pair."""
    v = gain_verdict(rows, alpha, max_clean_drop)
    return v.holds, v.detail.rstrip(".")


def alpha_verdict(s: Setup, rows: Sequence[Mapping], paper_model: str, alpha: float, what: str = "") -> str:
    """The verdict line of an α-sweep page: :func:`msparse.report.verdicts.gain_claim` between α = 0 and ``alpha`` on
    ``s``'s model (the paper's own numbers need ``paper_model``, whose weights are not available offline unless
    ``s`` is that model: the qualitative claim is what is checked). Random weights: "not evaluated here"."""
    from .report import verdicts as V

    claim = "the paper's claim (MeanSparse raises robust accuracy at a small clean cost" + \
            (f"; here: {what}" if what else "") + ")"
    if s.is_random:
        return V.not_evaluated(claim, "this run used random weights (infrastructure test); no claim can be "
                                      "checked").markdown()
    v = gain_verdict(rows, alpha, claim=claim)
    if v.status == "not evaluated here":
        return v.markdown()
    # the rows' model is named by the page (Table 4 passes one Setup for rows of several models)
    v = dataclasses.replace(v, detail=f"at α={alpha:g} vs α=0, " + v.detail.rstrip(".") +
                            f". The paper's numbers are for {paper_model}, whose weights are not available offline; "
                            "the qualitative claim is checked on the model evaluated here")
    return v.markdown()


def budget_note(s: Setup, attack: str, n_iter: int, paper_iter: int = 100) -> str:
    """Says the attack budget of this page and how it differs from the paper's."""
    n = len(s.x)
    low = n_iter < paper_iter or n < 10000
    return (f"Budget: **{attack}**, {n_iter} iterations per attack (paper: {paper_iter}), on the first {n} CIFAR-10 "
            f"test images (paper: all 10 000)." + (" Reduced to fit 2 CPU cores (the committed result records let the "
            "book build in minutes); re-run with `-p n_iter 100 -p n_examples 10000` for the paper's budget."
            if low else ""))


def activation_of(model) -> str:
    """The activation name of a model of the ResNet-18 family (``""`` otherwise)."""
    return str(getattr(model, "activation", ""))


def no_paper_model_note(s: Setup, paper_model: str) -> str:
    """The standard note: which model produced the numbers and that the paper's model is not here."""
    return (f"The paper's numbers come from **{paper_model}**, whose weights are not available offline; the "
            f"numbers below are from {s.describe()}. Compare trends, not levels.")


# ================================================================================================
# running notebooks
# ================================================================================================
def _placeholder(path: Path, name: str, title: str, why: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n⏳ **Not yet run here** — {why}\n\n"
                                              f"Run `python -m msparse book --only {name}` to execute it.")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


@dataclass
class NotebookRun:
    name: str
    ok: bool
    seconds: float
    error: str = ""


NOTEBOOK_SUFFIX = ".md"  # MyST Markdown text notebooks (jupytext); papermill runs their .ipynb conversion


def notebook_path(name: str, notebook_dir: Path | None = None) -> Path:
    """The source of notebook ``name``: ``notebooks/<name>.md`` (a MyST Markdown text notebook)."""
    return Path(notebook_dir or NOTEBOOK_DIR) / f"{name}{NOTEBOOK_SUFFIX}"


def read_notebook(name: str, notebook_dir: Path | None = None):
    """Notebook ``name`` read through jupytext, as an ``nbformat`` v4 notebook (no outputs)."""
    import jupytext

    nb = jupytext.read(notebook_path(name, notebook_dir), fmt="md:myst")
    nb.metadata.pop("jupytext", None)  # the executed .ipynb is not paired with the text file
    return nb


def run_notebooks(names: Sequence[str] | None = None, *, profile: str = "default", out_dir: Path | None = None,
                  parameters: Mapping | None = None, notebook_dir: Path | None = None, timeout: int | None = None,
                  progress: bool = True, log=print) -> list[NotebookRun]:
    """Execute notebooks with papermill (profile overrides + ``parameters``, restricted to the parameters
    each notebook declares); the executed copies go to ``out_dir`` (default ``book/_executed``).

    Each ``notebooks/<name>.md`` is converted by jupytext into a temporary ``.ipynb`` for papermill; nothing is
    written next to the sources."""
    import jupytext
    import papermill as pm

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    notebook_dir = Path(notebook_dir or NOTEBOOK_DIR)
    out_dir = Path(out_dir or BOOK_DIR / EXECUTED)
    out_dir.mkdir(parents=True, exist_ok=True)
    known = [n for n, _ in NOTEBOOKS]
    names = list(names) if names else known
    bad = [n for n in names if not notebook_path(n, notebook_dir).is_file()]
    if bad:
        raise ValueError(f"no notebook {', '.join(bad)} in {notebook_dir} (looked for <name>{NOTEBOOK_SUFFIX}); "
                         f"notebooks: {', '.join(known)}")
    runs = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="msparse-notebooks-") as tmp:
        for i, name in enumerate(names, 1):
            src = notebook_path(name, notebook_dir)
            ipynb = Path(tmp) / f"{name}.ipynb"
            jupytext.write(read_notebook(name, notebook_dir), ipynb, fmt="ipynb")
            declared = pm.inspect_notebook(str(ipynb))
            merged = {**BUILD_PARAMETERS, **PROFILES[profile], **NOTEBOOK_PROFILES.get(profile, {}).get(name, {}),
                      **(parameters or {})}
            params = {k: v for k, v in merged.items() if k in declared}
            if progress:
                shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "notebook defaults"
                log(f"[{i}/{len(names)}] {name} ({shown}) ...", flush=True)
            t0 = time.perf_counter()
            err = ""
            out = out_dir / f"{name}.ipynb"
            try:
                pm.execute_notebook(str(ipynb), str(out), parameters=params, progress_bar=False,
                                    cwd=str(REPO), kernel_name="python3", execution_timeout=timeout,
                                    stdout_file=_Indented(sys.stdout) if progress else None,
                                    raise_on_iopub_timeout=True)  # a lost output message fails, never passes
            except Exception as e:  # papermill keeps the failed notebook with its error output
                err = _first_error_line(e)
                err += _failed_cell(out, err)
            finally:
                _record_source(out, src)
            dt = time.perf_counter() - t0
            runs.append(NotebookRun(name, not err, dt, err))
            if progress:
                log(f"[{i}/{len(names)}] {name}: {'ok' if not err else 'FAILED: ' + err} in {dt:.1f} s "
                    f"(total {time.perf_counter() - t_all:.0f} s)", flush=True)
    return runs


def _record_source(executed: Path, src: Path) -> None:
    """Point the executed notebook's ``papermill.input_path`` at the text notebook, not the temporary .ipynb."""
    import nbformat

    if not executed.is_file():
        return
    try:
        shown = str(src.resolve().relative_to(REPO))
    except ValueError:
        shown = str(src)
    nb = nbformat.read(str(executed), as_version=4)
    nb.metadata.setdefault("papermill", {})["input_path"] = shown
    nbformat.write(nb, str(executed))


class _Indented:
    """Forwards a notebook's stdout (e.g. the per-α progress lines) to the terminal, indented."""

    def __init__(self, stream):
        self.stream, self._bol = stream, True

    def write(self, text: str) -> None:
        for ch in text.splitlines(keepends=True):
            self.stream.write(("    " if self._bol else "") + ch)
            self._bol = ch.endswith("\n")

    def flush(self) -> None:
        self.stream.flush()


def _failed_cell(executed: Path, error: str = "") -> str:
    """`` (cell N: first source line)`` of the cell that stopped the run of ``executed``.

    papermill marks a failed cell, but leaves a cell that ran past its timeout as "completed" without an
    exception; that cell is the last one that started. It is then marked failed, with an error output that
    says so, so the rendered page shows the failure instead of a silently truncated notebook."""
    import nbformat

    try:
        nb = nbformat.read(str(executed), as_version=4)
    except Exception:  # no executed copy was written
        return ""
    meta = [c.get("metadata", {}).get("papermill", {}) for c in nb.cells]
    idx = next((i for i, m in enumerate(meta) if m.get("status") == "failed" or m.get("exception")), None)
    if idx is None:
        started = [i for i, m in enumerate(meta) if m.get("start_time")]
        if not started:
            return ""
        idx = started[-1]
        cell = nb.cells[idx]
        cell.metadata.setdefault("papermill", {}).update(status="failed", exception=True)
        cell.setdefault("outputs", []).append(nbformat.v4.new_output(
            "error", ename="CellTimeoutError", evalue=f"this cell did not finish: {error}", traceback=[]))
        nbformat.write(nb, str(executed))
    first = next((ln for ln in nb.cells[idx].get("source", "").splitlines() if ln.strip()), "")
    return f" (cell {idx}: {first.strip()[:80]})"


def _first_error_line(e: BaseException) -> str:
    ename, evalue = getattr(e, "ename", None), getattr(e, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"


# ================================================================================================
# widget JavaScript from the npm registry
# ================================================================================================
def _sha512(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch_widget_js(dest: Path | None = None, log=print) -> Path:
    """Fetch require.js and @jupyter-widgets/html-manager's ``embed-amd.js`` (plus its fonts) from the npm
    registry with ``npm pack`` into ``dest`` (default ``book/_widgets_js``), checking each tarball's sha512.
    Does nothing when the files are already there."""
    import fnmatch

    dest = Path(dest or BOOK_DIR / WIDGET_JS)
    stamp = dest / ".fetched.json"

    def fresh(d: Path) -> bool:
        st = d / ".fetched.json"
        return st.is_file() and json.loads(st.read_text()) == sorted(_NPM) and (d / "embed-amd.js").is_file()

    if fresh(dest):
        return dest
    cache = BOOK_DIR / WIDGET_JS
    if cache.resolve() != dest.resolve() and fresh(cache):  # an earlier fetch for the repository's book
        shutil.copytree(cache, dest, dirs_exist_ok=True)
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: the book fetches the ipywidgets JavaScript from the npm registry "
                           "at build time (apt-get install nodejs npm), or build with --no-widget-js")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        log(f"fetching widget JavaScript from the npm registry: {', '.join(_NPM)}", flush=True)
        proc = subprocess.run([npm, "pack", "--silent", *_NPM], cwd=tmp, capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"npm pack failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        tgz = {p.name: p for p in Path(tmp).glob("*.tgz")}
        for spec, (integrity, files) in _NPM.items():
            name, version = spec.rsplit("@", 1)
            fname = f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
            if fname not in tgz:
                raise RuntimeError(f"npm pack did not produce {fname} (got {sorted(tgz)})")
            if _sha512(tgz[fname]) != integrity:
                raise RuntimeError(f"{fname}: sha512 does not match the pinned integrity {integrity}")
            with tarfile.open(tgz[fname]) as tf:
                for member in tf.getmembers():
                    for pattern, target in files.items():
                        if member.isfile() and fnmatch.fnmatch(member.name, pattern):
                            out = dest / (target or Path(member.name).name)
                            out.write_bytes(tf.extractfile(member).read())
    stamp.write_text(json.dumps(sorted(_NPM)))
    return dest


# ================================================================================================
# building the book
# ================================================================================================
@dataclass
class BuildReport:
    html: Path
    runs: list
    seconds: float
    build_seconds: float
    ok: bool
    log: str = ""

    @property
    def failed(self) -> list:
        return [r for r in self.runs if not r.ok]


_BOOK_SOURCES = ("_config.yml", "_toc.yml", "intro.md", "method.md", "reproduction.md", "references.md")


def _copy_sources(dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in BOOK_DIR.iterdir():
        if f.is_file() and f.suffix in (".md", ".yml", ".bib"):
            shutil.copy2(f, dst / f.name)


def build_book(profile: str = "default", only: Sequence[str] | None = None, *, book_dir: Path | None = None,
               execute: bool = True, widget_js: bool = True, parameters: Mapping | None = None,
               timeout: int | None = None, progress: bool = True, log=print) -> BuildReport:
    """Set up and build the whole book: fetch the widget JS, execute the notebooks (``only`` a subset; the
    others keep their last executed copy or get a 'not yet run here' page), then ``jupyter-book build``.

    ``book_dir``: where to build (default the repository's ``book/``; a different folder gets a copy of the
    book's sources — used by the tests). Returns a :class:`BuildReport`; the HTML is ``<book>/_build/html``.
    """
    t0 = time.perf_counter()
    book = Path(book_dir) if book_dir else BOOK_DIR
    if book.resolve() != BOOK_DIR.resolve():
        _copy_sources(book)
    executed = book / EXECUTED
    if widget_js:
        try:
            fetch_widget_js(book / WIDGET_JS, log=log)
        except Exception as e:
            log(f"WARNING: widget JavaScript not fetched ({e}); live widgets will render blank in the static book "
                "(the kernel-free α slider does not need it)", flush=True)
    runs = []
    if execute:
        runs = run_notebooks(only, profile=profile, out_dir=executed, parameters=parameters, timeout=timeout,
                             progress=progress, log=log)
    for name, title in NOTEBOOKS:
        if not (executed / f"{name}.ipynb").is_file():
            _placeholder(executed / f"{name}.ipynb", name, title, "this build did not execute this notebook.")
    if not (book / WIDGET_JS).is_dir():
        (book / WIDGET_JS).mkdir(parents=True)
    if progress:
        log("building the book (jupyter-book build) ...", flush=True)
    t1 = time.perf_counter()
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.is_file() else "jupyter-book", "build", str(book), "--all"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    build_s = time.perf_counter() - t1
    html = book / "_build" / "html"
    ok = proc.returncode == 0 and (html / "index.html").is_file()
    if not ok:
        log(proc.stdout[-3000:] + proc.stderr[-3000:], flush=True)
    report = BuildReport(html, runs, time.perf_counter() - t0, build_s, ok and not any(not r.ok for r in runs),
                         proc.stdout[-5000:] + proc.stderr[-5000:])
    if progress:
        log(f"book: {html / 'index.html'} — {len(runs)} notebooks executed, {len(report.failed)} failed, "
            f"jupyter-book {build_s:.0f} s, total {report.seconds:.0f} s", flush=True)
        for r in report.failed:
            log(f"  FAILED {r.name}: {r.error}", flush=True)
    return report


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``book`` command's options (for ``python -m msparse book``; see :func:`run`)."""
    ap.add_argument("--quick", action="store_true", help="small parameters for every notebook (CI)")
    ap.add_argument("--profile", choices=sorted(PROFILES), default=None, help="parameter profile (default: default)")
    ap.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="execute only these notebooks")
    ap.add_argument("--no-execute", action="store_true", help="rebuild the HTML from the last executed notebooks")
    ap.add_argument("--no-widget-js", action="store_true", help="do not fetch the ipywidgets JavaScript from npm")
    ap.add_argument("--device", default=None, help="cpu, cuda or auto (passed to every notebook)")
    ap.add_argument("--results-dir", default=None, help="results store (default: $MSPARSE_RESULTS or results/)")
    ap.add_argument("--model", default=None, help="model for every notebook that takes one (default: each notebook's)")
    ap.add_argument("--timeout", type=int, default=7200,
                    help="per-cell timeout in seconds (default 7200; a stuck kernel fails instead of hanging)")
    ap.add_argument("--book-dir", default=None, help="build somewhere else (a copy of the book's sources)")
    ap.add_argument("--recompute-other-versions", action="store_true",
                    help="treat stored records computed under another torch minor or pyautoattack version than the "
                         "running ones as missing: recompute (and overwrite) them here")
    ap.add_argument("--list", action="store_true", help="list the notebooks and exit")
    return ap


def run(a: argparse.Namespace) -> int:
    """Run the ``book`` command from parsed arguments; returns the exit code (1 if a notebook or the build failed)."""
    if a.list:
        for n, t in NOTEBOOKS:
            print(f"{n:22s} {t}")
        return 0
    profile = a.profile or ("quick" if a.quick else "default")
    if getattr(a, "recompute_other_versions", False):
        from .evaluation.store import RECOMPUTE_ENV

        os.environ[RECOMPUTE_ENV] = "1"  # read by every Store, in this process and in the notebook kernels
    params = {k: v for k, v in {"device": a.device, "results_dir": a.results_dir, "model": a.model}.items()
              if v is not None}
    report = build_book(profile, a.only, book_dir=Path(a.book_dir) if a.book_dir else None,
                        execute=not a.no_execute, widget_js=not a.no_widget_js, parameters=params,
                        timeout=a.timeout)
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m msparse.book [options]`` (the same options as ``python -m msparse book``)."""
    ap = argparse.ArgumentParser(prog="msparse book", description=(
        "Execute every notebook with papermill (stored result records are reused; missing ones are computed) "
        "and build the static book into book/_build/html."))
    return run(add_arguments(ap).parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
