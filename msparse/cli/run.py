"""The commands of one configuration: ``calibrate`` (per-channel statistics of every MeanSparse site, written
to a statistics file; :func:`msparse.core.calibration.calibrate`) and ``evaluate`` (clean and robust accuracy
at one α, optionally beside the base model with a McNemar test; :func:`msparse.evaluation.evaluate.evaluate`).
"""
from __future__ import annotations

import torch

from .._device import resolve_device
from ..core.calibration import calibrate
from ..core.placement import base_model, set_alpha, set_backward, sites
from ..errors import UsageError
from ..evaluation.evaluate import evaluate
from ..evaluation.statsfile import save_stats
from . import options
from .loading import load_data_arg, model_from_args, model_label, prepare, sparsify_from_args
from .output import format_table, paired, print_warnings, result_row


def cmd_calibrate(args) -> int:
    """``msparse calibrate``: statistics of every site on ``--data``, written to ``--out``."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = model_from_args(args, device)
    sparsify_from_args(args, model)
    if not sites(model):
        raise UsageError("calibrate needs MeanSparse sites: do not pass --placement none")
    x, _, label = load_data_arg(args.data, args.n, args.start)
    summary = calibrate(model, x, mode=args.mode, batch_size=args.batch_size, progress=True)
    save_stats(model, args.out, model=model_label(args), placement=args.placement, mode=args.mode,
               data=label)
    n_sites = len(sites(model))
    print(f"statistics of {n_sites} sites ({args.mode}, {label}) written to {args.out}")
    if isinstance(summary, dict) and summary.get("seconds") is not None:
        print(f"pass took {summary['seconds']:.1f} s")
    return 0


def cmd_evaluate(args) -> int:
    """``msparse evaluate``: one configuration (and with ``--base`` the base model on the same images)."""
    model, x, y, label, stats_label = prepare(args, need_stats=args.alpha > 0)
    if sites(model):
        set_alpha(model, args.alpha)
        set_backward(model, args.backward)
    res = evaluate(model, x, y, args.attack, eps=args.eps, name=model_label(args), data=label,
                   stats=stats_label, tags={"placement": args.placement},
                   progress=not args.quiet, **options.eval_kwargs(args))
    if args.base and args.alpha > 0:
        with base_model(model):
            base = evaluate(model, x, y, args.attack, eps=args.eps, name=model_label(args), data=label,
                            progress=not args.quiet, **options.eval_kwargs(args))
        rows = [result_row(base, {"alpha": 0.0}), result_row(res, paired(res, base))]
    else:
        rows = [result_row(res)]
    cols = ["attack", "eps", "alpha", "n", "clean", "robust", "robust 95% CI"]
    if len(rows) > 1:
        cols += ["d_robust", "p_robust"]
    print(format_table(rows, cols + ["cached", "key"]))
    print_warnings(res)
    return 0


def add_parsers(sub) -> None:
    """Register ``calibrate`` and ``evaluate`` on the sub-parsers ``sub``."""
    fmt = options.FORMATTER
    s = sub.add_parser("calibrate", help="collect per-channel statistics of every site",
                       formatter_class=fmt, epilog=options.EPILOG)
    options.common_model(s, stats=False)
    g = s.add_argument_group("statistics")
    g.add_argument("--data", default="cifar10:train",
                   help="DATASET:SPLIT or .pt file (default cifar10:train, no augmentation)")
    g.add_argument("--n", type=options.positive_int, help="number of images (default: all)")
    g.add_argument("--start", type=options.nonneg_int, default=0)
    g.add_argument("--mode", choices=("exact", "official"), default="exact",
                   help="exact (float64, population variance) or official (average of per-batch "
                        "statistics, as the released checkpoints)")
    g.add_argument("--batch-size", type=options.positive_int, default=512)
    g.add_argument("--out", type=options.out_file, required=True, help="statistics file to write")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("evaluate", help="clean and robust accuracy of one configuration",
                       formatter_class=fmt, epilog=options.EPILOG)
    options.common_model(s)
    options.common_data(s)
    s.add_argument("--alpha", type=options.alpha, default=0.0, help="alpha at every site (default 0 = base)")
    s.add_argument("--backward", choices=("exact", "identity"), default="exact",
                   help="MeanSparse backward during the attack (identity = BPDA; default exact)")
    s.add_argument("--base", action="store_true",
                   help="also evaluate the base model (alpha = 0) and test the difference")
    options.common_attack(s)
    s.set_defaults(func=cmd_evaluate)
