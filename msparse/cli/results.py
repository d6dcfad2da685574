"""The ``results`` command and its actions on the results store (:class:`msparse.evaluation.store.Store`):
``list`` (the default: one line per record, never changing the store), ``verify`` (recompute records under the
running install, :func:`msparse.evaluation.verify.verify`), ``repair`` (move damaged files aside) and
``migrate`` (rewrite records of older key formats, :func:`msparse.evaluation.verify.migrate`)."""
from __future__ import annotations

import argparse
from typing import Any

from .._device import resolve_device
from ..errors import UsageError
from ..evaluation.queries import load_records, to_table
from ..evaluation.store import Store
from ..evaluation.verify import verify
from . import options
from .output import distinguishing, format_table


def cmd_results(args) -> int:
    """``msparse results [list|verify|repair|migrate]``: dispatch the action; ``list`` is done here."""
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
            val: Any = options.parse_number(v)
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
        r.update(distinguishing(rec))
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
    """``msparse results verify``: exit 1 unless every checked record agrees."""
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
    """``msparse results repair``: exit 1 when anything could not be moved aside or was left."""
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
    """``msparse results migrate``: exit 1 on conflicts or unreadable files."""
    from ..evaluation.verify import migrate

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


def add_parsers(sub) -> None:
    """Register ``results`` and its actions on the sub-parsers ``sub``."""
    fmt = options.FORMATTER
    s = sub.add_parser("results", help="list, verify or migrate stored records", formatter_class=fmt,
                       description="List the records of the results store (default: one line per record with "
                                   "model, attack, eps, iterations, alpha, sites, centre, backward, split, n, clean "
                                   "and robust accuracy, torch, device, key), recompute them under the running "
                                   "library versions and compare per example (verify), move damaged files aside "
                                   "(repair), or rewrite records of the old key format once (migrate).")
    options.debug_flag(s)
    s.add_argument("--store", type=options.store_folder,
                   help="results folder (default $MSPARSE_RESULTS or <repo>/results)")
    s.add_argument("--where", action="append", metavar="FIELD=VALUE",
                   help="filter, e.g. --where attack=apgd-ce --where model=Peng2023Robust")
    s.set_defaults(func=cmd_results, action="list")
    rsub = s.add_subparsers(dest="action", metavar="{list,verify,migrate,repair}")

    def action(name, help, description=None):
        a = rsub.add_parser(name, help=help, description=description, formatter_class=fmt)
        a.add_argument("--store", default=argparse.SUPPRESS, type=options.store_folder, help="results folder")
        options.debug_flag(a)
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
    r.add_argument("--sample", type=options.positive_int, help="check K records drawn at random (--seed)")
    r.add_argument("--seed", type=options.seed, default=0, help="seed of --sample (default 0)")
    r.add_argument("--max-cost", type=options.positive_number,
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
