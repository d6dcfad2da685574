"""The short demo (``python -m msparse demo``): MeanSparse on the shipped offline default, end to end.

Loads the shipped robust ResNet-18 and exact CIFAR-10 images (no network), sparsifies it with the paper's
ResNet-18 placement, computes the statistics on training images, then reports clean accuracy on the 1000
test images and APGD-CE (exact gradients, as the paper evaluates) and BPDA (identity gradients through the
operator, RobustBench's adaptive evaluation) robust accuracy at α = 0 and α > 0 on the first ``n`` test
images. Both use the same attack (APGD-CE, 100 iterations); only the gradient through the operator differs.
Results go to the results store and are reused on the next run.
"""

from __future__ import annotations

import argparse
import time

from .core.calibration import calibrate
from .core.operator import check_alpha
from .core.placement import set_alpha, sparsify
from .data.loading import load_data
from .errors import InputError
from .evaluation.evaluate import evaluate
from .models.registry import load_model


def _step(start: float, message: str) -> None:
    """One progress line, with the seconds since the demo started (printed at once, not buffered)."""
    print(f"[{time.perf_counter() - start:6.1f} s] {message}", flush=True)


def _pct(acc, ci) -> str:
    return f"{100 * acc:6.2f}% [{100 * ci[0]:5.1f}, {100 * ci[1]:5.1f}]"


def run(n: int = 100, alpha: float = 0.35, n_stats: int = 3000, store=None, progress: bool = True) -> list[dict]:
    """Run the demo; returns one row per (α, attack) with the evaluation results."""
    alpha = check_alpha(alpha)
    if alpha == 0:
        raise InputError("alpha must be > 0 for the demo (α = 0 is the base model, shown anyway)")
    if not isinstance(n, int) or not 1 <= n <= 1000:
        raise InputError(f"n must be an integer in 1..1000 (the offline test subset), got {n!r}")
    start = time.perf_counter()
    _step(start, "loading the shipped offline ResNet-18 ...")
    model = load_model()
    _step(start, f"loading CIFAR-10: {n_stats} training images (statistics), 1000 test images ...")
    x_train, _, train_info = load_data("cifar10", "train", n=n_stats, return_info=True)
    x_test, y_test, test_info = load_data("cifar10", "test", n=1000, return_info=True)
    sites = sparsify(model, "ResNet-18/cifar10/Linf/v1")
    _step(start, f"statistics (exact μ, σ) at {len(sites)} sites on {n_stats} training images ...")
    summary = calibrate(model, x_train, mode="exact", batch_size=500, progress=progress)
    print(f"model: offline default ResNet-18 (GELU, width {getattr(model, 'width', '?')}), {len(sites)} sites")
    print(f"statistics: {summary['n_samples']} training images ({train_info.source}), "
          f"{summary['seconds']:.1f} s")
    print(f"test data: {test_info.source}")
    rows = []
    runs = [(a, attack) for a in (0.0, alpha) for attack in (("apgd-ce",) if a == 0 else ("apgd-ce", "bpda:apgd-ce"))]
    for i, (a, attack) in enumerate(runs, 1):
        set_alpha(model, a)
        _step(start, f"[{i}/{len(runs)}] α = {a:g}: {attack} on the first {n} test images (100 iterations; a stored "
                     "record is reused) ...")
        result = evaluate(model, x_test[:n], y_test[:n], attack=attack, seed=0, batch_size=n,
                          store=store, progress=progress, name="offline-default",
                          data=test_info.source, stats=f"exact, {summary['n_samples']} train images")
        clean = evaluate(model, x_test, y_test, attack="none", store=store, name="offline-default",
                         data=test_info.source, diagnostics=False)
        rows.append({"alpha": a, "attack": attack, "clean_1000": clean, "robust": result})
        _step(start, f"[{i}/{len(runs)}] robust {100 * result.robust_acc:.1f}%" +
              (" (stored record)" if result.cached else ""))
    print()
    print(f"{'alpha':>6}  {'clean (1000 images)':>26}  {'attack':>13}  {'robust (first ' + str(n) + ')':>26}")
    for row in rows:
        c, r = row["clean_1000"], row["robust"]
        print(f"{row['alpha']:6.2f}  {_pct(c.clean_acc, c.clean_ci):>26}  {row['attack']:>13}  "
              f"{_pct(r.robust_acc, r.robust_ci):>26}{'  (stored)' if r.cached else ''}")
    print("\napgd-ce: APGD-CE through the operator's exact gradient, zero inside the band (the paper's "
          "evaluation).\nbpda:apgd-ce: the same attack with identity gradients through every MeanSparse site "
          "(RobustBench's adaptive evaluation uses APGD-CE + APGD-T this way: `--attack bpda` in the CLI).")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--n", type=int, default=100, help="test images to attack (default 100)")
    parser.add_argument("--alpha", type=float, default=0.35, help="α for the sparsified model (default 0.35)")
    parser.add_argument("--n-stats", type=int, default=3000, help="training images for the statistics")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(args: argparse.Namespace) -> int:
    run(n=args.n, alpha=args.alpha, n_stats=args.n_stats, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m msparse.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    raise SystemExit(main(add_arguments(parser).parse_args()))
