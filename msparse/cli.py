"""The command line: ``python -m msparse <command> ...`` (also installed as ``msparse``).

Commands: list-models, calibrate, evaluate, sweep, results, demo, book, train. Bad input (any
:class:`~msparse.errors.MsparseError`) gives one line on stderr and exit code 2 (``--debug`` shows the
traceback instead); any other exception is a bug and propagates as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import torch

from . import book as _book
from . import demo as _demo
from ._device import resolve_device
from .core.calibration import calibrate
from .core.placement import base_model, set_alpha, set_backward, sites, sparsify
from .data import load_data
from .errors import DataError, MsparseError, UsageError
from .evaluation.evaluate import DEFAULT_BATCH_SIZE, evaluate
from .evaluation.executor import cluster_arg
from .evaluation.statsfile import load_stats, save_stats
from .evaluation.store import Store, load_records, to_table
from .evaluation.sweep import sweep
from .evaluation.verify import verify
from .models.front import default_placement, is_random
from .models.front import load as front_load
from .models.registry import list_models
from .training import cli as _train_cli

PROG = "msparse"

EPILOG = """\
examples:
  # which models are available
  python -m msparse list-models

  # per-channel statistics of every site, on the un-augmented training set (done once per model)
  python -m msparse calibrate --model Peng2023Robust --placement Peng2023Robust/cifar10/Linf/v1 \\
      --data cifar10:train --out stats/peng.pt

  # clean + APGD-CE accuracy at alpha = 0.25 on the first 1000 test images
  python -m msparse evaluate --model Peng2023Robust --stats stats/peng.pt --alpha 0.25 \\
      --attack apgd-ce --n 1000

  # adaptive check: APGD-CE + APGD-T through an identity backward (BPDA), and the worst case
  python -m msparse evaluate --model Peng2023Robust --stats stats/peng.pt --alpha 0.25 --attack bpda
  python -m msparse evaluate ... --attack worst:apgd,bpda,transfer

  # an alpha sweep, each point compared with the base model on the same images (McNemar test)
  python -m msparse sweep --model Peng2023Robust --stats stats/peng.pt --alphas 0,0.1,0.2,0.3 \\
      --attack apgd --n 500

  # what is already in the results store (numbers are reused, never recomputed)
  python -m msparse results --where attack=apgd-ce

attacks: none, apgd-ce (Table 1), apgd (= APGD-CE then APGD-DLR, appendix), apgd-t, apgd-ce+t,
  fab-t, square, aa (standard AutoAttack), bpda[:<attack>], transfer[:<attack>], worst:<a>,<b>,...
results are stored in $MSPARSE_RESULTS, else <repo>/results (override with --store); a run that
is interrupted resumes from its last finished batch when the same command is run again.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):   # one line, exit 2 (argparse prints usage + message)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------------------------------
# argument types
# --------------------------------------------------------------------------------------------------

#: the most values a ``start:stop:step`` range may give (a step of 1e-9 would otherwise ask for 10^18 points)
MAX_RANGE_VALUES = 10_000


def parse_number(text: str) -> float:
    """'8/255', '0.0313', '.5' -> float; 'inf', 'nan' and numbers beyond a float's range are refused."""
    try:
        v = float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (write e.g. 8/255 or 0.5)") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r} (write e.g. 8/255 or 0.5)")
    return v


def parse_list(text: str) -> list[float]:
    """'0,0.1,0.2' or '0:0.4:0.05' (start:stop:step, stop included) -> list of floats.

    Every value is finite (:func:`parse_number`); a range gives at most :data:`MAX_RANGE_VALUES` values and its
    length is checked before any value is made."""
    text = text.strip()
    if text.count(":") == 2:
        a, b, s = (parse_number(t) for t in text.split(":"))
        if s <= 0 or b < a:
            raise argparse.ArgumentTypeError(f"bad range {text!r}: need start <= stop and step > 0")
        steps = (b - a) / s   # inf when the quotient overflows: refused like any too long range
        n = int(math.floor(steps + 1e-9)) + 1 if steps < MAX_RANGE_VALUES else math.inf
        if n > MAX_RANGE_VALUES:
            many = f"{steps + 1:.6g}" if math.isfinite(steps) else "too many"
            raise argparse.ArgumentTypeError(f"range {text!r} gives {many} values, at most "
                                             f"{MAX_RANGE_VALUES} are allowed: use a larger step or a shorter range")
        return [round(a + i * s, 10) for i in range(n)]
    try:
        values = [parse_number(t) for t in text.split(",") if t.strip()]
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"bad list {text!r}: {e}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"bad list {text!r}: no values (write e.g. 0,0.1,0.2 or 0:0.4:0.05)")
    return values


def parse_names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


# --------------------------------------------------------------------------------------------------
# loading models, data, statistics
# --------------------------------------------------------------------------------------------------

