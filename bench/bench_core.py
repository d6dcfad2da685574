"""Core benchmarks: ratios of two things timed in one run (interleaved, median of repeats).

1. Operator overhead: a CIFAR ResNet-18 forward with MeanSparse at all 17 positions (α > 0) vs the
   unmodified model (target ≤ 1.02 at full width on CPU).
2. Statistics pass: ``msparse.calibrate`` vs a plain no-grad forward over the same data (target ≤ 1.15).

    python bench/bench_core.py [--width 64] [--batch 128] [--repeats 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import msparse as ms
from msparse.core.placement import blocked_fractions
from msparse.models.resnet import resnet18


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(a, b, repeats, device) -> tuple[float, float]:
    """Median seconds of ``a`` and ``b``, alternating their order each round."""
    ta, tb = [], []
    a(), b()  # warm-up
    for i in range(repeats):
        if i % 2:
            tb.append(timed(b, device)), ta.append(timed(a, device))
        else:
            ta.append(timed(a, device)), tb.append(timed(b, device))
    return statistics.median(ta), statistics.median(tb)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 base width (64 = full)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=4, help="batches in the statistics pass")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)

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
        t_base, t_sparse = interleaved(lambda: base(x), lambda: sparse(x), args.repeats, device)

        def plain_pass():
            for xb in data.split(args.batch):
                base(xb)

    t_plain, t_stats = interleaved(plain_pass, lambda: ms.calibrate(sparse, data, batch_size=args.batch),
                                   max(3, args.repeats // 2), device)
    threads = torch.get_num_threads()
    print(f"device {device}, {threads} threads, ResNet-18 GELU width {args.width}, batch {args.batch}, "
          f"{len(sites)} sites, alpha {args.alpha} (mean blocked fraction {statistics.mean(blocked.values()):.1%})")
    print(f"operator overhead   forward with MeanSparse / unmodified   {t_sparse / t_base:6.3f}x   "
          f"({t_sparse * 1e3:.1f} ms vs {t_base * 1e3:.1f} ms)   target <= 1.02")
    print(f"statistics pass     calibrate / plain no-grad forward      {t_stats / t_plain:6.3f}x   "
          f"({t_stats:.2f} s vs {t_plain:.2f} s, {len(data)} images)   target <= 1.15")


if __name__ == "__main__":
    main()
