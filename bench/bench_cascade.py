"""Benchmark the worst case as a cascade (:mod:`msparse.evaluation.cascade`) against independent runs (one run).

The robust accuracy that stands is the per-image worst case over the book's attacks (the official gradient APGD,
BPDA APGD, the surrogate APGD-CE, a transfer APGD from the base, BPDA margin PGD with 2 restarts, gradient
estimation, Square and full standard AutoAttack; :mod:`msparse.experiments.works`). Measured, per model:

(a) independent runs: every attack on every image (:func:`msparse.evaluation.evaluate.evaluate`), then the
    per-image AND of the robust flags;
(b) the cascade: the same attacks with the same budgets, ordered cheapest first by their price in passes per
    image (:func:`msparse.experiments.plan.passes`), each attacking only the images still standing.

Reported: CPU-seconds per image of each (``time.process_time`` of this process, one torch thread, so other jobs
on the machine do not enter the timings; both from the same run), their ratio, the robust counts of both worst
cases and the exact paired McNemar test between them (:func:`msparse.evaluation.significance.mcnemar`: the
cascade's robust set must not be significantly larger), and the measured fraction of images reaching each stage
(of all images, and of the clean-correct images that the first stage attacks: the fractions the cascade cost model
of :mod:`msparse.experiments.plan` weights each stage's passes by). Also the **floor**: whatever the order, every
attack must run its whole budget on the images that end robust, so no cascade of these attacks costs less than
the sum over stages of a stage's CPU time × (images robust at the end / images it attacked) - an estimate that takes
a stage's cost per attacked image as uniform (exact for APGD and FAB, which run every iteration on the whole batch;
low for Square, which stops on a broken image, so the bound on the ratio errs high), and the largest ratio any
cascade of these attacks could reach, independent / floor. ``store=False`` throughout: nothing is read
from or written to the results store, so neither side reuses the other's work.

Models as :func:`msparse.experiments.setup.setup` prepares them (placement, statistics of the first --n-train
training images, the first --n test images): msparse/default at α = 0.25 and msparse/resnet18-gelu-w8-pgdat at
α = 0.35. The budgets default to the paper's (100 iterations, 5000 queries; gradient estimation 20 steps, as the
book's works page); scale them down with the flags, and the output records the budgets used.

    python bench/bench_cascade.py                                   # full budgets (hours on a CPU)
    python bench/bench_cascade.py --n 64 --n-iter 20 --n-queries 1000 --gradest-steps 10
    python bench/bench_cascade.py --summary bench/results/cascade.json    # ratios and floors of a stored run
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from msparse.core.placement import set_alpha  # noqa: E402
from msparse.evaluation.cascade import Stage, cascade  # noqa: E402
from msparse.evaluation.evaluate import evaluate  # noqa: E402
from msparse.evaluation.significance import mcnemar  # noqa: E402
from msparse.experiments.plan import passes  # noqa: E402
from msparse.experiments.setup import setup  # noqa: E402

MODELS = (("msparse/default", 0.25), ("msparse/resnet18-gelu-w8-pgdat", 0.35))
RESULTS = Path(__file__).resolve().parent / "results"


def attacks(a) -> list[dict]:
    """The book's attack list with this run's budgets: ``{"label", "attack", "n_iter", "n_restarts", "n_queries",
    "passes"}`` (passes per attacked image, what orders the cascade)."""
    rows = [("official gradient (APGD)", "apgd", a.n_iter, 1),
            ("BPDA APGD", "bpda:apgd", a.n_iter, 1),
            ("surrogate APGD-CE", "surrogate:apgd-ce", a.n_iter, 1),
            ("transfer APGD", "transfer:apgd", a.n_iter, 1),
            ("BPDA margin PGD (2 restarts)", "bpda:pgd", a.n_iter, 2),
            ("gradient estimation", "gradest", a.gradest_steps, 1),
            ("Square", "square", a.n_iter, 1),
            ("AutoAttack (standard)", "aa", a.n_iter, 1)]
    return [{"label": lab, "attack": atk, "n_iter": it, "n_restarts": r, "n_queries": a.n_queries,
             "passes": round(r * passes(atk, it, a.n_queries), 2)} for lab, atk, it, r in rows]


def floor(m: dict) -> dict:
    """The cheapest any cascade of a model's attacks can be (see the module docstring), from one model's entry of
    this benchmark's JSON: ``{"floor_cpu_s", "ratio_bound", "ratio"}`` (the floor scales the cascade's CPU seconds
    by its stages' floor share of their recorded seconds)."""
    st = m["cascade"]["stages"]
    end = m["cascade"]["robust"]
    total = sum(s["record_wall_s"] or 0.0 for s in st)
    share = sum((s["record_wall_s"] or 0.0) * end / max(s["attacked"], 1) for s in st) / total if total else 1.0
    f = m["cascade"]["cpu_s"] * share
    return {"floor_cpu_s": round(f, 2), "ratio_bound": round(m["independent"]["cpu_s"] / f, 3) if f else None,
            "ratio": m["ratio_independent_over_cascade"]}


