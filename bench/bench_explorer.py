"""Live α explorer: seconds per slider move, measured through the widget's own callback (``LiveExplorer.update``).

The model is the shipped default (``msparse/default``: the project's adversarially trained CIFAR ResNet-18, GELU,
width 16, MeanSparse at the paper's 17 positions, statistics from 1000 training images), or ``--model`` any name
:func:`msparse.experiments.setup.setup` accepts (``random:resnet18-gelu-w16`` needs no files). Every move is to an α
not seen before (nothing cached for it): one forward on ``--n-batch`` images (blocked fraction per site, the site's
input, clean accuracy), a ``--pgd-steps``-step PGD on ``--n-robust`` images, the artists moved and a PNG rendered.
Revisiting an α is also timed. Target: ≤ 0.3 s per move on a 2-core CPU. Each move is reported in wall-clock
seconds and in CPU seconds of this process (``time.process_time``, all threads) next to the load average: on a
shared machine the wall clock also counts other people's jobs, the CPU time much less so.

    python bench/bench_explorer.py [--n-batch 64] [--n-robust 16] [--pgd-steps 5] [--moves 8]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from msparse.core.operator import kernel_info  # noqa: E402
from msparse.experiments.setup import setup  # noqa: E402
from msparse.report.widgets import LiveExplorer  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="msparse/default")
    parser.add_argument("--n-batch", type=int, default=64)
    parser.add_argument("--n-robust", type=int, default=16)
    parser.add_argument("--pgd-steps", type=int, default=5)
    parser.add_argument("--moves", type=int, default=8)
    parser.add_argument("--site", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    s = setup(args.model, n_examples=max(args.n_batch, 100), n_train=1000)
    start = time.perf_counter()
    live = LiveExplorer(s.model, s.x, s.y, alpha=0.25, site=args.site, n_batch=args.n_batch,
                        n_robust=args.n_robust, pgd_steps=args.pgd_steps)
    first = time.perf_counter() - start
    alphas = [round(0.3 + 0.05 * i, 2) for i in range(args.moves)]
    load = os.getloadavg()[0]

    def move(**change):
        cpu = time.process_time()
        wall = live.update(**change)
        return wall, time.process_time() - cpu

    new = [move(alpha=a) for a in alphas]
    seen = [move(alpha=a) for a in alphas[:: max(1, len(alphas) // 4)]]
    site = move(site=(args.site + 1) % len(live.ex.ops))
    load = max(load, os.getloadavg()[0])

    def med(pairs, i):
        return statistics.median(p[i] for p in pairs)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {args.model}, operator route: "
          f"{kernel_info()['route']}")
    print(f"batch: {args.n_batch} images (blocked fractions, histograms, clean accuracy), PGD-{args.pgd_steps} on "
          f"{args.n_robust} images (robust indicator), PNG at {live.dpi} dpi")
    print(f"load average (1 min) up to {load:.1f} on {os.cpu_count()} cores")
    print(f"first draw (builds the figure, α=0 site inputs)   {first:6.3f} s wall")
    print(f"slider move to a new α    median {med(new, 0):6.3f} s wall, {med(new, 1):6.3f} s CPU   "
          f"(max {max(p[0] for p in new):.3f} s wall, {len(new)} moves)   target <= 0.3 s")
    print(f"slider move to a seen α   median {med(seen, 0):6.3f} s wall, {med(seen, 1):6.3f} s CPU")
    print(f"site change (new figure)  {site[0]:6.3f} s wall, {site[1]:6.3f} s CPU")


if __name__ == "__main__":
    main()
