"""Does MeanSparse work? Every model the book can run, under every attack the book has, with a referee's verdict.

The paper (Amini et al., arXiv:2406.05927) evaluates MeanSparse with AutoAttack through the official operator, whose
gradient is zero inside the band; RobustBench re-evaluated its models with BPDA (identity backward) and found each
below its base. Following Carlini et al. (2019, "On evaluating adversarial robustness") and Tramèr et al. (2020,
"On adaptive attacks to adversarial example defenses"), a robustness claim stands only against the strongest attack
that can be built for the defence, so each model is attacked, at α = 0 and at its page's α, by:

* the official gradient (``apgd``: APGD-CE then APGD-DLR, as the appendix tables),
* BPDA (``bpda:apgd``, the identity as the operator's backward),
* a smooth surrogate (``surrogate:apgd-ce``, backward through a sigmoid relaxation of the band,
  :mod:`msparse.attacks.surrogate`),
* a transfer attack crafted on the α = 0 base (``transfer:apgd``),
* gradient estimation on the margin loss (``gradest``, :mod:`msparse.attacks.gradest`; gradient-free),
* Square (``square``, AutoAttack's black-box attack),
* and, where the CPU allows, full standard AutoAttack (``aa``).

The robust accuracy that stands is the per-image worst case over all of them. Each model's claim ("MeanSparse raises
robust accuracy at a small clean cost") is judged by :func:`msparse.report.referee.referee_verdict` on the official
gradient and on the worst case, with Holm's correction over the models (the chapter's primary claims).

Two views read the store only (nothing is computed for them): the worst case on the first :data:`CASCADE_N` images
of each model, record by record as a cascade (:func:`cascade_table`; :mod:`msparse.evaluation.cascade`: full runs,
then stages that attacked only the images still standing — a stage is never read as a per-attack number), and the
per-image agreement of a second attack library, adv-lib (no code shared with AutoAttack), with AutoAttack's APGD on
the base models (:func:`agreement_table`).

    res = works.run()
    works.table(res); works.verdict_table(res); works.figure(res); res.verdicts
    works.cascade_table(res); works.agreement_table(res)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .setup import setup
from ..report.tables import number
from .sweeps import evaluate_alphas, budget_gaps, pooled_rows
from .pages import HEADER, Page, param, register

__all__ = ["MODELS", "CONTROLS", "ATTACKS", "QUICK_ATTACKS", "check_attacks", "BLACK_BOX", "SQUARE_LONG", "FULL_AA",
           "Works", "ModelResult", "run", "table", "base_table", "verdict_table", "flags_reading", "figure",
           "cost_table", "cost_sentence", "flags_table", "findings", "CASCADE_N", "cascade_table",
           "cascade_sentence", "SECOND_LIBRARY", "agreement_table", "agreement_sentence"]

#: the models of the chapter: (name, the α of the page that evaluates it, test images). α: the offline default at
#: Fig. 3's α; the appendix family at Tables 2 and 4's α = 0.35; the standard-trained control at its page's middle
#: α = 0.25. n: 200 for the three models whose claims the pages lean on (the GELU member of Tables 2–8, the
#: offline default of Fig. 3 and Table 1, the ReLU member with the largest direct gain), 100 for the others —
#: what 2 CPU cores allow for seven attacks at two α each; the chapter states what each n detects.
MODELS: tuple[tuple[str, float, int], ...] = (
    ("msparse/resnet18-gelu-w8-pgdat", 0.35, 200),
    ("msparse/default", 0.25, 200),
    ("msparse/resnet18-relu-w8-pgdat", 0.35, 200),
    ("msparse/resnet18-silu-w8-pgdat", 0.35, 100),
    ("msparse/resnet18-elu-w8-pgdat", 0.35, 100),
    ("msparse/resnet18-psilu-w8-pgdat", 0.35, 100),
    ("msparse/resnet18-pssilu-w8-pgdat", 0.35, 100),
    ("msparse/resnet18-gelu-w8-trades", 0.35, 100),
    ("msparse/resnet18-gelu-w8-ancra", 0.35, 100),
    ("pyautoattack/resnet18-standard", 0.25, 100),
)

#: models run as controls, not judged: the standard-trained ResNet-18 makes no robustness claim (the paper says
#: MeanSparse cannot make a non-robust model robust); its row shows every attack breaking a non-robust model through
#: MeanSparse. No verdict, and not in Holm's family of the chapter's claims.
CONTROLS = ("pyautoattack/resnet18-standard",)

#: column label -> (attack name, budget overrides of the page's n_iter / n_queries), in display order.
ATTACKS: dict[str, tuple[str, dict]] = {
    "official gradient (APGD)": ("apgd", {}),
    "BPDA": ("bpda:apgd", {}),
    "surrogate": ("surrogate:apgd-ce", {}),
    "transfer": ("transfer:apgd", {}),
    "gradient estimation": ("gradest", {"n_iter": 20}),
    "Square": ("square", {"n_queries": 1000}),
    "Square 5000": ("square", {"n_queries": 5000}),
    "AutoAttack": ("aa", {"n_iter": 100, "n_queries": 5000}),
}
#: the columns of the quick book profile (the cheap ones: no transfer, Square 5000 or full AutoAttack)
QUICK_ATTACKS: tuple[str, ...] = ("official gradient (APGD)", "BPDA", "surrogate", "gradient estimation", "Square")


def check_attacks(columns: dict | None = None) -> None:
    """Check every column of ``columns`` (default :data:`ATTACKS`) against the attack registry
    (:func:`msparse.attacks.base.parse_attack`: a name the registry does not know, or a parameter an attack does
    not declare, is an :class:`~msparse.errors.InputError`) and its budget overrides against the budget fields
    of :class:`~msparse.attacks.base.AttackConfig`; also that :data:`QUICK_ATTACKS` are columns."""
    from dataclasses import fields

    from ..attacks.base import AttackConfig, parse_attack
    from ..errors import InputError

    columns = ATTACKS if columns is None else columns
    budget = {f.name for f in fields(AttackConfig)} - {"eps", "norm", "seed"}
    for label, (attack, over) in columns.items():
        try:
            parse_attack(attack)
        except InputError as e:
            raise type(e)(f"attack column {label!r}: {e}") from None
        bad = sorted(set(over) - budget)
        if bad:
            raise InputError(f"attack column {label!r}: budget overrides {bad} are not budget fields; "
                             f"use {sorted(budget)}")
    missing = [c for c in QUICK_ATTACKS if c not in ATTACKS]
    if missing:
        raise InputError(f"QUICK_ATTACKS {missing} are not columns of ATTACKS ({list(ATTACKS)})")


@dataclass
class ModelResult:
    """One model: display rows per attack column at α = 0 and α (percent, Δ and McNemar p vs α = 0), the worst
    case over them, and the referee's verdict (set by :func:`run` after Holm's correction)."""
    model: str
    alpha: float
    n: int
    by_attack: dict                       # {column label: [row at α = 0, row at α]}
    worst: list                           # [row at α = 0, row at α]
    missing: list = field(default_factory=list)   # column labels not run on this model (budget)
    verdict: object = None                # msparse.report.referee.RefereeVerdict (None for a control)
    store: object = None                  # the results store the records came from


@dataclass
class Works:
    models: list[ModelResult]
    n_iter: int
    eps: float
    note: str = ""
    verdicts: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)      # every row with a record (provenance)


def _model_result(name: str, alpha: float, columns: dict, *, n_examples, n_train, data_source, device, eps, n_iter,
                  seed, use_stored, results_dir, progress) -> tuple[ModelResult, list[dict]]:
    s = setup(name, n_examples=n_examples, n_train=n_train, data_source=data_source, device=device,
              use_stored=use_stored, results_dir=results_dir)
    by_attack, rows = {}, []
    for label, (attack, budget) in columns.items():
        kw = {"n_iter": n_iter, "n_queries": 5000, **budget}
        by_attack[label] = evaluate_alphas(s, [0.0, alpha], attack=attack, eps=eps, seed=seed, label="works",
                                           progress=progress, **kw)
        rows += by_attack[label]
    worst = pooled_rows(next(iter(by_attack.values())), store=s.store)
    missing = [c for c in ATTACKS if c not in columns]
    return ModelResult(name, alpha, len(s.x), by_attack, worst, missing, store=s.store), rows


_CONTROL = "control (no claim)"

#: models that also get the query-based attacks (gradient estimation, Square: most of the CPU time): every model of
#: the chapter (on the control every image falls within a few queries, so its ~15× cost per query stays small)
BLACK_BOX = tuple(name for name, _, _ in MODELS)
#: models that also get Square with AutoAttack's budget of 5000 queries (robust images cost 5× the 1000-query run):
#: every model of the chapter
SQUARE_LONG = BLACK_BOX
#: models that also get full standard AutoAttack (about 9 s per image on one CPU thread)
FULL_AA = ("msparse/resnet18-gelu-w8-pgdat", "msparse/default")


def run(models=MODELS, *, attacks=tuple(ATTACKS), full_aa=FULL_AA, black_box=BLACK_BOX, square_long=SQUARE_LONG,
        data_source: str = "auto", n_examples: int | None = None, n_train: int = 1000, eps: float = 8 / 255,
        n_iter: int = 50, device: str = "cpu", seed: int = 0, use_stored: bool = True,
        results_dir: str | None = None, progress: bool = True) -> Works:
    """Every attack column in ``attacks`` (labels of :data:`ATTACKS`; ``"AutoAttack"`` only on the models in
    ``full_aa``, gradient estimation and Square only on those in ``black_box``, Square with 5000 queries only on
    those in ``square_long``) at α = 0 and each model's α (``models``: (name, α, n) triples) on its first n test
    images (``n_examples``, when given, for every model); the per-image worst case; referee verdicts with Holm's
    correction over the models."""
    from ..evaluation.significance import holm
    from ..report import referee, verdicts

    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        from ..errors import UnknownNameError
        raise UnknownNameError(f"unknown attack column(s) {unknown}; choose from {list(ATTACKS)}")
    check_attacks({a: ATTACKS[a] for a in attacks})
    results, rows = [], []
    gates = {"AutoAttack": full_aa, "gradient estimation": black_box, "Square": black_box,
             "Square 5000": square_long}   # columns run only on the models listed; the others on every model
    for name, alpha, n in models:
        cols = {c: ATTACKS[c] for c in attacks if c not in gates or name in gates[c]}
        mr, r = _model_result(name, float(alpha), cols, n_examples=int(n_examples or n), n_train=n_train,
                              data_source=data_source, device=device, eps=eps, n_iter=n_iter, seed=seed,
                              use_stored=use_stored, results_dir=results_dir, progress=progress)
        results.append(mr)
        rows += r
    direct = next(iter(ATTACKS))
    judged = [m for m in results if m.model not in CONTROLS]
    p_worst = [verdicts.paired_difference(m.worst[0], m.worst[1]).p_value for m in judged]
    lines = []
    for m, p_adj in zip(judged, holm(p_worst)):
        d = m.by_attack.get(direct)
        m.verdict = referee.referee_verdict(d[0] if d else m.worst[0], d[1] if d else m.worst[1],
                                             m.worst[0], m.worst[1], p_adjusted=p_adj,
                                             **budget_gaps(m.worst[0], m.worst[1]))
        lines.append(f"**Verdict: {m.verdict.phrase}** — {m.model} (α = {m.alpha:g}, n = {m.n}): "
                     f"{m.verdict.reason()}.")
    for m in results:
        if m.model in CONTROLS:
            lines.append(f"**Control (no claim)** — {m.model} (α = {m.alpha:g}, n = {m.n}): robust accuracy under "
                         f"the worst case over {len(m.by_attack)} attacks {m.worst[0]['robust']:.1f}% at α = 0, "
                         f"{m.worst[1]['robust']:.1f}% at α.")
    note = (f"Budget: APGD-based attacks {n_iter} iterations (AutoAttack: 100), gradient estimation "
            f"{ATTACKS['gradient estimation'][1]['n_iter']} steps of 64 queries, Square "
            f"{ATTACKS['Square'][1]['n_queries']} queries (AutoAttack: 5000), full AutoAttack (standard version: "
            f"100 iterations, Square 5000 queries) on {', '.join(full_aa) or 'no model'}; gradient estimation and "
            f"Square on {', '.join(black_box) or 'no model'}"
            + (f"; Square with 5000 queries on {', '.join(square_long)}" if square_long else "")
            + "; the first n CIFAR-10 test "
            f"images of each model (n in the table), ε = {255 * eps:g}/255. Holm's correction over the "
            f"{len(judged)} adversarially trained models' worst-case tests"
            + (f" (the control{'s' if len(results) - len(judged) > 1 else ''} "
               f"{', '.join(m.model for m in results if m.model in CONTROLS)} not judged)." if len(judged) < len(results)
               else "."))
    return Works(results, n_iter, eps, note, lines, rows)


def table(res: Works):
    """One row per model: clean accuracy, then robust accuracy [95% Wilson] at α under each attack and the worst
    case, each with Δ vs α = 0 on the same images and its exact McNemar p (α = 0 values in the α = 0 row)."""
    import pandas as pd

    def cell(rows):
        r0, r1 = rows
        return (f"{r1['robust']:.1f} [{r1['robust_lo']:.1f}, {r1['robust_hi']:.1f}] "
                f"({r1['robust'] - r0['robust']:+.1f} pp, p={r1.get('p_robust', float('nan')):.2g})")

    out = []
    for m in res.models:
        first = next(iter(m.by_attack.values()))
        row = {"model": m.model.replace("msparse/", ""), "α": m.alpha, "n": m.n,
               "clean α=0 → α": f"{first[0]['clean']:.1f} → {first[1]['clean']:.1f}"}
        for label in ATTACKS:
            row[label] = cell(m.by_attack[label]) if label in m.by_attack else "not run (CPU budget)"
        row["worst case"] = cell(m.worst)
        row["verdict"] = m.verdict.phrase if m.verdict else _CONTROL
        out.append(row)
    return pd.DataFrame(out).set_index("model")


def base_table(res: Works):
    """Robust accuracy at α = 0 under each attack (at α = 0 BPDA, surrogate and transfer are the direct attack)."""
    import pandas as pd

    out = []
    for m in res.models:
        row = {"model": m.model.replace("msparse/", ""), "n": m.n}
        for label in ATTACKS:
            r = m.by_attack.get(label)
            row[label] = f"{r[0]['robust']:.1f}" if r else "not run"
        row["worst case"] = f"{m.worst[0]['robust']:.1f}"
        out.append(row)
    return pd.DataFrame(out).set_index("model")


def verdict_table(res: Works):
    """The referee's verdict per model, with the official-gradient and worst-case differences behind it."""
    import pandas as pd

    return pd.DataFrame([{"model": m.model, "α": m.alpha, "n": m.n, "verdict": m.verdict.phrase,
                          "evidence": m.verdict.reason()} for m in res.models if m.verdict]).set_index("model")


