"""The paper at full scale, as a plan: every record the paper's tables need, with an estimate of its cost.

:func:`paper_plan` lists, per paper item (Table 1, Fig. 3, the adaptive chapter, appendix Tables 2-8), the
model, attack, ε and α grid the paper uses, on its full test set (10,000 CIFAR images; 5,000 ImageNet images,
RobustBench's set), with 100 attack iterations. :func:`estimate` gives GPU-hours per item; :func:`run_plan`
computes the items the book can show by calling the book's own experiment functions (so the records carry the
very keys the pages look up: a page run with the same parameters finds them stored) on a cluster.

    python -m msparse plan paper                         # the list and the estimate
    python -m msparse plan paper --run --cluster tcp://scheduler:8786 --models Peng2023Robust

The RobustBench checkpoints must already be in the model folder (``models/<dataset>/<threat>/<name>.pt``);
nothing is downloaded. Items on ImageNet, CIFAR-100 or L2 models are listed (the paper has them) but not run:
the book's pages are CIFAR-10 L∞.

**The estimate is an estimate.** Cost = images × passes × forward FLOPs × 3 (a forward+backward pass costs
about three forwards) / sustained GPU throughput. Forward FLOPs were measured here with
``torch.utils.flop_counter`` on each random-weight architecture (:data:`GFLOPS`); the passes per image come
from the attack's budget (:func:`passes`: APGD-CE 100 iterations = 100 passes; AutoAttack's later attacks
only see the images still robust, :data:`ROBUST_FRACTION`); the GPU throughput is an assumption
(:data:`GPU_TFLOPS`, about a third of an A100's TF32 peak), not a measurement. On this machine's CPU the same
model is checked against a measured forward+backward time (:func:`measure_cost`).

**The same plan as cascades** (:func:`estimate_cascade`, beside :func:`estimate`). Where several items attack the
same model, images and ε at the same α, the robust accuracy that stands there is their per-image worst case, and it
can be computed as a cascade (:mod:`msparse.evaluation.cascade`): the attacks cheapest first (by :func:`passes`),
each on the images still standing only. Stage k then costs its passes × the share of images that reach it,
:data:`CASCADE_REACH` (measured by ``bench/bench_cascade.py``; :func:`reach_from_bench` reads another run's JSON);
a point with a single attack (the appendix grids) costs what it does today. A cascade gives the worst case, not
each attack's own robust accuracy (a stage that skipped images is not read as a per-attack number), so the
cascade estimate is the cost of the plan's worst-case points, the independent estimate that of every per-attack
column. It errs low: the passes model prices an independent run as if every attack spent its whole budget on every
image, but Square, gradient estimation and AutoAttack's later attacks already stop on an image once it is broken,
so skipping the broken images saves less than the reach suggests. On the benchmark's own cascade (8 attacks,
bench/results/cascade.json) the model predicts 2.0× (msparse/default) and 2.3× (the GELU family member) fewer
passes; measured CPU time fell 1.32× and 1.51×, against a floor (every attack's whole budget on the images that
end robust, which no order avoids) that caps these attack lists at 1.39× and 1.59× (``bench/bench_cascade.py
--summary``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Sequence

from ..errors import InputError

__all__ = ["Item", "paper_plan", "passes", "estimate", "estimate_cascade", "cascade_stages", "reach_from_bench",
           "estimate_here", "measure_cost", "run_plan", "stored_counts", "GFLOPS", "GPU_TFLOPS", "ROBUST_FRACTION",
           "CASCADE_REACH", "CASCADE_REACH_SOURCE", "PAGES"]

#: forward GFLOPs per image (2 × multiply-adds), measured with torch.utils.flop_counter.FlopCounterMode on the
#: random-weight architectures (batch 1; CIFAR 32×32, ImageNet 224×224), 2026-11-29
GFLOPS = {
    "Peng2023Robust/cifar10": 120.94,                       # RaWRN-70-16, 267 M parameters
    "Wang2023Better_WRN-70-16/cifar10": 77.53,              # WRN-70-16, 267 M
    "Wang2023Better_WRN-70-16/cifar100": 77.53,
    "Bartoldson2024Adversarial_WRN-94-16/cifar10": 106.52,  # WRN-94-16, 366 M
    "Liu2023Comprehensive_ConvNeXt-L/imagenet": 68.72,      # 198 M
    "Peng2023Robust/imagenet": 51.01,                       # RaWRN-101-2, 104 M
    "Liu2023Comprehensive_Swin-L/imagenet": 68.95,          # 197 M
    "resnet18-w64": 1.111,                                  # the paper's appendix ResNet-18 (full width)
    "resnet18-w8": 0.01775,                                 # this project's family (width 8), what the book runs
}
#: assumed sustained GPU throughput (TFLOP/s) of these fp32 (TF32) evaluations: an assumption, not measured here
GPU_TFLOPS = 50.0
#: share of the images still robust after the first attack of a chain (AutoAttack attacks only those)
ROBUST_FRACTION = 0.75
#: share of the clean-correct images reaching stage k (k = 1, 2, ...) of a cascade, cheapest attack first (the
#: first stage attacks them all; a stage past the end gets the last value): measured by bench/bench_cascade.py on
#: msparse/default at α = 0.25, 64 test images, scaled budgets (bench/results/cascade.json, reach_of_clean; 27, 24,
#: 24, 24, 21, 21, 21 of 44). Cross-check at full budget: the committed cascade stage of msparse/default at α = 0.25
#: on 1000 images (BPDA margin PGD after APGD-CE with 100 iterations, spec "skip") attacked 348 of the 695
#: clean-correct images, 0.50 at stage 2, against 0.61 here after 20 iterations
CASCADE_REACH: tuple[float, ...] = (1.0, 0.6136, 0.5455, 0.5455, 0.5455, 0.4773, 0.4773, 0.4773)
#: where CASCADE_REACH comes from (printed with the estimate)
CASCADE_REACH_SOURCE = ("bench/results/cascade.json: msparse/default at α = 0.25, n = 64, 20 iterations, 1000 "
                        "queries, gradient estimation 10 steps (apgd → bpda:apgd → transfer:apgd → bpda:pgd → "
                        "surrogate:apgd-ce → gradest → square → aa)")
#: images of a full evaluation per dataset (the paper: CIFAR test set; RobustBench's ImageNet subset)
FULL_N = {"cifar10": 10_000, "cifar100": 10_000, "imagenet": 5_000}

ALPHAS_T1 = (0.0, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50)
ALPHAS_APP = (0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40)
FAMILY = "msparse/resnet18-gelu-w8-pgdat"
ACTIVATION_MODELS = tuple(f"msparse/resnet18-{a}-w8-pgdat" for a in ("relu", "elu", "gelu", "silu", "psilu", "pssilu"))


@dataclass(frozen=True)
class Item:
    """One paper item on one model: ``len(alphas) × variants`` records (variants: splits, site subsets, centres,
    ε values, models of one page), each on ``n`` images. ``in_book``: the book can show it (CIFAR-10 L∞)."""
    page: str
    model: str
    dataset: str
    attack: str
    eps: float
    alphas: tuple
    variants: int = 1
    what: str = ""
    arch: str = ""
    in_book: bool = True
    n: int = 10_000
    alpha: float | None = None    # the paper's α for the model (Fig. 3, adaptive)

    @property
    def records(self) -> int:
        return len(self.alphas) * self.variants


def _plan_pages() -> dict:
    """``{plan key: registered page}`` of every page with a plan key (:mod:`msparse.experiments.pages`)."""
    from .pages import pages

    return {p.plan_key: p for p in pages() if p.plan_key is not None}


def __getattr__(name: str):
    """``PAGES``: ``{plan key: experiment module}`` of the book's pages that show plan items (``"table1"``:
    ``"table1"``, ``"fig3"``: ``"headline"``, ...), read from the page registry at each access."""
    if name == "PAGES":
        return {k: p.module.rsplit(".", 1)[-1] for k, p in _plan_pages().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def paper_plan(n: int | None = None, *, models: Sequence[str] | None = None,
               pages: Sequence[str] | None = None) -> list[Item]:
    """Every item the paper's tables need (see the module docstring), optionally only ``models`` / ``pages``.
    ``n``: images per evaluation (default: the full test set of each dataset)."""
    from ..report.paper import PAPER_ALPHA

    if n is not None:
        _check_positive("n", n, integer=True)
    main = [  # (model, dataset, arch, alpha, name in PAPER_ALPHA)
        ("Peng2023Robust", "cifar10", "Peng2023Robust/cifar10", PAPER_ALPHA["RaWRN-70-16"]),
        ("Wang2023Better_WRN-70-16", "cifar10", "Wang2023Better_WRN-70-16/cifar10", PAPER_ALPHA["WRN-70-16"]),
    ]
    imagenet = [("Liu2023Comprehensive_ConvNeXt-L", "imagenet", "Liu2023Comprehensive_ConvNeXt-L/imagenet",
                 PAPER_ALPHA["ConvNeXt-L"]),
                ("Peng2023Robust", "imagenet", "Peng2023Robust/imagenet", PAPER_ALPHA["RaWRN-101-2"])]
    v2_only = [("Bartoldson2024Adversarial_WRN-94-16", "cifar10", "Bartoldson2024Adversarial_WRN-94-16/cifar10",
                PAPER_ALPHA["WRN-94-16"], True),
               ("Liu2023Comprehensive_Swin-L", "imagenet", "Liu2023Comprehensive_Swin-L/imagenet",
                PAPER_ALPHA["Swin-L"], False),
               ("Wang2023Better_WRN-70-16", "cifar100", "Wang2023Better_WRN-70-16/cifar100", 0.15, False)]
    e8, e4 = 8 / 255, 4 / 255
    items: list[Item] = []
    for m, ds, arch, a in main:
        items += [Item("table1", m, ds, "apgd-ce", e8, ALPHAS_T1, 2, "test and training images", arch),
                  Item("fig3", m, ds, "aa", e8, (0.0, a), 1, "standard AutoAttack, base vs the paper's α", arch, alpha=a),
                  Item("fig3", m, ds, "bpda", e8, (0.0, a), 1, "BPDA (APGD-CE+T through an identity backward)", arch,
                       alpha=a),
                  Item("adaptive", m, ds, "apgd-ce+t", e8, (0.0, a), 1, "the direct attack of the adaptive page", arch,
                       alpha=a),
                  Item("adaptive", m, ds, "transfer", e8, (a,), 1, "transfer from the base model", arch, alpha=a)]
    for m, ds, arch, a in imagenet:
        items += [Item("table1", m, ds, "apgd-ce", e4, ALPHAS_T1, 1, "test images (ImageNet)", arch, False),
                  Item("fig3", m, ds, "aa", e4, (0.0, a), 1, "standard AutoAttack", arch, False, alpha=a),
                  Item("adaptive", m, ds, "bpda", e4, (a,), 1, "BPDA", arch, False, alpha=a)]
    for m, ds, arch, a, book in v2_only:
        eps = e4 if ds == "imagenet" else e8
        items += [Item("fig3", m, ds, "aa", eps, (0.0, a), 1, "standard AutoAttack (v2 README)", arch, book, alpha=a),
                  Item("adaptive", m, ds, "bpda", eps, (a,), 1, "BPDA (RobustBench's external evaluation)", arch, book,
                       alpha=a)]
    items.append(Item("fig3", "Wang2023Better_WRN-70-16", "cifar10", "aa", 0.5, (0.0, 0.25), 1,
                      "standard AutoAttack, L2 ε = 0.5 (v2 README)", "Wang2023Better_WRN-70-16/cifar10", False,
                      alpha=0.25))
    arch = "resnet18-w8"
    for am in ACTIVATION_MODELS:
        items.append(Item("table2", am, "cifar10", "apgd", e8, ALPHAS_APP, 1, "APGD (CE then DLR) per activation",
                          arch))
    items += [
        Item("table3", FAMILY, "cifar10", "apgd", e8, ALPHAS_APP, 2, "L∞ 8/255 and L2 128/255", arch),
        Item("table4", FAMILY, "cifar10", "apgd", e8, ALPHAS_APP, 3, "PGD-AT, TRADES, ANCRA models", arch),
        Item("table5", FAMILY, "cifar10", "apgd", e8, ALPHAS_APP, 3, "centres zero, global, mean", arch),
        Item("table6", FAMILY, "cifar10", "apgd", e8, (0.0, 0.2, 0.35), 16, "ε = 1..16/255", arch),
        Item("table7", FAMILY, "cifar10", "apgd", e8, (0.2, 0.35), 34, "17 sites, single and cumulative", arch),
        Item("table8", FAMILY, "cifar10", "apgd", e8, ALPHAS_APP, 2, "main path vs after addition", arch),
    ]
    items = [replace(it, n=min(n, FULL_N[it.dataset]) if n else FULL_N[it.dataset]) for it in items]
    if pages:
        known = _plan_pages()
        bad = sorted(set(pages) - set(known))
        if bad:
            raise InputError(f"unknown page(s) {', '.join(bad)}; pages: {', '.join(known)}")
        items = [it for it in items if it.page in pages]
    if models:
        items = [it for it in items if it.model in models]
        if not items:
            raise InputError(f"no plan item uses {', '.join(models)}; models: "
                             f"{', '.join(sorted({it.model for it in paper_plan(n)}))}")
    return items


def _check_positive(name: str, value, *, integer: bool = False) -> None:
    """Raise :class:`~msparse.errors.InputError` unless ``value`` is a finite number > 0 (an int ≥ 1 if
    ``integer``): a zero throughput or iteration count would give a meaningless (infinite, zero or negative)
    estimate."""
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not (math.isfinite(value) and value > 0):
        kind = "an integer >= 1" if integer else "a finite number > 0"
        raise InputError(f"{name} must be {kind}, got {value!r}")


def _component_passes(c, cfg, robust: float) -> float:
    """Passes per image of one parsed component: its first attack on every image, the later ones on the
    ``robust`` share still standing; ``surrogate:`` repeats that per temperature (later temperatures on the robust
    share), ``transfer:`` adds the forward on the target; ``bpda:`` costs what the direct attack does."""
    from ..attacks.registry import get_attack

    costs = [get_attack(a).cost(cfg, {**get_attack(a).params, **c.params_of(a)}) for a in c.attacks]
    if not costs:                                    # "none": the clean forward only
        return 1 / 3
    seq = costs[0] + robust * sum(costs[1:])
    if c.mode == "surrogate":
        from ..attacks.surrogate import TAUS
        return seq * (1 + robust * (len(TAUS) - 1))
    if c.mode == "transfer":
        return seq + 1 / 3
    return seq


def passes(attack: str, n_iter: int = 100, n_queries: int = 5000, robust: float = ROBUST_FRACTION) -> float:
    """Forward+backward passes per image of one evaluation (a forward alone counts 1/3), from the attack
    registry's costs (:meth:`msparse.attacks.registry.AttackMethod.cost`, per attacked image).

    A sequence costs its first attack on every image + ``robust`` × the later ones (AutoAttack attacks only the
    points still robust): APGD-CE ``n_iter``; APGD (CE then DLR) + ``robust``·n_iter; APGD-CE+T and BPDA
    + ``robust``·9·n_iter (nine target classes); AutoAttack: APGD-CE + ``robust``·(APGD-T 9·n_iter + FAB-T
    9·n_iter + Square ``n_queries`` forwards); ``bpda:`` as the direct attack; ``surrogate:`` once per
    temperature (later ones on the robust share); ``transfer:`` crafted on the base, then one forward;
    ``worst:`` the sum of its components. Plus the clean forward. Any name :func:`~msparse.attacks.base.parse_attack`
    accepts has a cost; another is an :class:`~msparse.errors.InputError`."""
    from ..attacks.base import AttackConfig, parse_attack

    try:
        components = parse_attack(attack)
    except InputError as e:
        raise InputError(f"no cost model for attack {attack!r}: {e}") from None
    cfg = AttackConfig(eps=8 / 255, n_iter=int(n_iter), n_queries=int(n_queries))
    return sum(_component_passes(c, cfg, robust) for c in components) + 1 / 3   # + the clean forward


def estimate(it: Item, n_iter: int = 100, gpu_tflops: float = GPU_TFLOPS) -> float:
    """GPU-hours of an item: records × images × passes × 3 × forward FLOPs / ``gpu_tflops`` (TFLOP/s, > 0)."""
    _check_positive("gpu_tflops", gpu_tflops)
    _check_positive("n_iter", n_iter, integer=True)
    flops = it.records * it.n * passes(it.attack, n_iter) * 3 * GFLOPS[it.arch] * 1e9
    return flops / (gpu_tflops * 1e12) / 3600


def _check_reach(reach: Sequence[float]) -> tuple[float, ...]:
    """``reach`` as a tuple, or :class:`~msparse.errors.InputError` unless it is a non-empty, non-increasing
    sequence of shares in (0, 1] starting at 1 (the first stage attacks every image)."""
    try:
        r = tuple(float(v) for v in reach)
    except (TypeError, ValueError):
        raise InputError(f"reach must be a sequence of shares in (0, 1], one per cascade stage; got {reach!r}") \
            from None
    if not r or r[0] != 1.0 or any(not (0 < v <= 1) for v in r) or any(b > a for a, b in zip(r, r[1:])):
        raise InputError(f"reach must start at 1 (the first stage attacks every image) and not increase, each "
                         f"share in (0, 1]; got {list(r)}")
    return r


def cascade_stages(items: Sequence[Item], n_iter: int = 100) -> dict:
    """The cascades of ``items``: ``{(model, dataset, ε, n, α): [attack, ...]}``, the distinct attacks that
    items evaluate on the same model, images and ε at the same α, cheapest first (:func:`passes`; ties by name).
    An item joins with its first variant (its own ε, on the test images); its other variants (other images, ε,
    configurations) are points of their own."""
    groups: dict = {}
    for it in items:
        for a in it.alphas:
            groups.setdefault(_point(it, a), set()).add(it.attack)
    return {k: sorted(v, key=lambda atk: (passes(atk, n_iter), atk)) for k, v in groups.items()}


def _point(it: Item, alpha: float) -> tuple:
    return (it.model, it.dataset, round(float(it.eps), 9), it.n, round(float(alpha), 9))


def estimate_cascade(items: Sequence[Item], n_iter: int = 100, gpu_tflops: float = GPU_TFLOPS,
                     reach: Sequence[float] = CASCADE_REACH) -> list[float]:
    """GPU-hours of each of ``items`` when every point where several of them meet is computed as one cascade
    (:func:`cascade_stages`): an item's attack at stage k costs images × (``reach[k]`` × its attack passes + the
    clean forward) there, ``reach`` being the share of images reaching stage k (default :data:`CASCADE_REACH`,
    measured; past its end the last share). The item's other variants, and a point it has alone, cost what
    :func:`estimate` says. With ``reach = (1,)`` this is :func:`estimate`, item by item."""
    _check_positive("gpu_tflops", gpu_tflops)
    _check_positive("n_iter", n_iter, integer=True)
    r = _check_reach(reach)
    stages = cascade_stages(items, n_iter)
    out = []
    for it in items:
        p = passes(it.attack, n_iter)
        first = 0.0
        for a in it.alphas:
            k = stages[_point(it, a)].index(it.attack)
            first += r[min(k, len(r) - 1)] * (p - 1 / 3) + 1 / 3
        image_passes = first + (it.records - len(it.alphas)) * p
        out.append(it.n * image_passes * 3 * GFLOPS[it.arch] * 1e9 / (gpu_tflops * 1e12) / 3600)
    return out


def reach_from_bench(path, model: str = "msparse/default") -> tuple[tuple[float, ...], str]:
    """``(reach, source)`` from a ``bench/bench_cascade.py`` JSON: the share of the clean-correct images of
    ``model`` that each stage of its measured cascade attacked, and a line saying where it came from (budgets
    included). A file without that model, or not that benchmark's, is an :class:`~msparse.errors.InputError`."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        runs = {m["model"]: m for m in doc["models"]}
        budget = doc["budget"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a bench/bench_cascade.py result ({type(e).__name__}: {e}); run "
                         "python bench/bench_cascade.py --out FILE") from None
    if model not in runs:
        raise InputError(f"{path} has no cascade of {model!r} (it has {', '.join(runs) or 'none'}); run the "
                         f"benchmark with --models {model}@ALPHA")
    m = runs[model]
    reach = _check_reach([st["reach_of_clean"] for st in m["cascade"]["stages"]])
    src = (f"{path.name}: {model} at α = {m['alpha']:g}, n = {m['n']}, {budget['n_iter']} iterations, "
           f"{budget['n_queries']} queries, gradient estimation {budget['gradest_steps']} steps "
           f"({' → '.join(st['attack'] for st in m['cascade']['stages'])})")
    return reach, src