def load_model_arg(spec: str | None, weights: str | None, device, *, dataset: str = "cifar10",
                   threat_model: str = "Linf", model_dir: str = "models", checkpoint=None):
    """``NAME`` (any name of the models' front door :func:`msparse.models.front.load`: the registry's names,
    ``random:<name>``, a ``*.pt`` checkpoint; None = the default model) or ``module:callable`` (a factory
    returning a module); ``weights`` = a state_dict file loaded on top."""
    if spec is not None and ":" in spec and "/" not in spec.split(":", 1)[0] and not Path(spec).exists() \
            and not is_random(spec):
        mod_name, fn_name = spec.split(":", 1)
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            raise UsageError(f"cannot import {mod_name!r} for --model {spec}: {e}") from None
        fn = getattr(mod, fn_name, None)
        if not callable(fn):
            raise UsageError(f"--model {spec}: {mod_name} has no callable {fn_name!r}")
        model = fn()
    else:
        model = front_load(spec, dataset, threat_model, model_dir, checkpoint=checkpoint, device=str(device))
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"--model {spec} did not give a torch.nn.Module")
    if spec is None:
        spec = "default model"
    if weights:
        p = Path(weights)
        if not p.is_file():
            raise UsageError(f"--weights {weights}: no such file")
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:   # whatever the unpickler raises, the file is not a state dict
            raise UsageError(f"--weights {weights}: not a PyTorch state dict ({type(e).__name__})") from None
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        try:
            model.load_state_dict(sd)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise UsageError(f"--weights {weights} does not fit the model: {first}") from None
    return model.to(device).eval()


def load_data_arg(spec: str, n: int | None, start: int = 0):
    """``cifar10:test`` / ``cifar10:train`` / ``cifar100:test`` ... or a ``.pt`` file with tensors
    ``{"x": [N, C, H, W] in [0, 1], "y": [N]}``. Returns (x, y, label)."""
    p = Path(spec)
    if spec.endswith(".pt") or p.is_file():
        if not p.is_file():
            raise UsageError(f"--data {spec}: no such file")
        try:
            d = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:   # whatever the unpickler raises, the file is not a tensor file
            raise UsageError(f"--data {spec}: not a PyTorch tensor file ({type(e).__name__})") from None
        if not isinstance(d, dict) or "x" not in d or "y" not in d:
            raise UsageError(f"--data {spec}: expected a dict with tensors 'x' and 'y'")
        x, y = d["x"], d["y"]
        x, y = x[start:], y[start:]
        if n is not None:
            x, y = x[:n], y[:n]
        return x, y, f"{p.name}[{start}:{start + len(x)}]"
    if ":" not in spec:
        raise UsageError(f"--data {spec!r}: write DATASET:SPLIT (e.g. cifar10:test) or a .pt file")
    ds, split = spec.split(":", 1)
    try:
        x, y, info = load_data(ds, split, n=n, start=start, return_info=True)
    except DataError as e:   # its message explains where to get the data; the first line says what is missing
        raise UsageError(str(e).strip().splitlines()[0]) from None
    return x, y, str(info)


def _load_model(args, device):
    data = getattr(args, "data", "") or ""
    dataset = data.split(":", 1)[0] if ":" in data and not data.endswith(".pt") else "cifar10"
    return load_model_arg(args.model, args.weights, device, dataset=dataset,
                          threat_model=getattr(args, "norm", "Linf"), model_dir=args.model_dir,
                          checkpoint=args.checkpoint)


def resolve_placement(placement: str, model, model_name: str | None, dataset: str,
                      threat_model: str) -> str:
    """``auto`` -> the model's default placement (:func:`msparse.models.front.default_placement`: the paper's
    preset for this model if there is one, v1 first, else ``activations``); anything else is returned unchanged."""
    if placement != "auto":
        return placement
    return default_placement(model, model_name, dataset, threat_model)


def _sparsify(args, model) -> None:
    if args.placement == "none" or sites(model):
        return
    data = getattr(args, "data", "") or ""
    dataset = data.split(":", 1)[0] if ":" in data and not data.endswith(".pt") else "cifar10"
    placement = resolve_placement(args.placement, model, args.model, dataset,
                                  getattr(args, "norm", "Linf"))
    sparsify(model, placement)
    args.placement = placement


def _label(args) -> str:
    return args.model or (f"checkpoint:{args.checkpoint}" if args.checkpoint else "msparse/default")