def figure(res: Works):
    """Robust accuracy at α minus at α = 0 (pp, paired, on the same images) per model under the official gradient
    and under the worst case over every attack, with 95% paired intervals."""
    import matplotlib.pyplot as plt

    from ..report import plots, verdicts

    direct = next(iter(ATTACKS))
    names = [m.model.replace("msparse/resnet18-", "").replace("msparse/", "").replace("pyautoattack/", "")
             for m in res.models]
    fig, ax = plt.subplots(figsize=(9, 4.6), layout="constrained")
    for k, (label, get) in enumerate(((f"{direct}", lambda m: m.by_attack.get(direct)),
                                      ("worst case over all attacks", lambda m: m.worst))):
        xs, ds, lo, hi = [], [], [], []
        for i, m in enumerate(res.models):
            rows = get(m)
            if not rows:
                continue
            d = verdicts.paired_difference(rows[0], rows[1])
            xs.append(i + (k - 0.5) * 0.3)
            ds.append(d.delta_pp)
            lo.append(d.delta_pp - 100 * d.ci[0])
            hi.append(100 * d.ci[1] - d.delta_pp)
        ax.errorbar(xs, ds, yerr=[lo, hi], fmt="o" if k == 0 else "s", capsize=3, label=label)
    ax.axhline(0, color="0.3", lw=1)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("robust accuracy, α vs α = 0 (pp)")
    ax.set_title("MeanSparse's gain: official gradient vs worst case over every attack (95% paired CI)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=2, frameon=False)
    return plots.readable(fig)


def _records(res: Works):
    """(model result, column label, row, stored record) for every row of the chapter that has a record."""
    from ..evaluation.store import Store

    for m in res.models:
        st = m.store if isinstance(m.store, Store) else Store(m.store)
        for label, rows in m.by_attack.items():
            for r in rows:
                rec = st.get(r["key"]) if r.get("key") else None
                if rec is not None:
                    yield m, label, r, rec


def _cost_rows(res: Works) -> list[dict]:
    return [{"model": m.model, "attack": label, "α": r["alpha"],
             "s / image": prov.get("wall_s", float("nan")) / max(prov.get("n", 1), 1)}
            for m, label, r, rec in _records(res) for prov in [rec.get("provenance", {})]]


def cost_table(res: Works):
    """CPU seconds per image of each attack (wall time / n from the records' provenance, on the machine that made
    them; mean of α = 0 and α), one row per model, one column per attack."""
    import pandas as pd

    rows = _cost_rows(res)
    if not rows:
        return pd.DataFrame()
    t = pd.DataFrame(rows).pivot_table(index="model", columns="attack", values="s / image", aggfunc="mean")
    t.index = [i.replace("msparse/", "") for i in t.index]
    return t[[c for c in ATTACKS if c in t.columns]].map(lambda v: number(v, 2))


def flags_table(res: Works):
    """Per model at its α: mean fraction of activations inside the band, the fraction of test images whose input
    gradient is exactly zero under the official backward, and AutoAttack's own warnings over the model's records."""
    import pandas as pd
    from collections import Counter

    out = {}
    for m, label, r, rec in _records(res):
        if r["alpha"] == 0:
            continue
        d = rec["result"].get("diagnostics") or {}
        row = out.setdefault(m.model, {"blocked": [], "zero": [], "warnings": Counter()})
        if "blocked_mean" in d:
            row["blocked"].append(d["blocked_mean"])
        if "zero_grad" in d:
            row["zero"].append(d["zero_grad"])
        row["warnings"].update({k.split("!")[0].split(". ")[0].strip() + ("!" if "!" in k else ""): v
                                for k, v in (d.get("messages") or {}).items() if not _spurious(k)})
    return pd.DataFrame([{"model": k.replace("msparse/", ""),
                          "blocked at α (mean over sites)": round(max(v["blocked"]), 3) if v["blocked"] else None,
                          "zero input gradient (official backward)": round(max(v["zero"]), 3) if v["zero"] else None,
                          "AutoAttack warnings (first sentence, × records)":
                              "; ".join(f"{w} ×{c}" for w, c in v["warnings"].items()) or "none"}
                         for k, v in out.items()]).set_index("model")


def _spurious(message: str) -> bool:
    """AutoAttack's "dynamic defense" warning on records made before the operator's forward stopped reading its
    backward mode through the property named ``backward``: the check (``pyautoattack.checks.check_dynamic``) counts
    calls of any function named ``backward``/``grad`` during one forward pass, so the property read raised it on every
    model with an active site (the control included). A false alarm at its cause; not shown."""
    return "dynamic defense" in message


def flags_reading(res: Works) -> str:
    """What the flags table measures, what would indicate masking, and what this page sees (one paragraph)."""
    t = flags_table(res)
    if t.empty:
        return ""
    zero = t["zero input gradient (official backward)"].dropna()
    blocked = t["blocked at α (mean over sites)"].dropna()
    z = (f"between {zero.min():.3f} and {zero.max():.3f}" if len(zero) else "not recorded")
    b = (f"{blocked.min():.2f} to {blocked.max():.2f}" if len(blocked) else "not recorded")
    return ("**Reading.** *Blocked at α* is the mean fraction of a site's activations inside the band (set to the "
            f"centre, so the official gradient is zero there): here {b}. *Zero input gradient* is the fraction of "
            "images whose whole input gradient is exactly zero under the official backward; masking that stops a "
            "gradient attack outright would show as values near 1. Here it is " + z + ": the band blocks part of "
            "every site, never all of it, so the gradient still reaches the input but is bent by the blocked units "
            "— partial masking, which the surrogate and BPDA attacks above expose by going below the official "
            "gradient's robust accuracy. AutoAttack's warnings list its own checks; its \"dynamic defense\" "
            "warning, which earlier records carry on every model with an active site, was a false alarm raised by "
            "the operator's forward reading a property named `backward` (the check counts such calls); it is fixed "
            "and not shown.")


def cost_sentence(res: Works, n: int = 1000) -> str:
    """What the chapter would cost at ``n`` images per model at the measured per-image costs (CPU hours)."""
    rows = _cost_rows(res)
    if not rows:
        return ""
    hours = sum(r["s / image"] for r in rows) * n / 3600
    return (f"At these per-image costs, the records of this page at n = {n} images per model would take about "
            f"{hours:.0f} CPU-hours on this machine (2 cores) — why the page uses n = "
            f"{', '.join(sorted({str(m.n) for m in res.models}))}; on a GPU the same records take minutes "
            "(`python -m msparse plan paper`).")


def findings(res: Works, *, records: bool = False) -> list[str]:
    """One sentence per model with the numbers the chapter's tables show; with ``records``, the records they rest on
    (12-character key prefixes; the page keeps them in its folded provenance instead)."""
    direct = next(iter(ATTACKS))
    out = []
    for m in res.models:
        d, w = m.by_attack.get(direct), m.worst
        parts = [f"{m.model} (α = {m.alpha:g}, n = {m.n}): **{m.verdict.phrase if m.verdict else _CONTROL}**"]
        if d:
            parts.append(f"under the official gradient {d[0]['robust']:.1f}% → {d[1]['robust']:.1f}%")
        parts.append(f"as it stands (every stored attack on these images, pooled) {w[0]['robust']:.1f}% → "
                     f"{w[1]['robust']:.1f}%")
        line = "; ".join(parts[:1]) + " — " + ", ".join(parts[1:])
        if records:
            keys = sorted({r["key"][:12] for rows in m.by_attack.values() for r in rows if r.get("key")})
            line += f" (records {', '.join(keys)})"
        out.append(line)
    return out


# ================================================================================================
# the worst case at n = 1000, as a cascade (msparse.evaluation.cascade), and a second attack library
# ================================================================================================
#: the number of test images of the cascade table: every record of the store on a model's first CASCADE_N images
CASCADE_N = 1000


def _store_of(m: ModelResult):
    from ..evaluation.store import Store

    return m.store if isinstance(m.store, Store) else Store(m.store)


def _points(m: ModelResult):
    """(base point, point at the model's α) of a model, from the first of its page records at α that the store
    holds (:func:`msparse.evaluation.evidence.point_of`); None without one."""
    from ..evaluation.evidence import point_of

    st = _store_of(m)
    for rows in m.by_attack.values():
        for r in rows:
            rec = st.get(r["key"]) if r.get("alpha") and r.get("key") else None
            if rec is not None:
                p = point_of(rec)
                return p.base, p
    return None


def _budget_label(spec) -> str:
    """A record's attack budget: iterations (× restarts) of its gradient attacks, queries of Square."""
    from ..attacks.base import parse_attack

    atk = spec["attack"]
    names = {a for c in parse_attack(atk["name"]) for a in c.attacks}
    parts = []
    if names - {"square"}:
        r = int(atk.get("n_restarts", 1))
        parts.append(f"{atk.get('n_iter')} it" + (f" × {r} restarts" if r > 1 else ""))
    if "square" in names:
        parts.append(f"{atk.get('n_queries')} queries")
    return ", ".join(parts)


def _aa_parts(spec) -> set[str]:
    """The attacks of standard AutoAttack (``aa``) that a record ran through the official gradient with at least
    AutoAttack's budget (the page's ``"AutoAttack"`` column: iterations, Square's queries)."""
    from ..attacks.base import parse_attack

    atk, need = spec["attack"], ATTACKS["AutoAttack"][1]
    ok = {a for c in parse_attack("aa") for a in c.attacks}

    def enough(a):
        unit = "n_queries" if a == "square" else "n_iter"
        return int(atk.get(unit, 0)) >= need[unit]

    return {a for c in parse_attack(atk["name"]) if c.mode == "direct" for a in c.attacks if a in ok and enough(a)}


def attacked_broken(rec, n: int) -> tuple[int, int]:
    """(images the record attacked, how many of them it broke) on its first ``n`` images: attacked = classified
    correctly clean and not skipped (a cascade stage's ``spec["skip"]``); broken = attacked and not robust. A
    skipped image is neither: it is no evidence (:func:`msparse.evaluation.evidence.stage_flags`)."""
    res = rec["result"]
    skip = rec["spec"].get("skip") or "0" * len(res["clean_flags"])
    attacked = [c == "1" and s != "1" for c, s in zip(res["clean_flags"][:n], skip[:n])]
    return sum(attacked), sum(a and f != "1" for a, f in zip(attacked, res["robust_flags"][:n]))


def _cascade_row(rec, n: int) -> dict:
    spec, prov, tags = rec["spec"], rec.get("provenance") or {}, (rec.get("meta") or {}).get("tags") or {}
    attacked, broken = attacked_broken(rec, n)
    wall = prov.get("wall_s")
    return {"stage / attack": tags.get("cascade") or spec["attack"]["name"], "attack": spec["attack"]["name"],
            "page": tags.get("book", ""),
            "seed": spec.get("seed", 0), "budget": _budget_label(spec), "images attacked": attacked,
            "broken by it": broken,
            # a record on more images than n: its share of the time, pro rata
            "CPU-s": None if wall is None else float(wall) * n / spec["data"]["n"],
            "stage": "skip" in spec, "created": prov.get("created", ""), "key": rec["key"][:12],
            "aa parts": _aa_parts(spec),
            # wall time on another device is no CPU time: say where it ran
            "device": "" if str(prov.get("device", "cpu")).startswith("cpu") else f" ({prov['device']})"}


def cascade_rows(st, point, n: int) -> list[dict]:
    """One row per record pooled on ``point``'s first ``n`` images (:func:`msparse.evaluation.evidence.records_at`),
    in the order they attacked: full runs first (by creation), then cascade stages by decreasing number of images
    attacked."""
    from ..evaluation.evidence import records_at

    rows = [_cascade_row(r, n) for r in records_at(st, point, n)]
    return sorted(rows, key=lambda r: (r["stage"], -r["images attacked"] if r["stage"] else 0, r["created"]))


@dataclass
class CascadeSide:
    """One side (α = 0 or the model's α) of a model on its first n images: the rows of :func:`cascade_rows` and
    the pooled evidence (:func:`msparse.evaluation.evidence.pool`)."""
    model: str
    alpha: float
    n: int
    rows: list
    evidence: object

    @property
    def cpu_hours(self) -> float:
        return sum(r["CPU-s"] or 0.0 for r in self.rows) / 3600

    @property
    def clean(self) -> int:
        return sum(self.evidence.clean)

    @property
    def full_aa(self) -> bool:
        """Whether full standard AutoAttack (one full run of ``aa``, no image skipped) is among the records."""
        return any(r["stage / attack"] == "aa" and not r["stage"] for r in self.rows)

    @property
    def aa_missing(self) -> list[str]:
        """The attacks of standard AutoAttack not yet among the records with its budget (full runs or cascade
        stages, e.g. AutoAttack run as a cascade); empty when every one is, or a full ``aa`` run is."""
        from ..attacks.base import parse_attack

        have = set().union(*(r["aa parts"] for r in self.rows))
        return [] if self.full_aa else [a for c in parse_attack("aa") for a in c.attacks if a not in have]

    @property
    def stages_missing(self) -> list[str]:
        """The stages of the book's full cascade (:data:`msparse.evaluation.cascade.DEFAULT_STAGES`) that no record
        on these images ran, by their labels: a stage counts as run when every attack of it is among the records
        (full runs or cascade stages, through the same gradient path; on the base each as the direct attack it
        computes there, :func:`msparse.attacks.base.direct_equivalent`), standard AutoAttack as
        :attr:`aa_missing`. Budgets are not compared here: the table shows each record's."""
        from ..evaluation.cascade import DEFAULT_STAGES

        have = set().union(set(), *(_atoms(r["attack"], base=self.alpha == 0) for r in self.rows))
        return [st.title for st in DEFAULT_STAGES
                if (self.aa_missing if st.attack == "aa" else not _atoms(st.attack, base=self.alpha == 0) <= have)]


def _atoms(name: str, *, base: bool) -> set:
    """``{(gradient path, registry attack)}`` an attack name runs (on the base: as direct attacks)."""
    from ..attacks.base import direct_equivalent, parse_attack
    from ..errors import InputError

    try:
        comps = parse_attack(name)
    except InputError:
        return set()
    return {(c.mode, a) for c in (direct_equivalent(comps) if base else comps) for a in c.attacks}


def cascade_sides(res: Works, n: int = CASCADE_N) -> dict[str, list[CascadeSide]]:
    """``{model: [α = 0 side, α side]}`` for every model of ``res`` with records on its first ``n`` images on both
    sides (nothing is computed: the store's records only)."""
    from ..evaluation.evidence import pool, records_at

    out = {}
    for m in res.models:
        pts = _points(m)
        st = _store_of(m)
        if pts is None or not all(records_at(st, p, n) for p in pts):
            continue
        out[m.model] = [CascadeSide(m.model, float(p.alpha), n, cascade_rows(st, p, n), pool(st, p, n)) for p in pts]
    return out


def cascade_table(res: Works, n: int = CASCADE_N):
    """Per model with records on its first ``n`` images at α = 0 and at its α: one row per record pooled there
    (full runs first, then cascade stages by decreasing number of images attacked) with its budget, the images it
    attacked (clean-correct, not skipped), how many of them it broke and its CPU seconds (the record's wall time);
    then the pooled worst case (robust accuracy on the n images) and the side's CPU-hours. A stage's counts are
    what it did on the images it attacked, never a robust accuracy of its attack."""
    import pandas as pd

    out = []
    for model, sides in cascade_sides(res, n).items():
        for s in sides:
            head = {"model": model.replace("msparse/", ""), "α": s.alpha}
            for r in s.rows:
                out.append({**head, **{k: r[k] for k in ("stage / attack", "page", "seed", "budget",
                                                         "images attacked", "broken by it")},
                            "kind": "cascade stage" if r["stage"] else "full run",
                            "CPU": "—" if r["CPU-s"] is None else f"{r['CPU-s']:.0f} s" + r["device"],
                            "record": r["key"]})
            out.append({**head, "stage / attack": "pooled worst case", "page": "", "seed": "", "budget": "",
                        "images attacked": "", "broken by it": "", "kind": f"robust {s.evidence.robust:.1f}% of {n}",
                        "CPU": f"{s.cpu_hours:.2f} CPU-h", "record": f"{len(s.rows)} records"})
    if not out:
        return pd.DataFrame()
    cols = ["model", "α", "kind", "stage / attack", "page", "seed", "budget", "images attacked", "broken by it", "CPU",
            "record"]
    return pd.DataFrame(out)[cols].set_index(["model", "α"])


def cascade_sentence(res: Works, n: int = CASCADE_N) -> str:
    """What the cascade table shows, in words: per model with cascade stages and side, the CPU-hours, the worst
    case and the range of the shares of the clean-correct images its stages still had to attack (the table gives
    each stage's); the models with full runs only;
    whether full standard AutoAttack is among the records yet; and the page's models without records on n images on
    both sides."""
    sides = cascade_sides(res, n)
    parts, plain = [], []
    for model, pair in sides.items():
        if not any(r["stage"] for s in pair for r in s.rows):
            plain.append(model.replace("msparse/", ""))
            continue
        for s in pair:
            stages = [r for r in s.rows if r["stage"]]
            shares = sorted(round(100 * r["images attacked"] / max(s.clean, 1)) for r in stages)
            reach = (f"{shares[0]}%" if shares[0] == shares[-1] else f"{shares[0]}–{shares[-1]}%") if shares else "none"
            parts.append(f"{model.replace('msparse/', '')} at α = {s.alpha:g}: {len(s.rows) - len(stages)} full runs "
                         f"and {len(stages)} cascade stages, {s.cpu_hours:.2f} CPU-hours, worst case "
                         f"{s.evidence.robust:.1f}%; each stage attacked {reach} of its {s.clean} clean-correct images")
    if not sides:
        text = f"No model of this page has records on its first {n} test images at both α = 0 and its α yet."
    else:
        text = f"At n = {n}: " + ". ".join(parts) + "." if parts else f"At n = {n}: no cascade stage yet."
    if plain:
        text += f" Full runs only (no cascade stage yet) on {', '.join(plain)}."
    if sides:
        text += f" Full standard AutoAttack at n = {n}: " + "; ".join(_aa_status(sides)) + "."
        text += f" The book's full cascade at n = {n}: " + "; ".join(_full_status(sides)) + "."
    none = [m.model.replace("msparse/", "") for m in res.models if m.model not in sides]
    if none:
        text += f" Not yet at n = {n} on both sides: {', '.join(none)}."
    return text


def _aa_status(sides: dict) -> list[str]:
    """Per group of models: standard AutoAttack at n as a full run, as cascade stages, or not yet (with what of it
    is there)."""
    groups: dict[str, list[str]] = {}
    for model, pair in sides.items():
        missing = sorted({a for s in pair for a in s.aa_missing})
        part = sorted({a for s in pair for r in s.rows for a in r["aa parts"]} - set(missing))
        key = ("a full run" if all(s.full_aa for s in pair) else "complete as cascade stages" if not missing
               else "not yet among the records" + (f" (so far: {', '.join(part)})" if part else ""))
        groups.setdefault(key, []).append(model.replace("msparse/", ""))
    return [f"{k} on {', '.join(v)}" if len(groups) > 1 else k for k, v in groups.items()]


def _full_status(sides: dict) -> list[str]:
    """Per group of models: every stage of the book's full cascade among the records on both sides, or which
    stages are not yet (:attr:`CascadeSide.stages_missing`)."""
    groups: dict[str, list[str]] = {}
    for model, pair in sides.items():
        missing = list(dict.fromkeys(t for s in pair for t in s.stages_missing))
        key = "every stage on both sides" if not missing else "not yet " + ", ".join(missing)
        groups.setdefault(key, []).append(model.replace("msparse/", ""))
    return [f"{k} on {', '.join(v)}" if len(groups) > 1 else k for k, v in groups.items()]


#: the second library's attacks: (label, attack, its parameters as the record spells them, what it is compared
#: with, the components of AutoAttack's APGD (the page's ``apgd`` record) whose per-image outcome it is compared to)
SECOND_LIBRARY: tuple[tuple[str, str, dict, str, tuple[str, ...]], ...] = (
    ("adv-lib APGD-CE", "advlib-apgd", {"loss": "ce"}, "AutoAttack APGD-CE", ("apgd-ce",)),
    ("adv-lib FMN", "advlib-fmn", {}, "AutoAttack APGD-CE + DLR", ("apgd-ce", "apgd-dlr")),
)


def robust_under(rec, attacks, n: int) -> list[bool] | None:
    """Per-image robust flags of the first ``n`` images under the components ``attacks`` of a worst-case record
    (``result.components[...]["outcome"]``: ``1`` robust, ``0`` wrong clean, ``a``/``b``/… broken by the 1st/2nd/…
    attack of that component); None when no component ran all of them."""
    for comp in rec["result"].get("components", {}).values():
        names = list(comp["attacks"])
        if all(a in names for a in attacks):
            letters = {chr(ord("a") + names.index(a)) for a in attacks}
            return [ch not in letters and ch not in "0-" for ch in comp["outcome"][:n]]
    return None


def full_run(st, point, attack: str, params: dict, like, n: int):
    """(record, k): the full run (no image skipped) of ``attack`` with ``params`` on ``point`` with the budget and
    seed of the record ``like`` that covers the most of its first ``n`` images (k of them, hash-checked by
    :func:`msparse.evaluation.evidence.records_at`); None without one. A cascade stage is never returned."""
    from ..evaluation.evidence import load_index, records_at

    want = like["spec"]["attack"]
    best = None
    for rec in load_index(st).get(point, []):
        spec, atk = rec["spec"], rec["spec"]["attack"]
        if ("skip" in spec or atk["name"] != attack or int(spec.get("seed", 0)) != int(like["spec"].get("seed", 0))
                or any(atk.get(k) != want.get(k) for k in ("n_iter", "n_restarts"))
                or any((atk.get(attack) or {}).get(k) != v for k, v in params.items())):
            continue
        k = min(spec["data"]["n"], n)
        if (best is None or k > best[1]) and rec["key"] in {r["key"] for r in records_at(st, point, k)}:
            best = (rec, k)
    return best


def _agreement_row(model, label, ours, other, theirs, k) -> dict:
    from ..evaluation.significance import mcnemar

    clean = [c == "1" for c in theirs["result"]["clean_flags"][:k]]
    a = [f == "1" for f in ours["result"]["robust_flags"][:k]]
    b = robust_under(theirs, other[1], k)
    both_r = sum(x and y for x, y in zip(a, b))
    both_b = sum(c and not x and not y for c, x, y in zip(clean, a, b))
    p = mcnemar(b, a)
    return {"model": model.replace("msparse/", ""), "comparison": f"{label} vs {other[0]}", "n": k,
            "clean-correct": sum(clean), f"robust: {label.split()[0]} %": round(100 * sum(a) / k, 1),
            "robust: AutoAttack %": round(100 * sum(b) / k, 1), "both robust": both_r, "both broken": both_b,
            "only adv-lib broke": p.lost, "only AutoAttack broke": p.gained,
            "agreement %": round(100 * (both_r + both_b) / max(sum(clean), 1), 1),
            "McNemar p": float(f"{p.p_value:.3g}"),
            "records": f"{ours['key'][:12]} / {theirs['key'][:12]}"}


def agreement(res: Works) -> tuple[list[dict], list[str]]:
    """Rows of :func:`agreement_table` and what is missing (``"model: attack"``)."""
    from ..evaluation.evidence import point_of

    label = next(c for c, (a, _) in ATTACKS.items() if a == "apgd")
    rows, missing = [], []
    for m in res.models:
        st = _store_of(m)
        row0 = (m.by_attack.get(label) or [{}])[0]
        theirs = st.get(row0["key"]) if row0.get("key") and not row0.get("alpha") else None
        if theirs is None:
            missing.append(f"{m.model}: the page's AutoAttack APGD at α = 0")
            continue
        point = point_of(theirs)
        for lab, attack, params, *other in SECOND_LIBRARY:
            got = full_run(st, point, attack, params, theirs, m.n)
            if got is None or robust_under(theirs, other[1], got[1]) is None:
                missing.append(f"{m.model}: {lab}")
                continue
            rows.append(_agreement_row(m.model, lab, got[0], other, theirs, got[1]))
    return rows, missing


def agreement_table(res: Works):
    """Per base model (α = 0): adv-lib's APGD-CE against AutoAttack's APGD-CE, and adv-lib's FMN against
    AutoAttack's APGD-CE + DLR, on the same images with the same iterations, seed and restarts (the page's ``apgd``
    record, APGD-CE's outcome read from its per-image component outcome): images robust under both, broken by both
    (of the clean-correct ones), broken by one only (each way), the agreement on the clean-correct images and the
    exact McNemar p of the difference in robust accuracy. Full runs only: a cascade stage is never read."""
    import pandas as pd

    rows, _ = agreement(res)
    return pd.DataFrame(rows).set_index(["model", "comparison"]) if rows else pd.DataFrame()


def agreement_sentence(res: Works) -> str:
    """The agreement in one sentence (range over the models, how many McNemar p < 0.05) and what is missing."""
    rows, missing = agreement(res)
    text = ""
    for lab, _, _, what, _ in SECOND_LIBRARY:
        rs = [r for r in rows if r["comparison"].startswith(lab)]
        if rs:
            ag = [r["agreement %"] for r in rs]
            span = f"{min(ag):.1f}%" if min(ag) == max(ag) else f"{min(ag):.1f}–{max(ag):.1f}%"
            text += (f"{lab} vs {what}: {len(rs)} model{'s' if len(rs) != 1 else ''}, per-image agreement {span} "
                     f"of the clean-correct images, McNemar p < 0.05 on {sum(r['McNemar p'] < 0.05 for r in rs)}. ")
    if missing:
        text += f"Not yet computed: {'; '.join(missing)}."
    return text.strip() or "No record of the second library yet."


# ================================================================================================
# the page (msparse.experiments.pages)
# ================================================================================================
@dataclass
class Params:
    """The parameters of the page ``does_it_work`` in the order of its notebook's parameters cell, which is
    rendered from them (:func:`msparse.experiments.pages.render_parameters`)."""
    models: list = param([["msparse/resnet18-gelu-w8-pgdat", 0.35, 200], ["msparse/default", 0.25, 200],
                         ["msparse/resnet18-relu-w8-pgdat", 0.35, 200], ["msparse/resnet18-silu-w8-pgdat", 0.35, 100],
                         ["msparse/resnet18-elu-w8-pgdat", 0.35, 100], ["msparse/resnet18-psilu-w8-pgdat", 0.35, 100],
                         ["msparse/resnet18-pssilu-w8-pgdat", 0.35, 100],
                         ["msparse/resnet18-gelu-w8-trades", 0.35, 100], ["msparse/resnet18-gelu-w8-ancra", 0.35, 100],
                         ["pyautoattack/resnet18-standard", 0.25, 100]], "[model, alpha, test images]")
    attacks: list = param(list(ATTACKS), "columns")
    full_aa: list = param(["msparse/resnet18-gelu-w8-pgdat", "msparse/default"],
                          "models that also get full standard AutoAttack (slow on CPU)")
    black_box: list = param(["msparse/resnet18-gelu-w8-pgdat", "msparse/default", "msparse/resnet18-relu-w8-pgdat",
                            "msparse/resnet18-silu-w8-pgdat", "msparse/resnet18-elu-w8-pgdat",
                            "msparse/resnet18-psilu-w8-pgdat", "msparse/resnet18-pssilu-w8-pgdat",
                            "msparse/resnet18-gelu-w8-trades", "msparse/resnet18-gelu-w8-ancra",
                            "pyautoattack/resnet18-standard"], "models that also get gradient estimation and Square")
    square_long: list = param(["msparse/resnet18-gelu-w8-pgdat", "msparse/default", "msparse/resnet18-relu-w8-pgdat",
                              "msparse/resnet18-silu-w8-pgdat", "msparse/resnet18-elu-w8-pgdat",
                              "msparse/resnet18-psilu-w8-pgdat", "msparse/resnet18-pssilu-w8-pgdat",
                              "msparse/resnet18-gelu-w8-trades", "msparse/resnet18-gelu-w8-ancra",
                              "pyautoattack/resnet18-standard"], "models that also get Square with 5000 queries")
    model: str | None = param(None,
                              "a load_model name: run the chapter on this one model (at alpha, n_examples) instead of "
                              "models")
    alpha: float = param(0.35, "with model")
    n_examples: int = param(100, "with model: test images")
    dataset: str = param("cifar10")
    data_source: str = param("auto", "auto | offline | official")
    n_train: int = param(1000, "training images for mu, sigma")
    eps: float = param(8 / 255, expr="8 / 255")
    n_iter: int = param(50, "iterations of the APGD-based attacks (AutoAttack: 100)")
    device: str = param("cpu", "cpu | cuda | auto")
    seed: int = param(0)
    use_stored: bool = param(True, "reuse stored result records")
    results_dir: str | None = param(None, "None means $MSPARSE_RESULTS or results/")
    ledger: bool = param(True,
                         "also collect every page's primary claim (their default parameters) for Holm across the book")
    n_claim: int = param(1000,
                         "with ledger: test images per claim (pages with fewer have their claim's records extended; "
                         "0: the pages' n)")
    claim_seeds: list = param([1, 2],
                              "with ledger: attack seeds under which each claim's direct test is repeated ([]: none)")


def _run_page(p, **extra) -> Works:
    """The chapter's sweep with the page's parameters, as its notebook runs it: with ``model`` set, that one model
    at ``alpha`` on ``n_examples`` images (and each model list cut to it) instead of ``models``."""
    models, full_aa, black_box, square_long = p.models, p.full_aa, p.black_box, p.square_long
    if p.model is not None:
        models = [[p.model, p.alpha, p.n_examples]]
        full_aa, black_box = [m for m in full_aa if m == p.model], [m for m in black_box if m == p.model]
        square_long = [m for m in square_long if m == p.model]
    return run([tuple(m) for m in models], attacks=p.attacks, full_aa=full_aa, black_box=black_box,
               square_long=square_long, data_source=p.data_source, n_train=p.n_train, eps=p.eps, n_iter=p.n_iter,
               device=p.device, seed=p.seed, use_stored=p.use_stored, results_dir=p.results_dir, **extra)


PAGE = register(Page("does_it_work", "Does MeanSparse work? Every model under every attack",
                     "Does MeanSparse work?", Params, __name__,
                     quick={"n_examples": 24, "n_train": 256, "n_iter": 5,
                            "models": [["msparse/resnet18-gelu-w8-pgdat", 0.35, 24]], "full_aa": [], "ledger": False,
                            "attacks": list(QUICK_ATTACKS)},
                     header=HEADER, runner=_run_page))
