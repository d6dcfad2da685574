"""GPU benchmark: the core ratios on a WRN-70-16-sized model, in fp32 and in the fast settings, with band flips.

On a CUDA machine this builds RobustBench's ``DMWideResNet`` (depth 70, width 16, SiLU: the architecture of
``Wang2023Better_WRN-70-16``, random weights, no download) with MeanSparse at that preset's 67 positions (before
every SiLU, α 0.20), calibrates it on random images and measures, for each setting (fp32 NCHW; fp32 channels_last;
bf16 autocast + channels_last), interleaved medians of:

* forward with MeanSparse / unmodified forward (same setting);
* statistics pass (``msparse.calibrate``) / plain no-grad forward over the same images;
* APGD-CE throughput (pyautoattack's ``APGDAttack``, fixed iterations, every image attacked) of the sparsified and
  of the unmodified model, in images × iterations per second, and their ratio;
* flips: the fraction of site entries whose in-band decision (|x − μ| < α·σ) differs from the fp32 NCHW run on
  the same images (each setting's own site inputs). A setting with flips = 0 gives the same sparsification as the
  reference; one with flips > 0 changes which entries are blocked and is reported, not recommended.

Without CUDA it prints why and exits 0, unless ``--smoke``: then a tiny DMWideResNet (depth 10, width 1) runs every
step on the CPU in seconds (the check that the script works; its numbers mean nothing).

    python bench/bench_gpu.py [--batch 128] [--apgd-batch 64] [--apgd-iter 10] [--repeats 5]
    python bench/bench_gpu.py --smoke
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PRESET = "Wang2023Better_WRN-70-16/cifar10/Linf/v1"
SETTINGS = {  # name: (channels_last, autocast dtype or None)
    "fp32": (False, None),
    "fp32 channels_last": (True, None),
    "bf16 autocast + channels_last": (True, torch.bfloat16),
}


def build(depth: int, width: int, device):
    import msparse  # noqa: F401  (installs RobustBench's autoattack alias)
    from robustbench.model_zoo.architectures.dm_wide_resnet import DMWideResNet

    torch.manual_seed(0)
    return DMWideResNet(num_classes=10, depth=depth, width=width, activation_fn=nn.SiLU).to(device).eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns, repeats, device):
    """Median seconds of each function, rotating their order every round (one warm-up call each)."""
    times = [[] for _ in fns]
    for f in fns:
        f()
    for i in range(repeats):
        for j in [(i + k) % len(fns) for k in range(len(fns))]:
            sync(device)
            t = time.perf_counter()
            fns[j]()
            sync(device)
            times[j].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def context(device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def site_masks(model, x, ctx) -> list[torch.Tensor]:
    """Each site's in-band mask (as the operator computes it) on images ``x`` under the autocast context."""
    from msparse.core.placement import operators

    masks, handles = [], []
    for op in operators(model):
        handles.append(op.register_forward_pre_hook(lambda m, a: masks.append(m.band(a[0])[0].cpu())))
    try:
        with torch.no_grad(), ctx:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return masks


def apgd(model, x, n_iter, device, ctx):
    from pyautoattack.autopgd_base import APGDAttack

    with torch.no_grad(), ctx:
        y = model(x).argmax(1)
    attack = APGDAttack(model, n_iter=n_iter, eps=8 / 255, norm="Linf", seed=0, device=device, loss="ce")
    attack.init_hyperparam(x)

    def run():
        torch.manual_seed(0)
        with ctx:
            attack.attack_single_run(x, y)
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script runs")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=4, help="batches in the statistics pass")
    parser.add_argument("--apgd-batch", type=int, default=64)
    parser.add_argument("--apgd-iter", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.smoke:
        device, depth, width = torch.device("cpu"), 10, 1
        args.batch, args.batches, args.apgd_batch, args.apgd_iter, args.repeats = 4, 2, 2, 2, 1
    elif not torch.cuda.is_available():
        print("bench_gpu: skipped: no CUDA device (torch.cuda.is_available() is False). GPU figures: not measured. "
              "Run on a CUDA machine, or pass --smoke to check the script on the CPU.")
        return 0
    else:
        device, depth, width = torch.device("cuda"), 70, 16

    import msparse as ms
    from msparse.core.operator import kernel_info

    preset = ms.PRESETS[PRESET]
    base = build(depth, width, device)
    sparse = copy.deepcopy(base)
    sites = ms.sparsify(sparse, list(preset.rules))
    data = torch.rand(args.batch * args.batches, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    ms.calibrate(sparse, data, batch_size=args.batch)
    ms.set_alpha(sparse, preset.alpha)
    x = data[: args.batch]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke test: numbers mean nothing)"
    print(f"torch {torch.__version__}, {name}; DMWideResNet depth {depth} width {width} SiLU, {len(sites)} sites, "
          f"alpha {preset.alpha}; batch {args.batch}; CPU operator route {kernel_info()['route']} (CUDA: eager)")
    reference = site_masks(sparse, x, contextlib.nullcontext())
    rows = []
    for label, (channels_last, dtype) in SETTINGS.items():
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        base.to(memory_format=fmt)
        sparse.to(memory_format=fmt)
        xs = x.contiguous(memory_format=fmt)
        ds = data.contiguous(memory_format=fmt)
        ctx = context(device, dtype)
        masks = site_masks(sparse, xs, ctx)
        flips = sum(int((a != b).sum()) for a, b in zip(masks, reference))
        total = sum(m.numel() for m in reference)

        def fwd(model):
            def run():
                with torch.no_grad(), ctx:
                    model(xs)
            return run

        def plain():
            with torch.no_grad(), ctx:
                for xb in ds.split(args.batch):
                    base(xb)

        def stats():
            with ctx:
                ms.calibrate(sparse, ds, batch_size=args.batch)

        t_base, t_sparse = interleaved([fwd(base), fwd(sparse)], args.repeats, device)
        t_plain, t_stats = interleaved([plain, stats], max(1, args.repeats // 2), device)
        xa = xs[: args.apgd_batch]
        t_abase, t_asparse = interleaved([apgd(base, xa, args.apgd_iter, device, ctx),
                                          apgd(sparse, xa, args.apgd_iter, device, ctx)],
                                         max(1, args.repeats // 2), device)
        work = len(xa) * args.apgd_iter
        rows.append((label, t_sparse / t_base, t_stats / t_plain, work / t_asparse, work / t_abase,
                     t_abase / t_asparse, flips, total, t_sparse))
        base.to(memory_format=torch.contiguous_format)
        sparse.to(memory_format=torch.contiguous_format)
    print(f"{'setting':32s} {'fwd ratio':>9s} {'stats ratio':>11s} {'APGD img-it/s (MS / base)':>26s} "
          f"{'APGD ratio':>10s} {'flips vs fp32':>16s}")
    for label, fr, sr, a_s, a_b, ar, flips, total, _ in rows:
        print(f"{label:32s} {fr:8.3f}x {sr:10.3f}x {a_s:12.1f} / {a_b:<11.1f} {ar:9.3f}x "
              f"{flips:>8d} ({flips / total:.1e})")
    ok = [r for r in rows if r[6] == 0]
    best = min(ok, key=lambda r: r[8]) if ok else None   # the fastest sparsified forward
    print(f"targets: forward <= 1.05x, statistics <= 1.15x, APGD ratio >= {1 / 1.05:.3f}x. Fastest setting without "
          f"flips: {best[0] if best else 'none (every fast setting changes some band decisions)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
