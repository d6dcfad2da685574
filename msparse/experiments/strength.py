"""Is the attack strong enough, and is α chosen honestly? The checks behind every robust accuracy of the book.

* **Convergence** (Carlini et al. 2019, §4): the page's attack with twice the iterations and with 5 restarts; a
  robust accuracy that still moves by more than its interval's half-width was not converged.
* **Attack noise**: the same attack under other seeds, on the base model (α = 0) and at α, so the size of the claimed
  gains can be set against what a different random start alone changes.
* **Binarization test** (Zimmermann et al. 2022): per image, a binary task with a planted adversarial region on the
  defended model's own features (:mod:`msparse.attacks.binarization`); the attack must find it. A pass rate well
  below 100% means the attack cannot be trusted against this defence, whatever robust accuracy it reports.
* **Held-out α**: the paper picks α on the test images it reports (Table 1 lists every α). Here α is chosen on one
  half of the images and the gain reported on the other half (both ways), beside the test-set choice; the
  difference is how much choosing on the test set inflates the gain.

    res = strength.run()
    strength.convergence_table(res); strength.seed_table(res); strength.binarization_table(res)
    strength.held_out_table(strength.held_out(rows))
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .setup import Setup, setup
from ..report.tables import p_value, signed
from .sweeps import data_label, evaluate_alphas
from .pages import HEADER, Page, param, register

__all__ = ["Strength", "run", "convergence_table", "seed_table", "seed_spread", "binarization_table", "binarization_reading", "HeldOut",
           "held_out", "held_out_table", "held_out_sweep", "convergence_sentence", "seed_sentence", "figure"]


@dataclass
class Strength:
    setup: Setup
    alpha: float
    attack: str
    n_iter: int
    convergence: dict                 # {budget label: [row at α = 0, row at α]}
    seeds: dict                       # {seed: [row at α = 0, row at α]}
    binarization: dict                # {(attack, α): record}
    note: str = ""
    rows: list = field(default_factory=list)


def run(model: str = "msparse/default", *, alpha: float = 0.25, attack: str = "apgd-ce", n_iter: int = 20,
        n_examples: int = 100, n_train: int = 1000, data_source: str = "auto", eps: float = 8 / 255,
        seeds: Sequence[int] = (0, 1, 2), n_binarization: int = 20,
        binarization_attacks: Sequence[str] = ("apgd-ce", "bpda:apgd-ce", "surrogate:apgd-ce"),
        device: str = "cpu", use_stored: bool = True, results_dir: str | None = None,
        progress: bool = True) -> Strength:
    """Convergence (``n_iter``, 2 × ``n_iter``, 5 restarts) and seeds of ``attack`` at α = 0 and ``alpha`` on the first
    ``n_examples`` test images; the binarization test of each of ``binarization_attacks`` (``n_iter`` iterations) on
    the first ``n_binarization`` images at ``alpha`` and, for the first attack, at α = 0."""
    from ..core.placement import set_alpha

    from ..evaluation.binarize import binarization_record

    s = setup(model, n_examples=n_examples, n_train=n_train, data_source=data_source, device=device,
              use_stored=use_stored, results_dir=results_dir)
    kw = dict(attack=attack, eps=eps, label="strength", progress=progress)
    budgets = {f"{n_iter} iterations, 1 restart": dict(n_iter=n_iter),
               f"{2 * n_iter} iterations, 1 restart": dict(n_iter=2 * n_iter),
               f"{n_iter} iterations, 5 restarts": dict(n_iter=n_iter, n_restarts=5)}
    conv = {label: evaluate_alphas(s, [0.0, alpha], **kw, **b) for label, b in budgets.items()}
    seed_rows = {k: evaluate_alphas(s, [0.0, alpha], seed=int(k), n_iter=n_iter, **kw) for k in seeds}
    binar = {}
    k = min(n_binarization, len(s.x))
    data = data_label(s, "test", k)
    for i, a in enumerate(binarization_attacks):
        for al in ([0.0, alpha] if i == 0 else [alpha]):
            set_alpha(s.model, al)
            try:
                binar[(a, al)] = binarization_record(s.model, s.x[:k], s.y[:k], a, eps=eps, n_iter=n_iter,
                                                     store=s.store, name=s.model_name, data=data,
                                                     tags={"book": "strength"})
            finally:
                set_alpha(s.model, 0.0)
    note = (f"{s.model_name}, **{attack}** (ε = {255 * eps:g}/255), the first {n_examples} CIFAR-10 test images; "
            f"binarization test on the first {k}.")
    rows = [r for rs in list(conv.values()) + list(seed_rows.values()) for r in rs]
    return Strength(s, alpha, attack, n_iter, conv, seed_rows, binar, note, rows)


def _half_width(r: Mapping) -> float:
    return (r["robust_hi"] - r["robust_lo"]) / 2


def convergence_table(res: Strength):
    """Robust accuracy (%) per budget at α = 0 and α, the change against the page's budget, and whether it stays
    within the 95% interval's half-width (the convergence criterion)."""
    import pandas as pd

    labels = list(res.convergence)
    ref = res.convergence[labels[0]]
    out = []
    for label in labels:
        for i, r in enumerate(res.convergence[label]):
            change = r["robust"] - ref[i]["robust"]
            out.append({"budget": label, "α": r["alpha"], "n": r["n"], "robust %": round(r["robust"], 1),
                        "change vs first budget (pp)": round(change, 1),
                        "half-width (pp)": round(_half_width(ref[i]), 1),
                        "converged": "—" if label == labels[0] else
                        ("yes" if abs(change) <= _half_width(ref[i]) else "NO")})
    return pd.DataFrame(out).set_index(["budget", "α"])