def _prepare(args, need_stats: bool):
    """Model (sparsified if needed, statistics loaded), data and labels from common arguments."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = _load_model(args, device)
    _sparsify(args, model)
    stats_label = None
    if need_stats:
        if not sites(model):
            raise UsageError("alpha > 0 needs MeanSparse sites: drop --placement none")
        if args.stats:
            stats_label = load_stats(model, args.stats).get("mode")
        elif args.calib_data:
            xc, _, _ = load_data_arg(args.calib_data, args.calib_n)
            calibrate(model, xc, mode=args.stats_mode, batch_size=args.calib_batch_size,
                      progress=True)
            stats_label = args.stats_mode
        else:
            raise UsageError("alpha > 0 needs statistics: pass --stats FILE (from `msparse "
                             "calibrate`) or --calib-data cifar10:train")
    x, y, label = load_data_arg(args.data, args.n, args.start)
    return model, x, y, label, stats_label


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------

def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Plain-text table (percentages for accuracy columns)."""
    def fmt(c, v):
        if v is None:
            return "-"
        if c in ("clean", "robust", "d_clean", "d_robust") and isinstance(v, float):
            return f"{100 * v:+.2f}" if c.startswith("d_") else f"{100 * v:.2f}"
        if c in ("p_robust", "p_clean") and isinstance(v, float):
            return f"{v:.3g}"
        if c == "eps" and isinstance(v, float):
            k = round(v * 255)
            return f"{k}/255" if k and abs(k / 255 - v) < 1e-9 and v < 1 else f"{v:.4g}"
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)
    cells = [[fmt(c, r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
              for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _result_row(r, extra: dict | None = None) -> dict:
    sites = r.spec.get("sites") or {}
    al = sorted({s["alpha"] for s in sites.values()})
    row = {"attack": r.attack, "eps": None if r.attack == "none" else r.eps,
           "alpha": (al[0] if len(al) == 1 else "mixed") if al else 0.0,
           "n": r.n, "clean": r.clean_acc, "robust": r.robust_acc,
           "robust 95% CI": f"[{100 * r.robust_ci[0]:.1f}, {100 * r.robust_ci[1]:.1f}]",
           "cached": "yes" if r.cached else "no", "key": r.key[:12]}
    row.update(extra or {})
    return row


# --------------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------------

def cmd_list_models(args) -> int:
    for name in list_models():
        print(name)
    return 0


def cmd_calibrate(args) -> int:
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = _load_model(args, device)
    _sparsify(args, model)
    if not sites(model):
        raise UsageError("calibrate needs MeanSparse sites: do not pass --placement none")
    x, _, label = load_data_arg(args.data, args.n, args.start)
    summary = calibrate(model, x, mode=args.mode, batch_size=args.batch_size, progress=True)
    save_stats(model, args.out, model=_label(args), placement=args.placement, mode=args.mode,
               data=label)
    n_sites = len(sites(model))
    print(f"statistics of {n_sites} sites ({args.mode}, {label}) written to {args.out}")
    if isinstance(summary, dict) and summary.get("seconds") is not None:
        print(f"pass took {summary['seconds']:.1f} s")
    return 0


def _eval_kwargs(args) -> dict:
    store: Any = False if args.no_store else (Store(args.store) if args.store else None)
    return dict(norm=args.norm, seed=args.seed, batch_size=args.batch_size, n_iter=args.n_iter,
                n_restarts=args.n_restarts, n_queries=args.n_queries, store=store)


def cmd_evaluate(args) -> int:
    model, x, y, label, stats_label = _prepare(args, need_stats=args.alpha > 0)
    if sites(model):
        set_alpha(model, args.alpha)
        set_backward(model, args.backward)
    res = evaluate(model, x, y, args.attack, eps=args.eps, name=_label(args), data=label,
                   stats=stats_label, tags={"placement": args.placement},
                   progress=not args.quiet, **_eval_kwargs(args))
    if args.base and args.alpha > 0:
        with base_model(model):
            base = evaluate(model, x, y, args.attack, eps=args.eps, name=_label(args), data=label,
                            progress=not args.quiet, **_eval_kwargs(args))
        rows = [_result_row(base, {"alpha": 0.0}), _result_row(res, _paired(res, base))]
    else:
        rows = [_result_row(res)]
    cols = ["attack", "eps", "alpha", "n", "clean", "robust", "robust 95% CI"]
    if len(rows) > 1:
        cols += ["d_robust", "p_robust"]
    print(format_table(rows, cols + ["cached", "key"]))
    _print_warnings(res)
    return 0


def _paired(res, base) -> dict:
    p = res.compare(base)
    return {"d_robust": p.delta, "p_robust": p.p_value, "gained": p.gained, "lost": p.lost}


def _print_warnings(res) -> None:
    for msg, count in res.warnings.items():
        print(f"AutoAttack warning ({count}x): {msg}", file=sys.stderr)
    d = res.diagnostics
    if d.get("zero_grad"):
        print(f"note: {100 * d['zero_grad']:.1f}% of the checked images have an exactly zero input "
              "gradient (gradient masking): run an adaptive attack, e.g. --attack bpda",
              file=sys.stderr)


def cmd_sweep(args) -> int:
    need = any(a > 0 for a in args.alphas)
    if args.stats_modes and not args.calib_data:
        raise UsageError("--stats-modes recalibrates: pass --calib-data cifar10:train")
    model, x, y, label, stats_label = _prepare(args, need_stats=need and not args.stats_modes)
    calib = None
    if args.stats_modes:
        calib, _, _ = load_data_arg(args.calib_data, args.calib_n)
    sw = sweep(model, x, y, alphas=args.alphas, eps=args.eps_grid or [args.eps], attack=args.attack,
               sites=None if args.sites == "all" else args.sites, centres=args.centres,
               stats=args.stats_modes, calib_data=calib, calib_batch_size=args.calib_batch_size,
               backward=args.backward_modes, name=_label(args), data=label,
               tags={"placement": args.placement}, cluster=_executor_arg(args),
               progress=not args.quiet, **_eval_kwargs(args))
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


def _distinguishing(rec: dict) -> dict:
    """What tells two records of the same model, attack, ε and α apart in the listing: the attack's iterations,
    the sites' centre and backward ("mixed" when sites differ), and the data split (test / train)."""
    sites = list((rec["spec"].get("sites") or {}).values())

    def one(field):
        vals = {s.get(field) for s in sites}
        return "-" if not vals else (vals.pop() if len(vals) == 1 else "mixed")

    data = str((rec.get("meta") or {}).get("data") or "")
    split = data.split()[0].split("/")[-1] if "/" in data.split(" ")[0] else "-"
    return {"iters": (rec["spec"].get("attack") or {}).get("n_iter"), "centre": one("centre"),
            "backward": one("backward"), "split": split}


def cmd_plan(args) -> int:
    from .experiments import plan

    items = plan.paper_plan(args.n, models=args.models, pages=args.pages)
    tflops = plan.GPU_TFLOPS if args.gpu_tflops is None else args.gpu_tflops
    stored = plan.stored_counts(items, Store(args.store or None), args.random_weights)
    cost = None if args.no_measure else plan.measure_cost()
    rows = []
    for it, have in zip(items, stored):
        rows.append({"page": it.page, "model": it.model, "data": it.dataset, "attack": it.attack, "eps": it.eps,
                     "alphas": ",".join(f"{a:g}" for a in it.alphas), "x": it.variants, "records": it.records,
                     "n": it.n, "stored": have, "GPU-h": round(plan.estimate(it, args.n_iter, tflops), 2),
                     "CPU-h here": None if cost is None else round(plan.estimate_here(it, cost, args.n_iter), 1),
                     "book": "yes" if it.in_book else "no", "what": it.what})
    print(format_table(rows, ["page", "model", "data", "attack", "eps", "alphas", "x", "records", "n", "stored",
                              "GPU-h", "CPU-h here", "book", "what"]))
    total = sum(r["GPU-h"] for r in rows)
    book = sum(r["GPU-h"] for r in rows if r["book"] == "yes")
    print(f"{sum(it.records for it in items)} records, about {total:.0f} GPU-hours ({book:.0f} for the book's items) "
          f"at an assumed {tflops:g} TFLOP/s sustained, {args.n_iter} iterations (an estimate: measured forward "
          f"FLOPs x passes per attack; see msparse.experiments.plan)")
    if cost is not None:
        c = cost
        print(f"measured here: {1e3 * c['s_per_image_pass']:.2f} ms per image per forward+backward of {c['model']} "
              f"({c['gflops_fwd']:.4f} GFLOPs forward) = {c['gflops_per_s']:.1f} GFLOP/s on {c['threads']} CPU "
              "thread(s); CPU-h here = that time scaled by the FLOP ratio")
    if args.run:
        done = plan.run_plan(items, n_iter=args.n_iter, cluster=_executor_arg(args), random_weights=args.random_weights,
                             results_dir=args.store, device=args.device, n_train=args.n_train,
                             progress=not args.quiet)
        for it, status in done:
            print(f"{it.page:9s} {it.model:40s} {it.attack:10s} {status}")
    return 0


def cmd_results(args) -> int:
    action = getattr(args, "action", None) or "list"
    if action == "verify":
        return cmd_results_verify(args)
    if action == "migrate":
        return cmd_results_migrate(args)
    if action == "repair":
        return cmd_results_repair(args)
    where = {}
    for w in args.where or []:
        if "=" not in w:
            raise UsageError(f"--where {w!r}: write FIELD=VALUE, e.g. attack=apgd-ce")
        k, v = w.split("=", 1)
        try:
            val: Any = parse_number(v)
        except argparse.ArgumentTypeError:
            val = v
        where[k.strip()] = val
    st = Store(args.store or None)
    recs = load_records(st, **where)
    if not recs:
        print(f"no records in {st.root}" + (f" matching {where}" if where else ""))
        return 0
    rows = to_table(recs).to_dict("records")
    for r, rec in zip(rows, recs):
        r.update(_distinguishing(rec))
    rows.sort(key=lambda r: (str(r["model"]), str(r["attack"]), r["eps"] or 0,
                             -1.0 if r["alpha"] == "mixed" else r["alpha"], r["iters"] or 0, str(r["split"])))
    for r in rows:
        r["key"] = r["key"][:12]
        r["device"] = str(r["device"] or "-").split(" (")[0]
    cols = ["model", "attack", "eps", "iters", "alpha", "n_sites", "centre", "backward", "split", "n", "clean",
            "robust", "torch", "device", "key"]
    print(format_table(rows, cols))
    print(f"{len(rows)} records in {st.root}")
    return 0


def cmd_results_verify(args) -> int:
    st = Store(args.store or None)
    if args.sample is not None and args.keys:
        raise UsageError("give either --sample K or record keys, not both")
    checks = verify(st, args.keys or None, sample=args.sample, seed=args.seed, max_cost=args.max_cost,
                    device=str(resolve_device(args.device)))   # nothing to check: InputError (one line, exit 2)
    n = {s: sum(c.status == s for c in checks) for s in ("agree", "disagree", "cannot rebuild", "corrupted")}
    print(f"{n['agree']} agree, {n['disagree']} disagree, {n['cannot rebuild']} could not be rebuilt, "
          f"{n['corrupted']} corrupted (of {len(checks)} records)")
    return 0 if n["agree"] == len(checks) else 1


def cmd_results_repair(args) -> int:
    st = Store(args.store or None)
    done = st.repair()
    for p in done:
        print(f"moved aside: {p.name} -> {p.name}.corrupt")
    for p, why in done.failed:
        print(f"NOT moved: {p.name} could not be moved aside ({why})")
    for p, why in done.left:
        print(f"left as it is: {p.name} ({why})")
    print(f"{st.root}: {len(done)} corrupted record file(s) moved aside (recomputed when next needed), "
          f"{len(done.failed)} could not be moved, {len(done.left)} left as they are")
    return 1 if done.failed or done.left else 0


def cmd_results_migrate(args) -> int:
    from .evaluation.verify import migrate

    st = Store(args.store or None)
    done = migrate(st)   # a read-only store: StoreError before anything changes (one line, exit 2)
    for key, model, why in done.not_rebuilt:
        print(f"  left as it is: {key[:12]} ({model or 'no model name'}): {why}")
    for old, new in done.conflicts:
        print(f"  conflict: {old[:12]} -> {new[:12]} already holds another result; both kept")
    for name, why in done.unreadable:
        print(f"  unreadable: {name}: {why}")
    n = done.counts()
    print(f"{st.root}: {n['migrated']} records rewritten under their schema-3 key (architecture in the key), "
          f"{n['already_present']} already present, {n['current']} current, {n['not_rebuilt']} could not be "
          f"rebuilt (left as they are), {n['conflicts']} conflicts, {n['unreadable']} unreadable; "
          f"{n['relabelled']} records' labels now cite current keys")
    return 1 if done.unreadable or done.conflicts else 0


# --------------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------------

def _debug_flag(p):
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks on errors")


def _common_model(p, *, stats=True):
    _debug_flag(p)
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="registry name (see list-models; default: the package's robust CIFAR-10 "
                        "ResNet-18) or module:factory returning a torch module")
    g.add_argument("--checkpoint", help="a ResNet-18 family checkpoint (its model card beside it)")
    g.add_argument("--model-dir", default="models",
                   help="folder of downloaded checkpoints: <dir>/<dataset>/<threat>/<name>.pt")
    g.add_argument("--weights", help="state_dict file to load into the model (torch.load with "
                                     "weights_only=True)")
    g.add_argument("--placement", default="auto",
                   help="where MeanSparse goes: 'auto' (the paper's preset for this model if there "
                        "is one, else 'activations'), 'activations' (before every activation "
                        "module), a preset key (msparse.PRESETS), or 'none'; ignored when the "
                        "model already has sites")
    if stats:
        g.add_argument("--stats", help="statistics file written by `msparse calibrate`")
        g.add_argument("--calib-data", help="calibrate in this run on DATASET:SPLIT instead, e.g. "
                                            "cifar10:train (no augmentation)")
        g.add_argument("--calib-n", type=_positive_int, help="number of calibration images (default all)")
        g.add_argument("--stats-mode", choices=("exact", "official"), default="exact",
                       help="statistics estimator for --calib-data (default exact)")
        g.add_argument("--calib-batch-size", type=_positive_int, default=512)
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    g.add_argument("--threads", type=_positive_int, help="torch CPU threads (>= 1)")


def _common_data(p, default_n=None):
    g = p.add_argument_group("data")
    g.add_argument("--data", default="cifar10:test",
                   help="DATASET:SPLIT (cifar10:test, cifar10:train, cifar100:test, imagenet:test) "
                        "or a .pt file with tensors x, y (default cifar10:test)")
    g.add_argument("--n", type=_positive_int, default=default_n,
                   help="number of images (default: all)")
    g.add_argument("--start", type=_nonneg_int, default=0, help="index of the first image")


def _common_attack(p):
    g = p.add_argument_group("attack")
    g.add_argument("--attack", default="apgd-ce", help="attack name (see below; default apgd-ce)")
    g.add_argument("--eps", type=parse_number, default=8 / 255,
                   help="radius for pixels in [0, 1], e.g. 8/255 or 0.5 (default 8/255)")
    g.add_argument("--norm", choices=("Linf", "L2"), default="Linf")
    g.add_argument("--seed", type=_seed, default=0, help="AutoAttack seed, 0 to 2^63 - 1 (default 0)")
    g.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                   help=f"images per batch = per resumable shard (default {DEFAULT_BATCH_SIZE}, as the book)")
    g.add_argument("--n-iter", type=_positive_int, default=100, help="APGD/FAB iterations (100)")
    g.add_argument("--n-restarts", type=_positive_int, default=1, help="APGD-CE/DLR restarts (1)")
    g.add_argument("--n-queries", type=_positive_int, default=5000, help="Square queries (5000)")
    g = p.add_argument_group("results")
    g.add_argument("--store", type=_store_folder,
                   help="results folder (default $MSPARSE_RESULTS or <repo>/results)")
    g.add_argument("--no-store", action="store_true", help="neither read nor write records")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def _cluster_options(p, shards: bool = True):
    g = p.add_argument_group("scale-out (Dask; pip install \"msparse[cluster]\")")
    g.add_argument("--cluster", type=cluster_arg, default=None,
                   help="where the points are computed: in-process (default), local:N (N Dask workers here), "
                        "a scheduler address tcp://host:8786, or slurm:N (dask-jobqueue); default "
                        "$MSPARSE_CLUSTER. Workers write records into the shared --store")
    g.add_argument("--cluster-timeout", type=_positive_number, default=None, metavar="SECONDS",
                   help="the longest one wait on the Dask scheduler may take (connecting, a reply, a result) "
                        "before the run fails naming it; default $MSPARSE_CLUSTER_TIMEOUT, else 60")
    if shards:
        g.add_argument("--shard-size", type=_positive_int, default=None,
                       help="split each point into index shards of this many images (rounded down to a "
                            "multiple of --batch-size), each a record of its own, merged exactly")


def _executor_arg(args):
    """The executor of --cluster/--shard-size (None: the sweep engine's default)."""
    from .evaluation.executor import Executor, get_executor

    cluster, shard = getattr(args, "cluster", None), getattr(args, "shard_size", None)
    timeout = getattr(args, "cluster_timeout", None)
    if cluster is None and shard is None and timeout is None:
        return None
    ex = get_executor(cluster)
    return Executor(ex.spec, shard_size=shard, timeout=timeout) if shard or timeout is not None else ex


def _store_folder(text: str) -> str:
    """``--store DIR``: a folder name; an empty one is refused (it would silently mean the working folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("--store needs a folder, got an empty name; pass a folder (e.g. --store "
                                         "results), or leave --store out for the default store")
    return text


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


#: the largest seed the command line takes (a signed 64-bit integer, what every generator seeded from it holds)
MAX_SEED = 2**63 - 1


def _seed(text: str) -> int:
    v = _nonneg_int(text)
    if v > MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be at most 2^63 - 1 = {MAX_SEED}, got {v}")
    return v


def _positive_number(text: str) -> float:
    v = parse_number(text)   # finite
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return v


def _out_file(text: str) -> str:
    """A file path to write (``--out``): not empty, not a folder, and no file where one of its folders goes."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty file name: give a file to write, e.g. stats/model.pt")
    p = Path(text)
    if p.is_dir() or text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder: give a file name in it, e.g. {p / 'stats.pt'}")
    above = next((d for d in p.parents if d.exists()), None)
    if above is not None and not above.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {above} is a file, not a folder; choose another path")
    return text


