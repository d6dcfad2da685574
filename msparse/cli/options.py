"""The command line's parser class and everything several commands share: the argument types (numbers such as
``8/255``, α lists and ranges, counts, seeds, files, the store folder), the option groups (model, data, attack and
results, scale-out) and the conversion of those options into the keyword arguments of
:func:`msparse.evaluation.evaluate.evaluate` and :mod:`msparse.evaluation.executor`.

An argument error is one line on stderr and exit code 2 (:class:`Parser`); each command's own options live in its
command module (:mod:`msparse.cli`).
"""
from __future__ import annotations

import argparse
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..evaluation.evaluate import DEFAULT_BATCH_SIZE
from ..evaluation.executor import cluster_arg
from ..evaluation.store import Store

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

#: the help formatter of every command (keeps the examples' line breaks)
FORMATTER = argparse.RawDescriptionHelpFormatter


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (argparse prints usage + message) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------------------------------
# argument types
# --------------------------------------------------------------------------------------------------

#: the most values a ``start:stop:step`` range may give (a step of 1e-9 would otherwise ask for 10^18 points)
MAX_RANGE_VALUES = 10_000

#: the largest seed the command line takes (a signed 64-bit integer, what every generator seeded from it holds)
MAX_SEED = 2**63 - 1


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


def parse_number_list(text: str) -> list[float]:
    """'1/255,2/255,4/255' -> list of floats (``--eps-grid``), each value as :func:`parse_number` reads it."""
    return [parse_number(v) for v in text.split(",")]


def parse_names(text: str) -> list[str]:
    """'mean,zero, global' -> ['mean', 'zero', 'global'] (empty parts dropped)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def store_folder(text: str) -> str:
    """``--store DIR``: a folder name; an empty one is refused (it would silently mean the working folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("--store needs a folder, got an empty name; pass a folder (e.g. --store "
                                         "results), or leave --store out for the default store")
    return text


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, batch sizes, iterations)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def nonneg_int(text: str) -> int:
    """An integer >= 0 (indices)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def seed(text: str) -> int:
    """A seed: an integer from 0 to :data:`MAX_SEED`."""
    v = nonneg_int(text)
    if v > MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be at most 2^63 - 1 = {MAX_SEED}, got {v}")
    return v


def positive_number(text: str) -> float:
    """A finite number > 0 (:func:`parse_number`)."""
    v = parse_number(text)   # finite
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return v


def out_file(text: str) -> str:
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


def alpha(text: str) -> float:
    """MeanSparse's α: a finite number >= 0."""
    v = parse_number(text)
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"alpha must be a finite number >= 0, got {text!r}")
    return v


# --------------------------------------------------------------------------------------------------
# option groups several commands share
# --------------------------------------------------------------------------------------------------

def debug_flag(p) -> None:
    """``--debug`` on a sub-command (the top-level flag's value is kept when it is not given there)."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks on errors")


def common_model(p, *, stats=True) -> None:
    """The model (name, checkpoint, weights, placement), optionally its statistics, device and threads."""
    debug_flag(p)
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
        g.add_argument("--calib-n", type=positive_int, help="number of calibration images (default all)")
        g.add_argument("--stats-mode", choices=("exact", "official"), default="exact",
                       help="statistics estimator for --calib-data (default exact)")
        g.add_argument("--calib-batch-size", type=positive_int, default=512)
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    g.add_argument("--threads", type=positive_int, help="torch CPU threads (>= 1)")


def common_data(p, default_n=None) -> None:
    """The evaluation images: ``--data``, ``--n``, ``--start``."""
    g = p.add_argument_group("data")
    g.add_argument("--data", default="cifar10:test",
                   help="DATASET:SPLIT (cifar10:test, cifar10:train, cifar100:test, imagenet:test) "
                        "or a .pt file with tensors x, y (default cifar10:test)")
    g.add_argument("--n", type=positive_int, default=default_n,
                   help="number of images (default: all)")
    g.add_argument("--start", type=nonneg_int, default=0, help="index of the first image")


def common_attack(p) -> None:
    """The attack and its budget, and where results go (read by :func:`eval_kwargs`)."""
    g = p.add_argument_group("attack")
    g.add_argument("--attack", default="apgd-ce", help="attack name (see below; default apgd-ce)")
    g.add_argument("--eps", type=parse_number, default=8 / 255,
                   help="radius for pixels in [0, 1], e.g. 8/255 or 0.5 (default 8/255)")
    g.add_argument("--norm", choices=("Linf", "L2"), default="Linf")
    g.add_argument("--seed", type=seed, default=0, help="AutoAttack seed, 0 to 2^63 - 1 (default 0)")
    g.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                   help=f"images per batch = per resumable shard (default {DEFAULT_BATCH_SIZE}, as the book)")
    g.add_argument("--n-iter", type=positive_int, default=100, help="APGD/FAB iterations (100)")
    g.add_argument("--n-restarts", type=positive_int, default=1, help="APGD-CE/DLR restarts (1)")
    g.add_argument("--n-queries", type=positive_int, default=5000, help="Square queries (5000)")
    g = p.add_argument_group("results")
    g.add_argument("--store", type=store_folder,
                   help="results folder (default $MSPARSE_RESULTS or <repo>/results)")
    g.add_argument("--no-store", action="store_true", help="neither read nor write records")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def cluster_options(p, shards: bool = True) -> None:
    """Scale-out: ``--cluster``, ``--cluster-timeout`` and (optionally) ``--shard-size`` (read by
    :func:`executor_arg`)."""
    g = p.add_argument_group("scale-out (Dask; pip install \"msparse[cluster]\")")
    g.add_argument("--cluster", type=cluster_arg, default=None,
                   help="where the points are computed: in-process (default), local:N (N Dask workers here), "
                        "a scheduler address tcp://host:8786, or slurm:N (dask-jobqueue); default "
                        "$MSPARSE_CLUSTER. Workers write records into the shared --store")
    g.add_argument("--cluster-timeout", type=positive_number, default=None, metavar="SECONDS",
                   help="the longest one wait on the Dask scheduler may take (connecting, a reply, a result) "
                        "before the run fails naming it; default $MSPARSE_CLUSTER_TIMEOUT, else 60")
    if shards:
        g.add_argument("--shard-size", type=positive_int, default=None,
                       help="split each point into index shards of this many images (rounded down to a "
                            "multiple of --batch-size), each a record of its own, merged exactly")


# --------------------------------------------------------------------------------------------------
# options -> call arguments
# --------------------------------------------------------------------------------------------------

def eval_kwargs(args) -> dict:
    """The keyword arguments of :func:`~msparse.evaluation.evaluate.evaluate` (and the sweep) that
    :func:`common_attack` gives: threat model, seed, budget and the store (False: ``--no-store``)."""
    store: Any = False if args.no_store else (Store(args.store) if args.store else None)
    return dict(norm=args.norm, seed=args.seed, batch_size=args.batch_size, n_iter=args.n_iter,
                n_restarts=args.n_restarts, n_queries=args.n_queries, store=store)


def executor_arg(args):
    """The executor of --cluster/--shard-size (None: the sweep engine's default)."""
    from ..evaluation.executor import Executor, get_executor

    cluster, shard = getattr(args, "cluster", None), getattr(args, "shard_size", None)
    timeout = getattr(args, "cluster_timeout", None)
    if cluster is None and shard is None and timeout is None:
        return None
    ex = get_executor(cluster)
    return Executor(ex.spec, shard_size=shard, timeout=timeout) if shard or timeout is not None else ex