def seed_table(res: Strength):
    """Robust accuracy (%) at α = 0 and α and the gain (pp, paired) under each attack seed."""
    import pandas as pd

    out = []
    for k, (r0, r1) in res.seeds.items():
        out.append({"seed": k, "n": r0["n"], "robust α=0 %": round(r0["robust"], 1),
                    f"robust α={res.alpha:g} %": round(r1["robust"], 1),
                    "gain (pp)": signed(r1["robust"] - r0["robust"]),
                    "p (McNemar)": p_value(r1.get("p_robust"))})
    return pd.DataFrame(out).set_index("seed")


def seed_spread(res: Strength) -> tuple[float, float]:
    """(range of robust accuracy at α = 0 across seeds, range of the gain across seeds), in pp."""
    base = [r0["robust"] for r0, _ in res.seeds.values()]
    gains = [r1["robust"] - r0["robust"] for r0, r1 in res.seeds.values()]
    return max(base) - min(base), max(gains) - min(gains)


def binarization_table(res: Strength):
    """Pass rate of the binarization test per attack and α (valid samples, passed)."""
    import pandas as pd

    out = []
    for (a, al), rec in res.binarization.items():
        r = rec["result"]
        rate = f"{100 * r['pass_rate']:.0f}%" if r["valid"] else "no valid sample"
        out.append({"attack": a, "α": al, "images": r["n"], "valid": r["valid"], "passed": r["passed"],
                    "pass rate": rate})
    return pd.DataFrame(out).set_index(["attack", "α"])


def binarization_reading(res: Strength) -> str:
    """What the binarization test measures, what would indicate a failing attack, and what this run sees."""
    rates = [rec["result"]["pass_rate"] for rec in res.binarization.values() if rec["result"]["valid"]]
    if not rates:
        return ""
    seen = (f"every attack passes every valid task ({100 * min(rates):.0f}%)" if min(rates) == 1 else
            f"pass rates from {100 * min(rates):.0f}% to {100 * max(rates):.0f}%")
    return ("**Reading.** The test plants an adversarial example the attack must find on the defended model's own "
            "features; a pass rate well below 100% would mean the attack cannot find adversarial examples against "
            f"this defence even when one is known to exist. Here {seen}, the official (masked) gradient included: the "
            "planted task is linear on the features, whose gradient reaches the input through the unblocked units, "
            "so at this budget the test does not detect this defence's partial masking. A pass is therefore no "
            "certificate for the official gradient; the evidence against it is that the surrogate and BPDA attacks "
            "find lower robust accuracy on the same images (previous page).")


@dataclass
class HeldOut:
    """α chosen on one half of the images, the gain reported on the other (both folds), beside the test-set choice
    (α chosen and reported on all images)."""
    alphas: list
    test_alpha: float
    test_gain: float                  # pp, on all images at the test-set α
    folds: list                       # [{"chosen on": ..., "alpha": α*, "gain": pp on the other half, "p": ...}]

    @property
    def held_out_gain(self) -> float:
        return sum(f["gain"] for f in self.folds) / len(self.folds)

    @property
    def inflation(self) -> float:
        """How much choosing α on the test images inflates the reported gain (pp)."""
        return self.test_gain - self.held_out_gain


def _acc(flags: str, lo: int, hi: int) -> float:
    part = flags[lo:hi]
    return 100 * part.count("1") / len(part)


