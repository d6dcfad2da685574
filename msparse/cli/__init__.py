"""The command line: ``python -m msparse <command> ...`` (also installed as ``msparse``).

Commands: list-models, attacks, calibrate, evaluate, sweep, plan, results, demo, book, train. Bad input (any
:class:`~msparse.errors.MsparseError`) gives one line on stderr and exit code 2 (``--debug`` shows the
traceback instead); any other exception is a bug and propagates as a traceback.

One module per concern:

* :mod:`~msparse.cli.entry` -- :func:`build_parser` (the commands, in ``--help`` order) and :func:`main` (exit
  codes, the one-line error).
* :mod:`~msparse.cli.options` -- the parser class, the examples epilog, argument types (``8/255``, α lists and
  ranges, counts, seeds, files) and the option groups several commands share, with their conversion into
  evaluation and executor arguments.
* :mod:`~msparse.cli.loading` -- model (through :mod:`msparse.models.front`), placement, statistics and data from
  the arguments.
* :mod:`~msparse.cli.output` -- plain-text tables and the rows of results and records.
* :mod:`~msparse.cli.listing` -- ``list-models`` and ``attacks``.
* :mod:`~msparse.cli.run` -- ``calibrate`` and ``evaluate`` (one configuration).
* :mod:`~msparse.cli.sweep` -- ``sweep``.
* :mod:`~msparse.cli.plan` -- ``plan``.
* :mod:`~msparse.cli.results` -- ``results`` (list, verify, repair, migrate).
* :mod:`~msparse.cli.drivers` -- ``demo``, ``book``, ``train`` (their options live in their own modules).
"""
from .entry import build_parser, main

__all__ = ["main", "build_parser"]
