"""Is the attack strong enough, and is α chosen honestly? The checks behind every robust accuracy of the book.

* **Convergence** (Carlini et al. 2019, §4): the page's attack with twice the iterations and with 5 restarts; a
  robust accuracy that still moves by more than its interval's half-width was not converged.
* **BPDA convergence over loss and budget** (Tramèr et al. 2020, "On adaptive attacks to adversarial example
  defenses"; Carlini et al. 2019, §4): the identity backward (``bpda:``) with the book's attack and with PGD on the
  cross-entropy and on the margin loss (:mod:`msparse.attacks.pgd_margin`) at a grid of (iterations, restarts), at
  α = 0 and at α on the same images (a defence and its base get the same strength). Each budget is set against the
  largest weaker budget of the grid (exact McNemar on the same images); the attack has converged when the last
  doublings (of iterations or of restarts) no longer lower robust accuracy, neither by more than the interval's
  half-width nor significantly.
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
    res = strength.run(bpda_attacks=["pgd[loss=ce]", "pgd"])
    strength.bpda_table(res.bpda); strength.bpda_sentence(res.bpda)
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
           "held_out", "held_out_table", "held_out_sweep", "convergence_sentence", "seed_sentence", "figure",
           "BpdaGrid", "BPDA_BUDGETS", "check_bpda_budgets", "bpda_convergence", "bpda_steps", "bpda_strongest",
           "bpda_table", "bpda_sentence"]


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
    bpda: "BpdaGrid | None" = None    # the BPDA loss × budget grid, where run was asked for one


def run(model: str = "msparse/default", *, alpha: float = 0.25, attack: str = "apgd-ce", n_iter: int = 20,
        n_examples: int = 100, n_train: int = 1000, data_source: str = "auto", eps: float = 8 / 255,
        seeds: Sequence[int] = (0, 1, 2), n_binarization: int = 20,
        binarization_attacks: Sequence[str] = ("apgd-ce", "bpda:apgd-ce", "surrogate:apgd-ce"),
        bpda_attacks: Sequence[str] = (), bpda_budgets: Sequence[Sequence[int]] = (),
        device: str = "cpu", use_stored: bool = True, results_dir: str | None = None,
        progress: bool = True) -> Strength:
    """Convergence (``n_iter``, 2 × ``n_iter``, 5 restarts) and seeds of ``attack`` at α = 0 and ``alpha`` on the first
    ``n_examples`` test images; the binarization test of each of ``binarization_attacks`` (``n_iter`` iterations) on
    the first ``n_binarization`` images at ``alpha`` and, for the first attack, at α = 0. With ``bpda_attacks``
    (e.g. ``["pgd[loss=ce]", "pgd"]``), also :func:`bpda_convergence` on the same images: ``bpda:<attack>`` at
    ``n_iter`` beside each of ``bpda_attacks`` at every ``[iterations, restarts]`` of ``bpda_budgets`` (default
    :data:`BPDA_BUDGETS`)."""
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
    grid = None
    if bpda_attacks:
        grid = bpda_convergence(s, alpha, reference=attack, reference_iter=n_iter, attacks=bpda_attacks,
                                budgets=bpda_budgets or BPDA_BUDGETS, eps=eps, progress=progress)
        rows += grid.rows
    return Strength(s, alpha, attack, n_iter, conv, seed_rows, binar, note, rows, grid)


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


# ------------------------------------------------------------------------------------------------
# BPDA convergence over loss and budget
# ------------------------------------------------------------------------------------------------
#: the BPDA grid's default budgets, (iterations, restarts): 5× the book's 20 iterations, then each doubled
BPDA_BUDGETS = ((20, 1), (100, 1), (100, 2), (200, 2), (100, 4))


@dataclass
class BpdaGrid:
    """BPDA robust accuracy of one model on the same images at α = 0 and ``alpha`` under each (attack, budget):
    ``runs[(attack, n_iter, n_restarts)] = [row at α = 0, row at α]`` (display rows of
    :func:`~msparse.experiments.sweeps.evaluate_alphas`, attack without its ``bpda:`` prefix), the book's attack
    (``reference``) first."""
    model: str
    alpha: float
    reference: tuple
    runs: dict

    @property
    def rows(self) -> list:
        return [r for rs in self.runs.values() for r in rs]

    @property
    def alphas(self) -> list:
        return [0.0, self.alpha]


def check_bpda_budgets(budgets) -> list[tuple[int, int]]:
    """``budgets`` as ``[(iterations, restarts), ...]``; :class:`~msparse.errors.InputError` for anything but a
    non-empty list of distinct pairs of integers >= 1."""
    from ..errors import InputError

    out = []
    for b in budgets:
        if (not isinstance(b, (list, tuple)) or len(b) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in b)):
            raise InputError(f"a BPDA budget is [iterations, restarts], two integers >= 1; got {b!r} "
                             "(e.g. bpda_budgets=[[20, 1], [100, 1], [100, 2]])")
        if tuple(b) in out:
            raise InputError(f"BPDA budget {list(b)} is listed twice; list each [iterations, restarts] once")
        out.append(tuple(b))
    if not out:
        raise InputError("bpda_budgets is empty; give at least one [iterations, restarts]")
    return out


def bpda_convergence(s: Setup, alpha: float, *, reference: str = "apgd-ce", reference_iter: int = 20,
                     attacks: Sequence[str] = ("pgd[loss=ce]", "pgd"), budgets: Sequence = BPDA_BUDGETS,
                     eps: float = 8 / 255, seed: int = 0, progress: bool = True) -> BpdaGrid:
    """``bpda:<reference>`` at ``reference_iter`` iterations (the book's BPDA) and ``bpda:<attack>`` for each of
    ``attacks`` at each ``(iterations, restarts)`` of ``budgets``, at α = 0 and ``alpha`` on the setup's images,
    through :func:`~msparse.experiments.sweeps.evaluate_alphas` (records stored and reused; at α = 0 ``bpda:`` is
    the direct attack and shares its record)."""
    from ..attacks.base import parse_attack
    from ..errors import InputError

    if not float(alpha) > 0:
        raise InputError(f"the BPDA grid compares α = 0 with an α > 0; got alpha={alpha}")
    grid = check_bpda_budgets(budgets)

    def canonical(a: str) -> str:      # "pgd[loss=margin]" is "pgd": one key per attack in the grid
        parts = parse_attack(f"bpda:{a}")
        if len(parts) != 1:
            raise InputError(f"the BPDA grid runs one attack per entry; {a!r} has {len(parts)} components")
        return parts[0].name[len("bpda:"):]

    reference, attacks = canonical(reference), [canonical(a) for a in attacks]
    kw = dict(eps=eps, seed=seed, label="strength", progress=progress)
    runs = {(reference, int(reference_iter), 1): evaluate_alphas(s, [0.0, alpha], attack=f"bpda:{reference}",
                                                                 n_iter=int(reference_iter), **kw)}
    for a in attacks:
        for it, r in grid:
            if (a, it, r) not in runs:
                runs[(a, it, r)] = evaluate_alphas(s, [0.0, alpha], attack=f"bpda:{a}", n_iter=it, n_restarts=r,
                                                   **kw)
    return BpdaGrid(s.model_name, float(alpha), (reference, int(reference_iter), 1), runs)


def _budget(it: int, r: int) -> str:
    return f"{it} × {r}"


def _attack_label(attack: str) -> str:
    """``bpda:<attack>``, with the loss named where the attack declares one and the name leaves it at its default
    (``bpda:pgd (margin loss)``, ``bpda:pgd[loss=ce]``)."""
    from ..attacks.base import parse_attack
    from ..attacks.registry import get_attack
    from ..errors import UnknownNameError

    name = f"bpda:{attack}"
    a = parse_attack(name)[0]
    try:
        loss = None if "loss" in dict(a.params) else get_attack(a.preset).params.get("loss")
    except UnknownNameError:          # a sequence (apgd-ce+t, aa), not one registered attack: the name alone
        loss = None
    return f"{name} ({loss} loss)" if loss else name


def _weaker(runs: Mapping, key: tuple) -> tuple | None:
    """The largest budget of the same attack that ``key``'s budget dominates (no more iterations, no more restarts;
    the most iterations × restarts, then the most iterations), or None."""
    a, it, r = key
    below = [k for k in runs if k[0] == a and k != key and k[1] <= it and k[2] <= r]
    return max(below, key=lambda k: (k[1] * k[2], k[1])) if below else None


def _flags(row: Mapping) -> list[bool]:
    return [c == "1" for c in row["robust_flags"]]


def bpda_steps(grid: BpdaGrid) -> list[dict]:
    """Each budget of the grid against the largest weaker budget of the same attack, at α = 0 and α: ``attack``,
    ``budget`` and ``weaker`` ((iterations, restarts)), ``alpha``, ``change`` (pp), ``broken`` (images only the
    stronger budget breaks), ``kept`` (images only the weaker one breaks), ``p`` (exact McNemar), ``half_width``
    (pp, of the weaker budget's 95% interval), ``lowers`` (the change is a drop larger than the half-width or
    significant at :data:`~msparse.evaluation.significance.ALPHA_TEST`) and ``final`` (no budget of the grid
    dominates this one: the step is one of the last doublings)."""
    from ..evaluation.significance import ALPHA_TEST, mcnemar

    out = []
    for key in grid.runs:
        w = _weaker(grid.runs, key)
        if w is None:
            continue
        final = not any(k[0] == key[0] and k != key and k[1] >= key[1] and k[2] >= key[2] for k in grid.runs)
        for i, al in enumerate(grid.alphas):
            weak, strong = grid.runs[w][i], grid.runs[key][i]
            pr = mcnemar(_flags(weak), _flags(strong))
            change = 100 * pr.delta
            hw = _half_width(weak)
            out.append({"attack": key[0], "budget": key[1:], "weaker": w[1:], "alpha": al, "change": change,
                        "broken": pr.lost, "kept": pr.gained, "p": pr.p_value, "half_width": hw,
                        "lowers": change < 0 and (-change > hw or pr.p_value < ALPHA_TEST), "final": final})
    return out


def bpda_strongest(grid: BpdaGrid, i: int) -> tuple:
    """The (attack, iterations, restarts) with the lowest robust accuracy at ``grid.alphas[i]`` (on ties the
    cheapest, then the first listed)."""
    keys = list(grid.runs)
    return min(keys, key=lambda k: (grid.runs[k][i]["robust"], k[1] * k[2], keys.index(k)))


def _worst(grid: BpdaGrid, i: int) -> list[bool]:
    """Per image: robust under every run of the grid at ``grid.alphas[i]``."""
    return [all(fs) for fs in zip(*(_flags(rs[i]) for rs in grid.runs.values()))]


def _count(flags: Sequence[bool]) -> str:
    return f"{sum(flags)}/{len(flags)}"


def _cell(flags: Sequence[bool]) -> str:
    """Robust accuracy in % (as the provenance table's records state it) and the count, e.g. ``39.0 (39/100)``."""
    return f"{100 * sum(flags) / len(flags):.1f} ({_count(flags)})"


def bpda_table(grid: BpdaGrid):
    """Robust accuracy (%, and images of n) per attack and budget (iterations × restarts) at α = 0 and α; the change
    against the largest weaker budget of the same attack (pp, exact McNemar p on the same images) and whether it still
    lowers robust accuracy (a drop beyond the weaker budget's interval half-width, or a significant one); the gain at α
    under that same attack and budget (pp, McNemar). The last row pools every run image by image (an image counts
    only if it survives all of them)."""
    import pandas as pd

    from ..evaluation.significance import mcnemar

    steps = {(st["attack"], st["budget"], st["alpha"]): st for st in bpda_steps(grid)}
    a0, a1 = grid.alphas
    out = []

    def gain_cols(f0, f1):
        pr = mcnemar(f0, f1)
        return {f"gain at α={a1:g} (pp)": signed(100 * pr.delta), "p (gain)": p_value(pr.p_value)}

    for key, (r0, r1) in grid.runs.items():
        row = {"attack": _attack_label(key[0]) + (" — the book's" if key == grid.reference else ""),
               "iterations × restarts": _budget(*key[1:])}
        w = _weaker(grid.runs, key)
        row["vs"] = _budget(*w[1:]) if w else "—"
        lowers = []
        for al, r in ((a0, r0), (a1, r1)):
            st = steps.get((key[0], key[1:], al))
            row[f"robust α={al:g} % (images)"] = _cell(_flags(r))
            row[f"Δ α={al:g} (pp)"] = signed(st["change"]) if st else "—"
            row[f"p α={al:g}"] = p_value(st["p"]) if st else "—"
            if st and st["lowers"]:
                lowers.append(f"α = {al:g}")
        row["still lowers"] = ", ".join(lowers) if lowers else ("no" if w else "—")
        row.update(gain_cols(_flags(r0), _flags(r1)))
        out.append(row)
    f0, f1 = _worst(grid, 0), _worst(grid, 1)
    out.append({"attack": "every run above, per image", "iterations × restarts": "—", "vs": "—",
                f"robust α={a0:g} % (images)": _cell(f0), f"Δ α={a0:g} (pp)": "—", f"p α={a0:g}": "—",
                f"robust α={a1:g} % (images)": _cell(f1), f"Δ α={a1:g} (pp)": "—", f"p α={a1:g}": "—",
                "still lowers": "—",
                **gain_cols(f0, f1)})
    return pd.DataFrame(out).set_index(["attack", "iterations × restarts"])


def _convergence_clause(grid: BpdaGrid, key: tuple, i: int, steps: list[dict]) -> str:
    """How the last doublings of ``key``'s attack move robust accuracy at ``grid.alphas[i]``, and the verdict."""
    al = grid.alphas[i]
    last = [st for st in steps if st["attack"] == key[0] and st["final"] and st["alpha"] == al]
    if not last:
        return (f"the grid has no stronger budget of {_attack_label(key[0])} to check it against: **convergence "
                "not measured**")

    def what(st):
        (wi, wr), (bi, br) = st["weaker"], st["budget"]
        kind = ("iterations" if br == wr else "restarts" if bi == wi else "iterations and restarts")
        return (f"more {kind} ({_budget(wi, wr)} → {_budget(bi, br)}) change it by {signed(st['change'])} pp "
                f"({st['broken']} images broken only by the stronger budget, {st['kept']} only by the weaker; "
                f"McNemar p = {p_value(st['p'])})")

    moved = [st for st in last if st["lowers"]]
    hw = max(st["half_width"] for st in last)
    text = "; ".join(what(st) for st in last)
    if not moved:
        return (f"{text}: within the interval's half-width ({hw:.1f} pp) and not significant, so **converged** at "
                "this n")
    return (f"{text}: **not converged**, the last doubling still lowers robust accuracy "
            f"({', '.join(_budget(*st['budget']) for st in moved)}), so its number is an upper bound that a "
            "stronger budget may lower further")


def bpda_sentence(grid: BpdaGrid) -> str:
    """What the grid measured, at α and at α = 0: the strongest (attack, budget), its robust accuracy beside the
    book's BPDA, whether the last doublings of its iterations or restarts still lower it (half-width and exact
    McNemar), and the gain at α under that attack and under every run pooled per image."""
    from ..evaluation.significance import mcnemar

    steps = bpda_steps(grid)
    n = len(_flags(next(iter(grid.runs.values()))[0]))
    parts = []
    for i in (1, 0):
        al = grid.alphas[i]
        key = bpda_strongest(grid, i)
        ref = grid.runs[grid.reference][i]
        where = "the defence" if i == 1 else "the base"
        parts.append(
            f"At α = {al:g} ({where}) the strongest run of this grid is **{_attack_label(key[0])} at "
            f"{_budget(*key[1:])}** "
            f"(iterations × restarts): {_count(_flags(grid.runs[key][i]))} images robust, against "
            f"{_count(_flags(ref))} under the book's {_attack_label(grid.reference[0])} ({grid.reference[1]} "
            f"iterations); {_convergence_clause(grid, key, i, steps)}.")
    key = bpda_strongest(grid, 1)
    pr = mcnemar(_flags(grid.runs[key][0]), _flags(grid.runs[key][1]))
    pw = mcnemar(_worst(grid, 0), _worst(grid, 1))
    parts.append(
        f"Under that same attack at both α (the same strength for the defence and its base), α = {grid.alpha:g} "
        f"changes robust accuracy by {signed(100 * pr.delta)} pp (McNemar p = {p_value(pr.p_value)}, n = {n}); "
        f"with every run pooled image by image ({_count(_worst(grid, 0))} robust at α = 0, "
        f"{_count(_worst(grid, 1))} at α = {grid.alpha:g}), by {signed(100 * pw.delta)} pp "
        f"(p = {p_value(pw.p_value)}).")
    return " ".join(parts)


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
    bpda_models: list = param(["msparse/default"],
                              "checks of these models also get the BPDA loss x budget grid (same alpha and images)")
    bpda_losses: list = param(["ce", "margin"], "the grid's attacks: PGD with each of these losses, through BPDA")
    bpda_budgets: list = param([list(b) for b in BPDA_BUDGETS], "the grid's [iterations, restarts]")
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
    one model's check (apgd-ce at ``alpha``, ``n_iter``, ``n_examples``, ``seed``) and no sweep. Checks of a model in
    ``bpda_models`` also run the BPDA grid (PGD with each of ``bpda_losses`` × ``bpda_budgets``,
    :func:`bpda_convergence`)."""
    checks, sweeps = p.checks, p.sweeps
    if p.model is not None:
        checks, sweeps = [[p.model, p.alpha, "apgd-ce", p.n_iter, p.n_examples, [p.seed]]], []
    common = dict(n_train=p.n_train, data_source=p.data_source, eps=p.eps, device=p.device, use_stored=p.use_stored,
                  results_dir=p.results_dir, **extra)
    results = [run(m, alpha=a, attack=atk, n_iter=it, n_examples=n, seeds=seeds, n_binarization=p.n_binarization,
                   binarization_attacks=p.binarization_attacks,
                   bpda_attacks=[f"pgd[loss={loss}]" for loss in p.bpda_losses] if m in p.bpda_models else (),
                   bpda_budgets=p.bpda_budgets, **common)
               for m, a, atk, it, n, seeds in checks]
    studies = [(m, *held_out_sweep(m, alphas, attack=atk, n_iter=it, n_examples=n, **common))
               for m, alphas, atk, it, n in sweeps]
    return results, studies


PAGE = register(Page("attack_strength", "Is the attack strong enough? Is α chosen honestly?",
                     "Does MeanSparse work?", Params, __name__,
                     quick={"n_examples": 24, "n_train": 256, "n_iter": 5,
                            "checks": [["msparse/resnet18-gelu-w8-pgdat", 0.35, "apgd-ce", 5, 24, [0, 1]]],
                            "n_binarization": 2, "bpda_models": ["msparse/resnet18-gelu-w8-pgdat"],
                            "bpda_budgets": [[5, 1], [10, 1], [10, 2]],
                            "sweeps": [["msparse/resnet18-gelu-w8-pgdat", [0.0, 0.35], "apgd-ce", 5, 24]]},
                     header=HEADER, runner=_run_page))