def held_out(rows: Sequence[Mapping]) -> HeldOut:
    """The held-out α study on the display rows of one α sweep (α = 0 included; per-image robust flags): α* maximises
    robust accuracy on one half (the smallest α on ties), the gain over α = 0 is reported on the other half."""
    from ..errors import InputError
    from ..evaluation.significance import mcnemar

    by_alpha = {float(r["alpha"]): r["robust_flags"] for r in rows}
    if 0.0 not in by_alpha or len(by_alpha) < 2:
        raise InputError("held_out needs a sweep with α = 0 and at least one α > 0")
    n = len(by_alpha[0.0])
    alphas = sorted(by_alpha)
    halves = {"first half": (0, n // 2), "second half": (n // 2, n)}

    def best(lo, hi):
        return max(alphas, key=lambda a: (_acc(by_alpha[a], lo, hi), -a))

    a_all = best(0, n)
    folds = []
    for name, (lo, hi) in halves.items():
        other = halves["second half" if name == "first half" else "first half"]
        a = best(lo, hi)
        gain = _acc(by_alpha[a], *other) - _acc(by_alpha[0.0], *other)
        pr = mcnemar([c == "1" for c in by_alpha[0.0][other[0]:other[1]]],
                     [c == "1" for c in by_alpha[a][other[0]:other[1]]])
        folds.append({"chosen on": name, "alpha": a, "reported on": other, "gain": gain, "p": pr.p_value,
                      "n": other[1] - other[0]})
    return HeldOut(alphas, a_all, _acc(by_alpha[a_all], 0, n) - _acc(by_alpha[0.0], 0, n), folds)


def held_out_table(h: HeldOut):
    """The test-set choice and the two held-out folds: α, where it was chosen and reported, the gain (pp)."""
    import pandas as pd

    out = [{"practice": "chosen on the test images (the paper's)", "α": f"{h.test_alpha:g}",
            "reported on": "all images", "gain (pp)": signed(h.test_gain), "p (McNemar)": "—"}]
    for f in h.folds:
        lo, hi = f["reported on"]
        out.append({"practice": f"held out: chosen on the {f['chosen on']}", "α": f"{f['alpha']:g}",
                    "reported on": f"images {lo}..{hi - 1}", "gain (pp)": signed(f["gain"]),
                    "p (McNemar)": p_value(f["p"])})
    out.append({"practice": "held out: mean of the two folds", "α": "—", "reported on": "",
                "gain (pp)": signed(h.held_out_gain), "p (McNemar)": "—"})
    out.append({"practice": "inflation of the test-set choice (test-set gain − held-out mean)", "α": "—",
                "reported on": "", "gain (pp)": signed(h.inflation), "p (McNemar)": "—"})
    return pd.DataFrame(out).set_index("practice")


def held_out_sweep(model: str, alphas: Sequence[float], *, attack: str, n_iter: int, n_examples: int,
                   n_train: int = 1000, data_source: str = "auto", eps: float = 8 / 255, seed: int = 0,
                   device: str = "cpu", use_stored: bool = True, results_dir: str | None = None,
                   progress: bool = True) -> tuple[HeldOut, list[dict]]:
    """:func:`held_out` on the α sweep a page already made (same model, α grid, attack, budget and images, so its
    records are reused): returns the study and the sweep's rows (for provenance)."""
    s = setup(model, n_examples=n_examples, n_train=n_train, data_source=data_source, device=device,
              use_stored=use_stored, results_dir=results_dir)
    rows = evaluate_alphas(s, list(alphas), attack=attack, eps=eps, n_iter=n_iter, seed=seed, label="strength",
                           progress=progress)
    return held_out(rows), rows


def convergence_sentence(res: Strength) -> str:
    """One sentence: did the attack converge (every change within the half-width), and if not, by how much the
    stronger budgets lower robust accuracy."""
    labels = list(res.convergence)
    ref = res.convergence[labels[0]]
    worst, where = 0.0, ""
    ok = True
    for label in labels[1:]:
        for i, r in enumerate(res.convergence[label]):
            change = r["robust"] - ref[i]["robust"]
            if abs(change) > _half_width(ref[i]):
                ok = False
            if change < worst:
                worst, where = change, f"{label} at α = {r['alpha']:g}"
    if ok:
        return (f"**Converged** at this n: no stronger budget moves robust accuracy by more than the 95% interval's "
                f"half-width (largest drop {worst:+.1f} pp{', ' + where if where else ''}).")
    return (f"**Not converged**: {where} lowers robust accuracy by {-worst:.1f} pp, more than the interval's "
            "half-width; the page's numbers at the first budget are upper bounds that a stronger attack lowers.")


def seed_sentence(res: Strength) -> str:
    """One sentence setting the gain against the spread across attack seeds."""
    if len(res.seeds) < 2:
        return ""
    base, gain = seed_spread(res)
    g0 = [r1["robust"] - r0["robust"] for r0, r1 in res.seeds.values()]
    return (f"Across {len(res.seeds)} attack seeds the base model's robust accuracy varies by {base:.1f} pp and the "
            f"gain at α = {res.alpha:g} by {gain:.1f} pp (gains {', '.join(f'{g:+.1f}' for g in g0)} pp): "
            + ("a different random start alone changes the gain by as much as the gain itself."
               if gain >= min(abs(g) for g in g0) else "the gain is larger than what the seed alone changes."))


def figure(res: Strength):
    """Robust accuracy (%, 95% Wilson intervals) of the page's attack at each budget, at α = 0 and α."""
    from ..report import plots

    labels = list(res.convergence)
    alphas = [r["alpha"] for r in res.convergence[labels[0]]]
    return plots.bars(labels, {f"α = {a:g}": [res.convergence[b][i]["robust"] for b in labels]
                               for i, a in enumerate(alphas)},
                      errors={f"α = {a:g}": [(res.convergence[b][i]["robust_lo"], res.convergence[b][i]["robust_hi"])
                                              for b in labels] for i, a in enumerate(alphas)},
                      title=f"{res.setup.model_name}: {res.attack} robust accuracy by budget (95% Wilson intervals)")


# ================================================================================================
# the page (msparse.experiments.pages)
# ================================================================================================
@dataclass
class Params:
    """The parameters of the page ``attack_strength`` in the order of its notebook's parameters cell, which is
    rendered from them (:func:`msparse.experiments.pages.render_parameters`)."""
    checks: list = param([["msparse/default", 0.25, "apgd-ce", 20, 100, [0, 1, 2]],
                         ["msparse/resnet18-gelu-w8-pgdat", 0.35, "apgd-ce", 50, 200, [0, 1, 2]]],
                         "[model, alpha, attack, iterations, test images, attack seeds]")
    n_binarization: int = param(20, "images for the binarization test")
    binarization_attacks: list = param(["apgd-ce", "bpda:apgd-ce", "surrogate:apgd-ce"])
    sweeps: list = param([["msparse/default", [0.0, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5], "apgd-ce", 20, 100],
                         ["msparse/resnet18-gelu-w8-pgdat", [0.0, 0.1, 0.2, 0.3, 0.35, 0.4], "apgd", 50, 500],
                         ["msparse/resnet18-relu-w8-pgdat", [0.0, 0.1, 0.2, 0.3, 0.35, 0.4], "apgd", 50, 500]],
                         "the pages' alpha sweeps: [model, alphas, attack, iterations, test images]")
    model: str | None = param(None,
                              "a load_model name: check this one model (apgd-ce at alpha, n_iter, n_examples) instead "
                              "of checks")
    alpha: float = param(0.35, "with model")
    n_iter: int = param(20, "with model")
    n_examples: int = param(100, "with model: test images")
    seed: int = param(0, "with model: the attack seed (checks list their own seeds)")
    dataset: str = param("cifar10")
    data_source: str = param("auto", "auto | offline | official")
    n_train: int = param(1000, "training images for mu, sigma")
    eps: float = param(8 / 255, expr="8 / 255")
    device: str = param("cpu", "cpu | cuda | auto")
    use_stored: bool = param(True, "reuse stored result records")
    results_dir: str | None = param(None, "None means $MSPARSE_RESULTS or results/")


def _run_page(p, **extra) -> tuple[list, list]:
    """The page's checks and held-out α sweeps with the page's parameters, as its notebook runs them: ``(results,
    studies)``, one :func:`run` per check and ``(model, *held_out_sweep(...))`` per sweep; with ``model`` set, that
    one model's check (apgd-ce at ``alpha``, ``n_iter``, ``n_examples``, ``seed``) and no sweep."""
    checks, sweeps = p.checks, p.sweeps
    if p.model is not None:
        checks, sweeps = [[p.model, p.alpha, "apgd-ce", p.n_iter, p.n_examples, [p.seed]]], []
    common = dict(n_train=p.n_train, data_source=p.data_source, eps=p.eps, device=p.device, use_stored=p.use_stored,
                  results_dir=p.results_dir, **extra)
    results = [run(m, alpha=a, attack=atk, n_iter=it, n_examples=n, seeds=seeds, n_binarization=p.n_binarization,
                   binarization_attacks=p.binarization_attacks, **common) for m, a, atk, it, n, seeds in checks]
    studies = [(m, *held_out_sweep(m, alphas, attack=atk, n_iter=it, n_examples=n, **common))
               for m, alphas, atk, it, n in sweeps]
    return results, studies


PAGE = register(Page("attack_strength", "Is the attack strong enough? Is α chosen honestly?",
                     "Does MeanSparse work?", Params, __name__,
                     quick={"n_examples": 24, "n_train": 256, "n_iter": 5,
                            "checks": [["msparse/resnet18-gelu-w8-pgdat", 0.35, "apgd-ce", 5, 24, [0, 1]]],
                            "n_binarization": 2,
                            "sweeps": [["msparse/resnet18-gelu-w8-pgdat", [0.0, 0.35], "apgd-ce", 5, 24]]},
                     header=HEADER, runner=_run_page))
