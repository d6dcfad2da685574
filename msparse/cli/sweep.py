"""The ``sweep`` command: a grid of α (and ε, site subsets, centres, statistics modes, backward modes), every
point compared with the base model on the same images (:func:`msparse.evaluation.sweep.sweep`, the one sweep
engine), in-process or scaled out (``--cluster``, ``--shard-size``)."""
from __future__ import annotations

from ..errors import UsageError
from ..evaluation.sweep import sweep
from . import options
from .loading import load_data_arg, model_label, prepare
from .output import format_table


def cmd_sweep(args) -> int:
    """``msparse sweep``: the grid's table, each point's change against the base model and its McNemar p."""
    need = any(a > 0 for a in args.alphas)
    if args.stats_modes and not args.calib_data:
        raise UsageError("--stats-modes recalibrates: pass --calib-data cifar10:train")
    model, x, y, label, stats_label = prepare(args, need_stats=need and not args.stats_modes)
    calib = None
    if args.stats_modes:
        calib, _, _ = load_data_arg(args.calib_data, args.calib_n)
    sw = sweep(model, x, y, alphas=args.alphas, eps=args.eps_grid or [args.eps], attack=args.attack,
               sites=None if args.sites == "all" else args.sites, centres=args.centres,
               stats=args.stats_modes, calib_data=calib, calib_batch_size=args.calib_batch_size,
               backward=args.backward_modes, name=model_label(args), data=label,
               tags={"placement": args.placement}, cluster=options.executor_arg(args),
               progress=not args.quiet, **options.eval_kwargs(args))
    rows = sw.rows()
    axes = [c for c in ("sites", "stats", "centre", "backward") if any(c in r for r in rows)]
    for r in rows:
        r["cached"] = "yes" if r["cached"] else "no"
        r["key"] = r["key"][:12]
        r["+/-"] = f"+{r['gained'] or 0}/-{r['lost'] or 0}"
    cols = axes + ["eps", "alpha", "n", "clean", "robust", "d_clean", "d_robust", "+/-",
                   "p_robust", "cached", "key"]
    print(f"{args.attack} on {label}; d_* = change vs the base model (all alpha = 0) on the same "
          "images, +/- = discordant pairs, p = exact McNemar test")
    print(format_table(rows, cols))
    return 0


def add_parsers(sub) -> None:
    """Register ``sweep`` on the sub-parsers ``sub``."""
    s = sub.add_parser("sweep", help="a grid of alphas/eps/sites/centres/statistics/backward modes",
                       formatter_class=options.FORMATTER, epilog=options.EPILOG)
    options.common_model(s)
    options.common_data(s)
    g = s.add_argument_group("grid")
    g.add_argument("--alphas", type=options.parse_list, default=[0.0, 0.1, 0.2, 0.3],
                   help="comma list or start:stop:step, e.g. 0:0.4:0.05 (default 0,0.1,0.2,0.3)")
    g.add_argument("--eps-grid", type=options.parse_number_list,
                   help="comma list of eps, e.g. 1/255,2/255,4/255 (default: --eps)")
    g.add_argument("--sites", default="all", choices=("all", "single", "cumulative", "tags"),
                   help="site subsets: all, single (one site at a time), cumulative, tags "
                        "(main path vs after addition)")
    g.add_argument("--centres", type=options.parse_names, help="centre references, e.g. mean,zero,global")
    g.add_argument("--stats-modes", type=options.parse_names,
                   help="statistics modes, e.g. exact,official (recalibrates on --calib-data)")
    g.add_argument("--backward-modes", type=options.parse_names, help="e.g. exact,identity")
    options.common_attack(s)
    options.cluster_options(s)
    s.set_defaults(func=cmd_sweep)
