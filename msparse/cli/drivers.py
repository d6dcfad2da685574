"""The commands whose options and work live in their own modules, registered here under their names: ``demo``
(:mod:`msparse.demo`), ``book`` (:mod:`msparse.book`: execute the notebooks, build the site) and ``train``
(:mod:`msparse.training.cli`: adversarial training of the appendix's ResNet-18 family)."""
from __future__ import annotations

from .. import book as _book
from .. import demo as _demo
from ..training import cli as _train_cli
from . import options


def add_parsers(sub) -> None:
    """Register ``demo``, ``book`` and ``train`` on the sub-parsers ``sub``."""
    fmt = options.FORMATTER
    s = sub.add_parser("demo", help="MeanSparse on the shipped offline default, paper vs BPDA evaluation",
                       formatter_class=fmt, description=_demo.__doc__)
    _demo.add_arguments(s)
    options.debug_flag(s)
    s.set_defaults(func=_demo.main)

    s = sub.add_parser("book", help="execute the notebooks (papermill) and build the book (offline)",
                       formatter_class=fmt, description=_book.__doc__)
    _book.add_arguments(s)
    options.debug_flag(s)
    s.set_defaults(func=_book.run)

    s = sub.add_parser("train", help="adversarial training (PGD-AT, TRADES, ANCRA) of a ResNet-18",
                       formatter_class=fmt,
                       description="Adversarially train a ResNet-18 of the appendix family (PGD-AT, TRADES or "
                                   "ANCRA) on CIFAR-10 and write its checkpoint with a model card beside it; "
                                   "the checkpoint then loads with `--checkpoint` or, once registered, `--model`.")
    _train_cli.add_arguments(s)
    s.set_defaults(func=_train_cli.main)
