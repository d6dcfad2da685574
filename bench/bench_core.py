"""Core benchmarks: ratios of two things timed in one run (interleaved, median of repeats).

1. Operator overhead: a CIFAR ResNet-18 forward with MeanSparse at all 17 positions (α > 0) vs the unmodified
   model, through the fused kernels (the default route) and through the eager operator (``kernels.eager()``).
   Target ≤ 1.05 at full width, batch 128.
2. Statistics pass: ``msparse.calibrate`` (exact) vs a plain no-grad forward over the same data (target ≤ 1.15).
3. Attack throughput: APGD-CE (pyautoattack's ``APGDAttack``, a fixed number of iterations on every image, labels
   = each model's own predictions so every image is attacked) through the sparsified model vs the unmodified one
   (target ≥ 1/1.05 of the unmodified throughput).
4. One site alone (the widest, batch × 64 × 32 × 32, channels_last): the operator through the fused kernel (its
   output buffer reused, as in a model's repeated forwards) and through eager PyTorch vs a copy into an existing
   tensor (one read and one write: the floor for an out-of-place op) and a clone (the same into fresh memory).
5. First-use cost of the fused kernels: a cold build into an empty cache and a warm load, each in a fresh process.

    python bench/bench_core.py [--width 64] [--batch 128] [--repeats 7] [--apgd-batch 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msparse as ms  # noqa: E402
from msparse.core import kernels  # noqa: E402
from msparse.core.placement import blocked_fractions  # noqa: E402
from msparse.models.resnet import resnet18  # noqa: E402


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(fns, repeats, device) -> list[float]:
    """Median seconds of each function in ``fns``, rotating their order every round (one warm-up call each)."""
    times = [[] for _ in fns]
    for f in fns:
        f()
    for i in range(repeats):
        order = list(range(len(fns)))
        order = order[i % len(fns):] + order[: i % len(fns)]
        for j in order:
            times[j].append(timed(fns[j], device))
    return [statistics.median(t) for t in times]


def eager(fn):
    def run():
        with kernels.eager():
            fn()
    return run


def apgd_runner(model, x, n_iter, device):
    from pyautoattack.autopgd_base import APGDAttack

    with torch.no_grad():
        y = model(x).argmax(1)   # the model's own predictions: every image is attacked for all n_iter steps
    attack = APGDAttack(model, n_iter=n_iter, eps=8 / 255, norm="Linf", seed=0, device=device, loss="ce")
    attack.init_hyperparam(x)   # what perturb() does before its restarts

    def run():
        torch.manual_seed(0)
        attack.attack_single_run(x, y)
    return run


def first_use_cost() -> dict:
    """Cold build (empty cache) and warm load of the kernels, each measured in a fresh interpreter."""
    code = "from msparse.core import kernels, operator; import json; print(json.dumps(operator.kernel_info()))"
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("cold", "warm"):
            env = {**os.environ, "MSPARSE_KERNEL_DIR": tmp}
            start = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                 cwd=Path(__file__).resolve().parent.parent)
            wall = time.perf_counter() - start
            info = json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else {"reason": res.stderr}
            out[label] = {"build_seconds": info.get("build_seconds"), "process_seconds": wall,
                          "reason": info.get("reason")}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 base width (64 = full)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=4, help="batches in the statistics pass")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--apgd-batch", type=int, default=32, help="images per APGD-CE run (0: skip)")
    parser.add_argument("--apgd-iter", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    info = ms.core.operator.kernel_info()

    base = resnet18("gelu", width=args.width).to(device).eval().to(memory_format=torch.channels_last)
    sparse = copy.deepcopy(base)
    sites = ms.sparsify(sparse, "ResNet-18/cifar10/Linf/v1")
    data = torch.rand(args.batch * args.batches, 3, 32, 32, device=device).contiguous(
        memory_format=torch.channels_last)
    ms.calibrate(sparse, data, batch_size=args.batch)
    ms.set_alpha(sparse, args.alpha)
    x = data[: args.batch]
    blocked = blocked_fractions(sparse, x)

    with torch.no_grad():
        t_base, t_fused, t_eager = interleaved([lambda: base(x), lambda: sparse(x), eager(lambda: sparse(x))],
                                               args.repeats, device)

    @torch.no_grad()
    def plain_pass():   # what calibrate runs, without the statistics (calibrate is no-grad too)
        for xb in data.split(args.batch):
            base(xb)

    def stats_pass():
        ms.calibrate(sparse, data, batch_size=args.batch)

    t_plain, t_stats, t_stats_eager = interleaved([plain_pass, stats_pass, eager(stats_pass)],
                                                  max(3, args.repeats // 2), device)

    apgd = None
    if args.apgd_batch > 0:
        xa = data[: args.apgd_batch].contiguous(memory_format=torch.channels_last)
        t_apgd_base, t_apgd_fused, t_apgd_eager = interleaved(
            [apgd_runner(base, xa, args.apgd_iter, device), apgd_runner(sparse, xa, args.apgd_iter, device),
             eager(apgd_runner(sparse, xa, args.apgd_iter, device))], args.repeats, device)
        apgd = (t_apgd_base, t_apgd_fused, t_apgd_eager)

    from msparse.core.placement import operators

    op = operators(sparse)[0]
    feats = torch.randn(args.batch, op.channels, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    into = torch.empty_like(feats)
    with torch.no_grad():
        t_copy, t_clone, t_site, t_site_eager = interleaved(
            [lambda: into.copy_(feats), feats.clone, lambda: op(feats), eager(lambda: op(feats))], args.repeats,
            device)
    cost = first_use_cost() if device.type == "cpu" else None
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, ResNet-18 GELU width "
          f"{args.width}, batch {args.batch}, {len(sites)} sites, alpha {args.alpha} (mean blocked fraction "
          f"{statistics.mean(blocked.values()):.1%}); operator route: {info['route']} ({info['reason']})")
    print(f"operator overhead   forward with MeanSparse / unmodified   fused {t_fused / t_base:6.3f}x   eager "
          f"{t_eager / t_base:6.3f}x   ({t_fused * 1e3:.0f} / {t_eager * 1e3:.0f} vs {t_base * 1e3:.0f} ms)   "
          f"target <= 1.05")
    print(f"statistics pass     calibrate / plain no-grad forward      fused {t_stats / t_plain:6.3f}x   eager "
          f"{t_stats_eager / t_plain:6.3f}x   ({t_stats:.2f} / {t_stats_eager:.2f} vs {t_plain:.2f} s, {len(data)} "
          f"images)   target <= 1.15")
    if apgd:
        tb, tf, te = apgd
        n = args.apgd_batch * args.apgd_iter
        print(f"APGD-CE throughput  sparsified / unmodified (images x iterations per s)   fused {tb / tf:6.3f}x   "
              f"eager {tb / te:6.3f}x   ({n / tf:.1f} / {n / te:.1f} vs {n / tb:.1f} img-it/s, batch "
              f"{args.apgd_batch}, {args.apgd_iter} iterations)   target >= {1 / 1.05:.3f}")
    print(f"one site            {tuple(feats.shape)} channels_last: fused {t_site * 1e3:.1f} ms, eager "
          f"{t_site_eager * 1e3:.1f} ms, copy into an existing tensor {t_copy * 1e3:.1f} ms, clone "
          f"{t_clone * 1e3:.1f} ms (fused / copy {t_site / t_copy:.2f}x, eager / copy {t_site_eager / t_copy:.2f}x)")
    if cost:
        c, w = cost["cold"], cost["warm"]
        print(f"first use           kernels built cold in {c['build_seconds'] or float('nan'):.2f} s (fresh process "
              f"{c['process_seconds']:.2f} s), loaded warm in {1e3 * (w['build_seconds'] or float('nan')):.2f} ms "
              f"(fresh process {w['process_seconds']:.2f} s); {c['reason']}")


if __name__ == "__main__":
    main()
