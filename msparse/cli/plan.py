"""The ``plan`` command: every record the paper's tables need, with its estimated GPU-hours and what the store
already holds (:mod:`msparse.experiments.plan`); ``--run`` computes the book's items through the book's own
functions, in-process or on a cluster."""
from __future__ import annotations

from ..evaluation.store import Store
from . import options
from .output import format_table


def cmd_plan(args) -> int:
    """``msparse plan paper``: the plan's table and totals; with ``--run`` one status line per item."""
    from ..experiments import plan

    items = plan.paper_plan(args.n, models=args.models, pages=args.pages)
    tflops = plan.GPU_TFLOPS if args.gpu_tflops is None else args.gpu_tflops
    stored = plan.stored_counts(items, Store(args.store or None), args.random_weights)
    cost = None if args.no_measure else plan.measure_cost()
    reach, source = (plan.CASCADE_REACH, plan.CASCADE_REACH_SOURCE) if args.reach is None else \
        plan.reach_from_bench(args.reach)
    cascaded = plan.estimate_cascade(items, args.n_iter, tflops, reach)
    rows = []
    for it, have, gpu_c in zip(items, stored, cascaded):
        rows.append({"page": it.page, "model": it.model, "data": it.dataset, "attack": it.attack, "eps": it.eps,
                     "alphas": ",".join(f"{a:g}" for a in it.alphas), "x": it.variants, "records": it.records,
                     "n": it.n, "stored": have, "GPU-h": round(plan.estimate(it, args.n_iter, tflops), 2),
                     "GPU-h cascade": round(gpu_c, 2),
                     "CPU-h here": None if cost is None else round(plan.estimate_here(it, cost, args.n_iter), 1),
                     "book": "yes" if it.in_book else "no", "what": it.what})
    print(format_table(rows, ["page", "model", "data", "attack", "eps", "alphas", "x", "records", "n", "stored",
                              "GPU-h", "GPU-h cascade", "CPU-h here", "book", "what"]))
    total = sum(r["GPU-h"] for r in rows)
    book = sum(r["GPU-h"] for r in rows if r["book"] == "yes")
    print(f"{sum(it.records for it in items)} records, about {total:.0f} GPU-hours ({book:.0f} for the book's items) "
          f"at an assumed {tflops:g} TFLOP/s sustained, {args.n_iter} iterations (an estimate: measured forward "
          f"FLOPs x passes per attack; see msparse.experiments.plan)")
    n_casc = sum(1 for v in plan.cascade_stages(items, args.n_iter).values() if len(v) > 1)
    print(f"as cascades (the worst case at each of the {n_casc} points where several attacks meet, cheapest first, "
          f"each on the images still standing): about {sum(r['GPU-h cascade'] for r in rows):.0f} GPU-hours "
          f"({sum(r['GPU-h cascade'] for r in rows if r['book'] == 'yes'):.0f} for the book's items) instead of "
          f"{total:.0f}; share of images reaching stage 1, 2, ...: {', '.join(f'{v:.2f}' for v in reach)} "
          f"(measured: {source})")
    if cost is not None:
        c = cost
        print(f"measured here: {1e3 * c['s_per_image_pass']:.2f} ms per image per forward+backward of {c['model']} "
              f"({c['gflops_fwd']:.4f} GFLOPs forward) = {c['gflops_per_s']:.1f} GFLOP/s on {c['threads']} CPU "
              "thread(s); CPU-h here = that time scaled by the FLOP ratio")
    if args.run:
        done = plan.run_plan(items, n_iter=args.n_iter, cluster=options.executor_arg(args),
                             random_weights=args.random_weights, results_dir=args.store, device=args.device,
                             n_train=args.n_train, progress=not args.quiet)
        for it, status in done:
            print(f"{it.page:9s} {it.model:40s} {it.attack:10s} {status}")
    return 0


def add_parsers(sub) -> None:
    """Register ``plan`` on the sub-parsers ``sub``."""
    s = sub.add_parser("plan", help="every record the paper's tables need, with estimated GPU-hours; --run "
                                    "computes them (on a cluster)", formatter_class=options.FORMATTER,
                       description="List every record the paper's tables need on the paper's models (its α grids "
                                   "and attacks, the full test set, 100 iterations) with estimated GPU-hours "
                                   "(measured FLOPs × passes / an assumed GPU throughput); --run computes the "
                                   "book's items through the book's own functions (RobustBench checkpoints must "
                                   "already be in models/<dataset>/<threat>/<name>.pt under the working folder, "
                                   "where the book's pages read them; nothing is downloaded).")
    options.debug_flag(s)
    s.add_argument("what", choices=("paper",), help="the plan: paper (every table of the paper)")
    s.add_argument("--models", type=options.parse_names, help="only these models (comma list of registry names)")
    s.add_argument("--pages", type=options.parse_names, help="only these items, e.g. table1,fig3,adaptive,table8")
    s.add_argument("--n", type=options.positive_int, default=None,
                   help="images per evaluation (default: the full test set, 10,000 CIFAR / 5,000 ImageNet)")
    s.add_argument("--n-iter", type=options.positive_int, default=100,
                   help="attack iterations (default 100, the paper's)")
    s.add_argument("--n-train", type=options.positive_int, default=1000,
                   help="training images for the statistics (default 1000, as the book's pages)")
    s.add_argument("--gpu-tflops", type=options.positive_number, default=None,
                   help="assumed sustained GPU throughput in TFLOP/s for the estimate (default 50)")
    s.add_argument("--random-weights", action="store_true",
                   help="the architectures with random weights (tests of the machinery; numbers meaningless)")
    s.add_argument("--run", action="store_true", help="compute the missing records of the book's items")
    s.add_argument("--store", type=options.store_folder,
                   help="results folder (default $MSPARSE_RESULTS or <repo>/results)")
    s.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    s.add_argument("--reach", metavar="JSON",
                   help="a bench/bench_cascade.py JSON whose msparse/default cascade gives the share of images "
                        "reaching each stage (default: the committed measurement, plan.CASCADE_REACH)")
    s.add_argument("--no-measure", action="store_true", help="skip the per-image cost measurement on this machine")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    options.cluster_options(s)
    s.set_defaults(func=cmd_plan)
