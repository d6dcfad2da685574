"""The entry point: :func:`build_parser` assembles the commands from their modules (in the order ``--help``
lists them) and :func:`main` runs one, turning bad input into one line and exit code 2.

Bad input (any :class:`~msparse.errors.MsparseError`) gives one line on stderr and exit code 2 (``--debug`` shows
the traceback instead); any other exception is a bug and propagates as a traceback; Ctrl-C gives exit code 130.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import MsparseError
from . import drivers, listing, options, plan, results, run, sweep
from .options import PROG

#: the command modules, in the order their commands appear in ``msparse --help``
COMMAND_MODULES = (listing, run, sweep, plan, results, drivers)


def build_parser() -> argparse.ArgumentParser:
    """The ``msparse`` parser with every command (each command module's ``add_parsers``)."""
    p = options.Parser(prog=PROG, formatter_class=options.FORMATTER, epilog=options.EPILOG,
                       description="MeanSparse reproduction: sparsify, calibrate and evaluate robust models "
                                   "under AutoAttack, adaptive (BPDA, transfer) attacks and sweeps.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="command", parser_class=options.Parser)
    for module in COMMAND_MODULES:
        module.add_parsers(sub)
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
