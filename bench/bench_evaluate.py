"""Benchmark the evaluation harness.

1. APGD-CE throughput of ``msparse.evaluation.evaluate`` (store on, per-batch shards, AutoAttack checks, clean
   pass, diagnostics) against calling the AutoAttack package directly
   (``AutoAttack(version='custom', attacks=['apgd-ce']).run_standard_evaluation``) on the same
   sparsified model, images and batch size. Target: ratio >= 0.97 (the harness adds <= 3%).
2. Time per alpha point of a sweep with statistics computed once and reused, against recalibrating
   for every point, and the time per point when the sweep is served from the results store.

The model is the project's CIFAR ResNet-18 (GELU, width --width) with MeanSparse at the paper's 17
positions (alpha 0.2): random weights with the model's own predictions as labels (every image is
attacked), or with --trained the shipped adversarially trained model and the true labels.
Timings alternate between the methods and report the median of --reps repetitions. Because other
processes may share the CPU, the time spent inside AutoAttack's APGD perturb() is also clocked and
the harness overhead (time outside it) is reported separately.

    python bench/bench_evaluate.py                       # CPU defaults (a few minutes on 2 cores)
    python bench/bench_evaluate.py --device cuda --n 1000 --batch-size 250 --width 64
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from msparse.core.calibration import calibrate  # noqa: E402
from msparse.core.placement import set_alpha, sparsify  # noqa: E402
from msparse.evaluation.evaluate import evaluate  # noqa: E402
from msparse.evaluation.sweep import sweep  # noqa: E402


def build(width: int, device: str, trained: bool):
    from msparse.models.registry import load_model
    from msparse.models.resnet import resnet18
    if trained:   # the shipped adversarially trained ResNet-18 (GELU, width 16)
        model = load_model(device=device)
    else:
        torch.manual_seed(0)
        model = resnet18(activation="gelu", width=width).to(device).eval()
    sparsify(model, "ResNet-18/cifar10/Linf/v1")
    return model


def images(n: int, split: str, device: str):
    try:
        from msparse.data.loading import load_data
        x, _ = load_data("cifar10", split, n=n)
    except Exception as e:   # no data at all: uniform noise (timing only)
        print(f"(no CIFAR-10 {split} data: {e}; using random images)")
        x = torch.rand(n, 3, 32, 32)
    return x.to(device)


def direct_apgd_ce(model, x, y, eps, batch_size, n_iter):
    from pyautoattack import AutoAttack
    import msparse.attacks.autoattack as atk
    aa = AutoAttack(model, attacks=["apgd-ce"], version="custom", eps=eps, seed=0,
                    device=str(x.device))
    aa.apgd.n_restarts = 1
    if n_iter != 100:
        atk._set_apgd_iters(aa.apgd, n_iter)
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    return y_adv.eq(y).float().mean().item()


class _AttackClock:
    """Accumulates the time spent inside AutoAttack's APGD ``perturb`` (the attack itself), so that
    the harness overhead (everything else) can be measured apart from CPU contention noise."""

    def __init__(self):
        from pyautoattack.autopgd_base import APGDAttack
        self.cls, self.orig, self.seconds = APGDAttack, APGDAttack.perturb, 0.0
        clock = self

        def perturb(self_, *a, **k):
            t = time.perf_counter()
            try:
                return clock.orig(self_, *a, **k)
            finally:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                clock.seconds += time.perf_counter() - t
        APGDAttack.perturb = perturb

    def take(self) -> float:
        s, self.seconds = self.seconds, 0.0
        return s


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t, out


def _report_throughput(args, t_direct, t_ours, t_ours_nostore, a_direct, a_ours, acc_d, acc_o):
    md, mo, mn = (statistics.median(t) for t in (t_direct, t_ours, t_ours_nostore))
    print(f"APGD-CE robust accuracy: direct {100 * acc_d:.2f}%, evaluate {100 * acc_o:.2f}%")
    print(f"APGD-CE throughput (wall, median of {args.reps}): direct {args.n / md:.1f} img/s, "
          f"evaluate {args.n / mo:.1f} img/s -> ratio {md / mo:.3f} (target >= 0.97); "
          f"without store {md / mn:.3f}; per-rep ratios "
          + ", ".join(f"{d / o:.3f}" for d, o in zip(t_direct, t_ours)))
    # overhead = time outside AutoAttack's perturb(); robust to contention slowing both alike
    o_d = statistics.median(t - a for t, a in zip(t_direct, a_direct))
    o_o = statistics.median(t - a for t, a in zip(t_ours, a_ours))
    att = statistics.median(a_direct + a_ours)
    print(f"time outside the attack (median): direct {o_d:.2f} s, evaluate {o_o:.2f} s, attack "
          f"itself {att:.2f} s -> overhead-based ratio {(att + o_d) / (att + o_o):.3f} "
          f"(harness adds {100 * (o_o - o_d) / (att + o_d):+.1f}%)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--width", type=int, default=16, help="ResNet-18 width (64 = full)")
    ap.add_argument("--n", type=int, default=128, help="test images")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n-iter", type=int, default=100, help="APGD iterations (AutoAttack: 100)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--alphas", type=int, default=4, help="alpha points in the sweep benchmark")
    ap.add_argument("--n-calib", type=int, default=3000, help="images of the statistics pass")
    ap.add_argument("--sweep-n", type=int, default=64, help="test images in the sweep benchmark")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-throughput", action="store_true", help="only the sweep benchmark")
    ap.add_argument("--trained", action="store_true",
                    help="use the shipped trained model and true labels (else random weights and "
                         "the model's predictions as labels)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev, eps = args.device, 8 / 255

    model = build(args.width, dev, args.trained)
    x_cal = images(args.n_calib, "train", dev)
    calibrate(model, x_cal, mode="exact", batch_size=256)
    set_alpha(model, 0.2)
    x = images(args.n, "test", dev)
    if args.trained:
        from msparse.data.loading import load_data
        _, y = load_data("cifar10", "test", n=args.n)
        y = y.to(dev)
    else:
        with torch.no_grad():
            y = torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])

    print(f"device {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads; ResNet-18 "
          f"GELU width {args.width}, 17 sites at alpha 0.2; {args.n} images, batch {args.batch_size}, "
          f"APGD-CE {args.n_iter} iterations, 1 restart")
    if args.skip_throughput:
        args.reps = 0
    direct_apgd_ce(model, x[:8], y[:8], eps, 8, 2)          # warm-up
    clock = _AttackClock()
    t_direct, t_ours, t_ours_nostore = [], [], []
    a_direct, a_ours = [], []
    for rep in range(args.reps):
        with tempfile.TemporaryDirectory() as tmp:
            order = [("direct", None), ("ours", tmp), ("ours_nostore", False)]
            if rep % 2:
                order.reverse()
            for name, store in order:
                clock.take()
                if name == "direct":
                    dt, acc_d = timed(lambda: direct_apgd_ce(model, x, y, eps, args.batch_size,
                                                             args.n_iter))
                    t_direct.append(dt)
                    a_direct.append(clock.take())
                else:
                    dt, res = timed(lambda: evaluate(model, x, y, "apgd-ce", eps=eps, seed=0,
                                                     batch_size=args.batch_size,
                                                     n_iter=args.n_iter, store=store))
                    assert not res.cached
                    (t_ours if name == "ours" else t_ours_nostore).append(dt)
                    if name == "ours":
                        a_ours.append(clock.take())
                    acc_o = res.robust_acc
        print(f"  rep {rep}: direct {t_direct[-1]:.2f} s, evaluate {t_ours[-1]:.2f} s, "
              f"evaluate (no store) {t_ours_nostore[-1]:.2f} s")
    if args.reps:
        _report_throughput(args, t_direct, t_ours, t_ours_nostore, a_direct, a_ours, acc_d, acc_o)

    # --- sweep: statistics reuse ---------------------------------------------------------------
    # Per alpha point, a sweep either reuses one statistics pass (cost t_cal / K per point) or
    # recalibrates (t_cal per point). Both parts are clocked separately at every point, so that
    # contention from other processes does not bias one variant.
    alphas = [0.05 * (i + 1) for i in range(args.alphas)]
    xs, ys = x[:args.sweep_n], y[:args.sweep_n]
    t_cals, t_evals = [], []
    for a in alphas:
        dt, _ = timed(lambda: calibrate(model, x_cal, mode="exact", batch_size=256))
        t_cals.append(dt)
        set_alpha(model, a)
        dt, _ = timed(lambda: evaluate(model, xs, ys, "apgd-ce", eps=eps, batch_size=args.batch_size,
                                       n_iter=args.n_iter, store=False))
        t_evals.append(dt)
    t_cal, t_ev, k = statistics.median(t_cals), statistics.median(t_evals), len(alphas)
    reuse, noreuse = t_ev + t_cal / k, t_ev + t_cal
    with tempfile.TemporaryDirectory() as tmp:
        sweep(model, xs, ys, alphas=alphas, attack="apgd-ce", eps=eps, batch_size=args.batch_size,
              n_iter=args.n_iter, store=tmp, progress=False, compare=False)
        t_cached, _ = timed(lambda: sweep(model, xs, ys, alphas=alphas, attack="apgd-ce", eps=eps,
                                          batch_size=args.batch_size, n_iter=args.n_iter,
                                          store=tmp, progress=False, compare=False))
    print(f"sweep over {k} alphas, {args.sweep_n} images, APGD-CE {args.n_iter} iterations; "
          f"statistics pass on {args.n_calib} images: {t_cal:.2f} s, one evaluation: {t_ev:.2f} s "
          f"(medians)")
    print(f"  per alpha point: statistics reused {reuse:.2f} s, recalibrated {noreuse:.2f} s "
          f"-> ratio {noreuse / reuse:.3f} (reuse saves {100 * (1 - reuse / noreuse):.1f}%); "
          f"served from the store {t_cached / k:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