def summary_line(m: dict) -> str:
    """One line per model: both CPU costs per image, the ratio, the floor and the bound on the ratio, McNemar."""
    i, c, t, f = m["independent"], m["cascade"], m["mcnemar"], floor(m)
    return (f"{m['model']} alpha {m['alpha']:g}: independent {i['cpu_s_per_image']:.3f} CPU-s/image (robust "
            f"{i['robust']}), cascade {c['cpu_s_per_image']:.3f} CPU-s/image (robust {c['robust']}) -> "
            f"{f['ratio']:.2f}x cheaper; floor {f['floor_cpu_s'] / m['n']:.3f} CPU-s/image, so no order of these "
            f"attacks is more than {f['ratio_bound']:.2f}x cheaper; McNemar p = {t['p_value']:.3g} "
            f"({t['robust_only_in_cascade']} robust only in the cascade, {t['robust_only_independent']} only "
            f"independent)")


def run_model(name: str, alpha: float, a) -> dict:
    s = setup(name, n_examples=a.n, n_train=a.n_train, use_stored=False)
    model, x, y = s.model, s.x, s.y
    set_alpha(model, alpha)
    atks = attacks(a)
    common = dict(eps=a.eps, seed=a.seed, batch_size=a.batch_size, store=False)

    # (a) independent runs
    indep, flags = [], None
    t_indep = 0.0
    for at in atks:
        t0 = time.process_time()
        res = evaluate(model, x, y, at["attack"], n_iter=at["n_iter"], n_restarts=at["n_restarts"],
                       n_queries=at["n_queries"], **common)
        dt = time.process_time() - t0
        t_indep += dt
        flags = res.robust_flags if flags is None else flags & res.robust_flags
        indep.append({"attack": at["attack"], "robust": int(res.robust_flags.sum()), "cpu_s": round(dt, 2)})
        print(f"  {name} independent {at['attack']:18s} robust {indep[-1]['robust']:3d}/{len(x)} "
              f"{dt:7.1f} CPU-s", flush=True)
    clean = res.clean_flags

    # (b) the cascade, cheapest first (stable: ties keep the list order)
    order = sorted(atks, key=lambda at: at["passes"])
    stages = [Stage(at["attack"], n_iter=at["n_iter"], n_restarts=at["n_restarts"], n_queries=at["n_queries"],
                    label=at["label"]) for at in order]
    t0 = time.process_time()
    cas = cascade(model, x, y, stages, **common)
    t_cas = time.process_time() - t0
    set_alpha(model, 0.0)

    n, n_clean = len(x), int(clean.sum())
    test = mcnemar(flags, cas.flags)   # base = independent, new = cascade
    stage_rows = [{"attack": st.stage.attack, "label": st.stage.title, "passes": at["passes"], "seed": st.seed,
                   "attacked": st.attacked, "broken": st.broken, "standing": st.standing,
                   "reach_of_all": round(st.attacked / n, 4),
                   "reach_of_clean": round(st.attacked / max(cas.stages[0].attacked, 1), 4),
                   "record_wall_s": None if st.wall_s is None else round(st.wall_s, 2)}
                  for st, at in zip(cas.stages, order)]
    out = {"model": name, "alpha": alpha, "n": n, "clean": n_clean,
           "independent": {"cpu_s": round(t_indep, 2), "cpu_s_per_image": round(t_indep / n, 4),
                           "robust": int(flags.sum()), "runs": indep},
           "cascade": {"cpu_s": round(t_cas, 2), "cpu_s_per_image": round(t_cas / n, 4),
                       "robust": int(cas.flags.sum()), "stages": stage_rows},
           "ratio_independent_over_cascade": round(t_indep / t_cas, 3) if t_cas > 0 else None,
           "mcnemar": {"independent_robust": test.base, "cascade_robust": test.new,
                       "robust_only_in_cascade": test.gained, "robust_only_independent": test.lost,
                       "p_value": test.p_value},
           "cascade_not_significantly_larger": bool(test.p_value >= 0.05 or test.new <= test.base)}
    out["floor"] = floor(out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="test images per model (the first n)")
    ap.add_argument("--n-train", type=int, default=1000, help="training images of the statistics")
    ap.add_argument("--n-iter", type=int, default=100, help="iterations of the APGD/PGD attacks and AutoAttack")
    ap.add_argument("--n-queries", type=int, default=5000, help="Square's queries (alone and in AutoAttack)")
    ap.add_argument("--gradest-steps", type=int, default=20, help="gradient-estimation steps (64 queries each)")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--eps", type=float, default=8 / 255)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default=",".join(f"{m}@{al:g}" for m, al in MODELS),
                    help="comma list of model@alpha")
    ap.add_argument("--out", default=str(RESULTS / "cascade.json") if RESULTS.is_dir() else None,
                    help="JSON file of the results (default bench/results/cascade.json where bench/results exists; "
                         "else print only)")
    ap.add_argument("--summary", metavar="FILE", default=None,
                    help="print the ratios and floors of a stored run of this benchmark and exit (runs nothing)")
    a = ap.parse_args(argv)
    if a.summary:
        try:
            doc = json.loads(Path(a.summary).read_text())
            b = doc["budget"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            ap.error(f"--summary {a.summary}: not a stored run of this benchmark ({type(e).__name__}: {e}); give "
                     "the JSON it writes with --out")
        print(f"{a.summary}: n {b['n']}, {b['n_iter']} iterations, {b['n_queries']} queries, gradient estimation "
              f"{b['gradest_steps']} steps")
        for m in doc["models"]:
            print(summary_line(m))
        return 0
    torch.set_num_threads(1)
    models = [(m.rsplit("@", 1)[0], float(m.rsplit("@", 1)[1])) for m in a.models.split(",") if m]
    budget = {"n": a.n, "n_train": a.n_train, "n_iter": a.n_iter, "n_queries": a.n_queries,
              "gradest_steps": a.gradest_steps, "eps": a.eps, "seed": a.seed, "batch_size": a.batch_size,
              "scaled": (a.n_iter, a.n_queries, a.gradest_steps) != (100, 5000, 20)}
    res = {"what": "worst case over the book's attacks: independent runs vs the cascade (bench/bench_cascade.py)",
           "timing": "time.process_time of this process, 1 torch thread; ratios from one run",
           "budget": budget, "attacks": attacks(a), "models": []}
    for name, alpha in models:
        print(f"{name} at alpha {alpha:g}: n {a.n}, n_iter {a.n_iter}, {a.n_queries} queries, gradest "
              f"{a.gradest_steps} steps", flush=True)
        r = run_model(name, alpha, a)
        res["models"].append(r)
        c = r["cascade"]
        print(summary_line(r), flush=True)
        for st in c["stages"]:
            print(f"    {st['attack']:18s} attacked {st['attacked']:3d} ({st['reach_of_clean']:.2f} of the clean-"
                  f"correct) broken {st['broken']:3d} standing {st['standing']:3d}", flush=True)
    text = json.dumps(res, indent=1)
    if a.out:
        from msparse._io import atomic_write_text
        atomic_write_text(Path(a.out), text + "\n")
        print(f"wrote {a.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