def _alpha(text: str) -> float:
    v = parse_number(text)
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"alpha must be a finite number >= 0, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog=PROG, formatter_class=fmt, epilog=EPILOG,
                description="MeanSparse reproduction: sparsify, calibrate and evaluate robust models "
                            "under AutoAttack, adaptive (BPDA, transfer) attacks and sweeps.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="command", parser_class=_Parser)

    s = sub.add_parser("list-models", help="models of the registry", formatter_class=fmt,
                       description="Print the model names `--model` accepts, one per line: the models shipped "
                                   "with the package (msparse/..., pyautoattack/..., usable offline) first, then "
                                   "the RobustBench entries (their weights are downloaded on first use).")
    _debug_flag(s)
    s.set_defaults(func=cmd_list_models)

    s = sub.add_parser("calibrate", help="collect per-channel statistics of every site",
                       formatter_class=fmt, epilog=EPILOG)
    _common_model(s, stats=False)
    g = s.add_argument_group("statistics")
    g.add_argument("--data", default="cifar10:train",
                   help="DATASET:SPLIT or .pt file (default cifar10:train, no augmentation)")
    g.add_argument("--n", type=_positive_int, help="number of images (default: all)")
    g.add_argument("--start", type=_nonneg_int, default=0)
    g.add_argument("--mode", choices=("exact", "official"), default="exact",
                   help="exact (float64, population variance) or official (average of per-batch "
                        "statistics, as the released checkpoints)")
    g.add_argument("--batch-size", type=_positive_int, default=512)
    g.add_argument("--out", type=_out_file, required=True, help="statistics file to write")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("evaluate", help="clean and robust accuracy of one configuration",
                       formatter_class=fmt, epilog=EPILOG)
    _common_model(s)
    _common_data(s)
    s.add_argument("--alpha", type=_alpha, default=0.0, help="alpha at every site (default 0 = base)")
    s.add_argument("--backward", choices=("exact", "identity"), default="exact",
                   help="MeanSparse backward during the attack (identity = BPDA; default exact)")
    s.add_argument("--base", action="store_true",
                   help="also evaluate the base model (alpha = 0) and test the difference")
    _common_attack(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sweep", help="a grid of alphas/eps/sites/centres/statistics/backward modes",
                       formatter_class=fmt, epilog=EPILOG)
    _common_model(s)
    _common_data(s)
    g = s.add_argument_group("grid")
    g.add_argument("--alphas", type=parse_list, default=[0.0, 0.1, 0.2, 0.3],
                   help="comma list or start:stop:step, e.g. 0:0.4:0.05 (default 0,0.1,0.2,0.3)")
    g.add_argument("--eps-grid", type=lambda t: [parse_number(v) for v in t.split(",")],
                   help="comma list of eps, e.g. 1/255,2/255,4/255 (default: --eps)")
    g.add_argument("--sites", default="all", choices=("all", "single", "cumulative", "tags"),
                   help="site subsets: all, single (one site at a time), cumulative, tags "
                        "(main path vs after addition)")
    g.add_argument("--centres", type=parse_names, help="centre references, e.g. mean,zero,global")
    g.add_argument("--stats-modes", type=parse_names,
                   help="statistics modes, e.g. exact,official (recalibrates on --calib-data)")
    g.add_argument("--backward-modes", type=parse_names, help="e.g. exact,identity")
    _common_attack(s)
    _cluster_options(s)
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("plan", help="every record the paper's tables need, with estimated GPU-hours; --run "
                                    "computes them (on a cluster)", formatter_class=fmt,
                       description="List every record the paper's tables need on the paper's models (its α grids "
                                   "and attacks, the full test set, 100 iterations) with estimated GPU-hours "
                                   "(measured FLOPs × passes / an assumed GPU throughput); --run computes the "
                                   "book's items through the book's own functions (RobustBench checkpoints must "
                                   "already be in models/<dataset>/<threat>/<name>.pt under the working folder, "
                                   "where the book's pages read them; nothing is downloaded).")
    _debug_flag(s)
    s.add_argument("what", choices=("paper",), help="the plan: paper (every table of the paper)")
    s.add_argument("--models", type=parse_names, help="only these models (comma list of registry names)")
    s.add_argument("--pages", type=parse_names, help="only these items, e.g. table1,fig3,adaptive,table8")
    s.add_argument("--n", type=_positive_int, default=None,
                   help="images per evaluation (default: the full test set, 10,000 CIFAR / 5,000 ImageNet)")
    s.add_argument("--n-iter", type=_positive_int, default=100, help="attack iterations (default 100, the paper's)")
    s.add_argument("--n-train", type=_positive_int, default=1000,
                   help="training images for the statistics (default 1000, as the book's pages)")
    s.add_argument("--gpu-tflops", type=_positive_number, default=None,
                   help="assumed sustained GPU throughput in TFLOP/s for the estimate (default 50)")
    s.add_argument("--random-weights", action="store_true",
                   help="the architectures with random weights (tests of the machinery; numbers meaningless)")
    s.add_argument("--run", action="store_true", help="compute the missing records of the book's items")
    s.add_argument("--store", type=_store_folder,
                   help="results folder (default $MSPARSE_RESULTS or <repo>/results)")
    s.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    s.add_argument("--no-measure", action="store_true", help="skip the per-image cost measurement on this machine")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    _cluster_options(s)
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("results", help="list, verify or migrate stored records", formatter_class=fmt,
                       description="List the records of the results store (default: one line per record with "
                                   "model, attack, eps, iterations, alpha, sites, centre, backward, split, n, clean "
                                   "and robust accuracy, torch, device, key), recompute them under the running "
                                   "library versions and compare per example (verify), move damaged files aside "
                                   "(repair), or rewrite records of the old key format once (migrate).")
    _debug_flag(s)
    s.add_argument("--store", type=_store_folder,
                   help="results folder (default $MSPARSE_RESULTS or <repo>/results)")
    s.add_argument("--where", action="append", metavar="FIELD=VALUE",
                   help="filter, e.g. --where attack=apgd-ce --where model=Peng2023Robust")
    s.set_defaults(func=cmd_results, action="list")
    rsub = s.add_subparsers(dest="action", metavar="{list,verify,migrate,repair}")
    def action(name, help, description=None):
        a = rsub.add_parser(name, help=help, description=description, formatter_class=fmt)
        a.add_argument("--store", default=argparse.SUPPRESS, type=_store_folder, help="results folder")
        _debug_flag(a)
        return a

    r = action("list", "list stored records (the default)")
    r.add_argument("--where", action="append", metavar="FIELD=VALUE", default=argparse.SUPPRESS,
                   help="filter, e.g. --where attack=apgd-ce")
    r = action("verify", "recompute records under the running install; compare every example's flags",
               "Rebuild each record's experiment from the record alone (model, images, statistics, sites, "
               "attack, seed, batch size), recompute it without touching the store, and report per record how "
               "many examples' clean and robust flags agree and whether the numbers readers see (counts, "
               "accuracies, intervals) are the recomputed ones. Exit status 1 on any disagreement, record that "
               "could not be rebuilt or stored record that does not verify; 2 when there is no record to check.")
    r.add_argument("keys", nargs="*", metavar="KEY", help="record keys or unique prefixes (default: all)")
    r.add_argument("--sample", type=_positive_int, help="check K records drawn at random (--seed)")
    r.add_argument("--seed", type=_seed, default=0, help="seed of --sample (default 0)")
    r.add_argument("--max-cost", type=_positive_number,
                   help="only records costing at most this many image-iterations (e.g. 2000)")
    r.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    action("repair", "move record files that do not verify aside (*.corrupt)",
           "Reading the store never changes it; this moves every record file whose checksum, key or JSON does "
           "not verify (numbers that disagree with the record's per-image flags included) to <file>.corrupt, so "
           "the next evaluation that needs it recomputes it. Links and other non-regular entries are neither "
           "followed nor moved, only listed. Exit status 1 when anything could not be moved or was left.")
    action("migrate", "rewrite records of older key formats under their current key (re-runnable)",
           "Rewrite every record of an older schema (1: torch/pyautoattack versions in its key; 2: the key named "
           "the weights but not the architecture) as a schema-3 record: the model each record names is rebuilt "
           "here, its weights checked against the record, its architecture fingerprint added to the key; same "
           "results, meta and provenance, every old key kept in provenance.key_history. Nothing is recomputed. "
           "Records whose model cannot be rebuilt are left as they are and listed; an old file is removed only "
           "once its record reads back under the new key. Exit status 1 on conflicts or unreadable files.")

    s = sub.add_parser("demo", help="MeanSparse on the shipped offline default, paper vs BPDA evaluation",
                       formatter_class=fmt, description=_demo.__doc__)
    _demo.add_arguments(s)
    _debug_flag(s)
    s.set_defaults(func=_demo.main)

    s = sub.add_parser("book", help="execute the notebooks (papermill) and build the book (offline)",
                       formatter_class=fmt, description=_book.__doc__)
    _book.add_arguments(s)
    _debug_flag(s)
    s.set_defaults(func=_book.run)

    s = sub.add_parser("train", help="adversarial training (PGD-AT, TRADES, ANCRA) of a ResNet-18",
                       formatter_class=fmt,
                       description="Adversarially train a ResNet-18 of the appendix family (PGD-AT, TRADES or "
                                   "ANCRA) on CIFAR-10 and write its checkpoint with a model card beside it; "
                                   "the checkpoint then loads with `--checkpoint` or, once registered, `--model`.")
    _train_cli.add_arguments(s)
    s.set_defaults(func=_train_cli.main)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input, 130 interrupted).

    Only an :class:`~msparse.errors.MsparseError` is reported as bad input (one line, exit 2); every other
    exception is a bug and propagates with its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished batches are saved, run the same command again to "
              "resume", file=sys.stderr)
        return 130
    except MsparseError as e:
        if args.debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"{PROG} {args.command}: error: {msg} (--debug for the traceback)", file=sys.stderr)
        return 2
