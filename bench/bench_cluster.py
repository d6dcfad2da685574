"""Benchmark the executor (ratios from one run).

1. Throughput of an APGD-CE α sweep on a Dask ``local:N`` cluster (N worker processes, cores/N torch threads
   each) against the same sweep in this process (torch's intra-op threads on every core). On a machine whose
   cores torch already keeps busy, N processes cannot beat one; the ratio shows what the processes cost.
2. The executor's overhead: the same sweep (1 torch thread everywhere) through the executor's path in this
   process (probe each point's key, run the task, write the record, read it back through the sweep) and
   through ``local:1``, against calling the sweep directly; and the executor's bookkeeping per point timed
   where nothing is computed (every record stored), as a share of a computed point. Target >= 0.95.

Each method gets a fresh store (nothing reused); the clusters are started before the clock runs (start-up is
reported separately). Methods alternate; the median of --reps repetitions is reported. Other jobs on the
machine make single timings noisy.

    python bench/bench_cluster.py                   # CPU defaults (a few minutes on 2 cores)
    python bench/bench_cluster.py --workers 4 --n 256 --points 8
"""
from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # idle OpenMP threads sleep (as in the tests), before torch
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from msparse.core.calibration import calibrate  # noqa: E402
from msparse.core.placement import sparsify  # noqa: E402
from msparse.evaluation import executor as ex  # noqa: E402
from msparse.evaluation.sweep import sweep  # noqa: E402


def build(width: int):
    from msparse.models.resnet import resnet18

    torch.manual_seed(0)
    model = resnet18(activation="gelu", width=width).eval()
    sparsify(model, "ResNet-18/cifar10/Linf/v1")
    calibrate(model, torch.rand(256, 3, 32, 32))
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32, help="images per point")
    ap.add_argument("--points", type=int, default=4, help="α values in the sweep")
    ap.add_argument("--n-iter", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)

    model = build(a.width)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(a.n, 3, 32, 32, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)          # every image is attacked
    alphas = [round(0.1 * i, 2) for i in range(a.points)]
    kw = dict(alphas=alphas, attack="apgd-ce", n_iter=a.n_iter, batch_size=a.batch_size, progress=False,
              compare=False)
    threads = torch.get_num_threads()
    cores = os.cpu_count() or 1

    t0 = time.perf_counter()
    ex._client(f"local:{a.workers}")
    start_local = time.perf_counter() - t0
    ex._client("local:1")

    def executor_here(d):   # the executor's path in this process: probe keys, run tasks, write, read back
        from msparse.core.placement import set_alpha

        jobs = []
        for al in alphas:
            set_alpha(model, al)
            jobs.append(ex.Job(ex.site_state(model), "apgd-ce",
                               dict(n_iter=a.n_iter, batch_size=a.batch_size, eps=8 / 255)))
        set_alpha(model, 0.0)
        ex.Executor(None).run(model, x, y, jobs, store=d, progress=False)
        return sweep(model, x, y, store=d, **kw)

    one = max(1, cores // a.workers)
    methods = {   # name: (torch threads in this process, how)
        f"in-process sweep, {threads} threads": (threads, lambda d: sweep(model, x, y, store=d, **kw)),
        f"local:{a.workers}, {one} thread(s) each": (threads, lambda d: sweep(
            model, x, y, store=d, cluster=ex.Executor(f"local:{a.workers}", threads=one), **kw)),
        "in-process sweep, 1 thread": (1, lambda d: sweep(model, x, y, store=d, **kw)),
        "executor in this process, 1 thread": (1, executor_here),
        "local:1, 1 thread": (1, lambda d: sweep(model, x, y, store=d, cluster=ex.Executor("local:1", threads=1),
                                                  **kw)),
    }
    times: dict[str, list[float]] = {k: [] for k in methods}
    for rep in range(a.reps):
        for name, (nt, fn) in methods.items():
            torch.set_num_threads(nt)
            with tempfile.TemporaryDirectory() as d:
                t0 = time.perf_counter()
                sw = fn(d)
                times[name].append(time.perf_counter() - t0)
                assert len(sw.results) == a.points   # (the executor-here path reads its points back as stored)
                assert name.startswith("executor") or not any(r.cached for r in sw.results)
        print(f"rep {rep + 1}/{a.reps}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()), flush=True)
    torch.set_num_threads(threads)

    # the executor's own work per point, timed where nothing is computed: probing stored keys and reading back
    with tempfile.TemporaryDirectory() as d:
        executor_here(d)
        t0 = time.perf_counter()
        for _ in range(3):
            executor_here(d)
        book = (time.perf_counter() - t0) / 3 / a.points
        t0 = time.perf_counter()
        for _ in range(3):
            sweep(model, x, y, store=d, **kw)
        read = (time.perf_counter() - t0) / 3 / a.points
    ex._close_clients()

    images = a.n * a.points
    med = {k: statistics.median(v) for k, v in times.items()}
    names = list(med)
    print(f"\nAPGD-CE sweep: {a.points} points x {a.n} images, {a.n_iter} iterations, ResNet-18 GELU width "
          f"{a.width}, batch {a.batch_size}; {cores} cores; median of {a.reps}")
    print(f"local:{a.workers} start-up (not in the timings): {start_local:.1f}s")
    print(f"{'method':40s} {'seconds':>8s} {'images/s':>9s}")
    for k, v in med.items():
        print(f"{k:40s} {v:8.2f} {images / v:9.1f}")
    print(f"\nthroughput local:{a.workers} / in-process ({threads} threads): {med[names[0]] / med[names[1]]:.2f}x")
    print(f"executor in this process / sweep (1 thread each): {med[names[2]] / med[names[3]]:.2f}x")
    print(f"local:1 / sweep (1 thread each): {med[names[2]] / med[names[4]]:.2f}x")
    per_point = med[names[2]] / a.points
    print(f"executor bookkeeping per point (probe the key + read back, all stored): {1e3 * book:.0f} ms "
          f"(the sweep's own read-back alone: {1e3 * read:.0f} ms); a computed point here takes {per_point:.1f} s, "
          f"so the bookkeeping costs {book / per_point:.1%} -> ratio {per_point / (per_point + book - read):.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