def estimate_here(it: Item, cost: dict, n_iter: int = 100) -> float:
    """CPU-hours of an item on this machine: the measured seconds per image pass (:func:`measure_cost`) scaled
    by the item's forward FLOPs over the measured model's (small models use a CPU less well than large ones, so
    this errs high for the appendix models and low for the large ones)."""
    _check_positive("n_iter", n_iter, integer=True)
    s = cost["s_per_image_pass"] * GFLOPS[it.arch] / cost["gflops_fwd"]
    return it.records * it.n * passes(it.attack, n_iter) * s / 3600


def measure_cost(model: str = FAMILY, *, batch: int = 64, repeats: int = 3, random_weights: bool = True) -> dict:
    """Measured here: seconds per image of one forward+backward pass of ``model`` (CPU, ``batch`` images), its
    forward GFLOPs, and the throughput they imply (GFLOP/s, counting a pass as 3 forwards)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .setup import RANDOM_PREFIX, load

    m = load(RANDOM_PREFIX + model if random_weights else model, "cpu").eval()
    x = torch.rand(batch, 3, 32, 32, requires_grad=True)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        m(x[:1].detach())
    gflops = fc.get_total_flops() / 1e9
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        m(x).sum().backward()
        best = min(best, time.perf_counter() - t0)
    s = best / batch
    return {"model": model, "s_per_image_pass": s, "gflops_fwd": gflops, "gflops_per_s": 3 * gflops / s,
            "threads": torch.get_num_threads()}


def stored_counts(items: Sequence[Item], store=None, random_weights: bool = False) -> list[int]:
    """Per item, how many records of its model, attack, ε and image count the store already holds (an upper
    bound on the item's done records: other grids of the same model and attack count too)."""
    import math

    from ..evaluation.store import Store

    st = store if isinstance(store, Store) else Store(store)
    rows = []
    for rec in st:
        spec, meta = rec.get("spec") or {}, rec.get("meta") or {}
        atk = spec.get("attack") or {}
        rows.append((meta.get("model"), atk.get("name"), atk.get("eps"), (spec.get("data") or {}).get("n")))
    out = []
    for it in items:
        name = ("random:" + it.model) if random_weights else it.model
        want = {"apgd": "apgd-ce,apgd-dlr"}.get(it.attack, it.attack)
        out.append(sum(1 for m, a, e, n in rows if m == name and n == it.n and e is not None
                       and math.isclose(e, it.eps, rel_tol=1e-6) and (a == it.attack or a == want
                                                                      or str(a).startswith(it.attack))))
    return out


def _setup_kwargs(n: int, n_iter: int, device: str, results_dir, n_train: int) -> dict:
    return dict(n_examples=n, n_iter=n_iter, device=device, results_dir=results_dir, n_train=n_train)


def run_plan(items: Sequence[Item], *, n_iter: int = 100, cluster=None, random_weights: bool = False,
             results_dir: str | None = None, device: str = "auto", n_train: int = 1000, progress=True,
             log=print) -> list[tuple[Item, str]]:
    """Compute the book's items of ``items`` through the book's own experiment functions on ``cluster`` (see
    :mod:`msparse.evaluation.executor`); returns ``(item, status)`` pairs (``"done"``, ``"skipped: ..."``).
    ``random_weights``: the architectures with random weights (``random:<name>``; tests of the machinery)."""
    from ..evaluation.executor import using

    by_key = _plan_pages()
    out = []
    done = set()   # (plan key, model, attack) already computed by an earlier call
    with using(cluster):
        for it in items:
            if not it.in_book:
                out.append((it, "skipped: not a book page here (the book's pages are CIFAR-10 L∞)"))
                continue
            model = ("random:" + it.model) if random_weights else it.model
            if (it.page, model, it.attack) in done:
                out.append((it, "done"))
                continue
            t0 = time.perf_counter()
            if progress:
                log(f"plan: {it.page} on {model}: {it.attack}, {it.records} record(s) of {it.n} images", flush=True)
            covered = by_key[it.page].plan_run(it, model, _setup_kwargs(it.n, n_iter, device, results_dir, n_train),
                                               progress)
            done.update((it.page, model, a) for a in (it.attack, *covered))
            out.append((it, f"done in {time.perf_counter() - t0:.0f} s"))
    return out
