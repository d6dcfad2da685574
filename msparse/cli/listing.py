"""The commands that list names the other commands accept: ``list-models`` (``--model``; the models' registry,
:func:`msparse.models.registry.list_models`) and ``attacks`` (the registered attack methods ``--attack`` is built
from; :mod:`msparse.attacks.registry`)."""
from __future__ import annotations

from ..attacks.registry import format_value, get_attack, list_attacks
from ..models.registry import list_models
from . import options


def cmd_list_models(args) -> int:
    """``msparse list-models``: one model name per line."""
    for name in list_models():
        print(name)
    return 0


def attack_lines(names=None) -> list[str]:
    """One aligned line per registered attack: name, library, ``gradient-free`` or ``needs gradients``, the
    declared parameters with their defaults (``-``: none; overridable as ``name[k=v,...]``) and the summary."""
    rows = []
    for name in (list_attacks() if names is None else names):
        cls = get_attack(name)
        declared = ", ".join(f"{k}={format_value(v)}" for k, v in dict(cls.params).items()) or "-"
        rows.append((cls.name, cls.library, "needs gradients" if cls.needs_grad else "gradient-free",
                     f"params: {declared}", cls.summary or ""))
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(4)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(r[:4], widths)), r[4]]).rstrip() for r in rows]


def cmd_attacks(args) -> int:
    """``msparse attacks``: one line per registered attack (:func:`attack_lines`)."""
    for line in attack_lines():
        print(line)
    return 0


def add_parsers(sub) -> None:
    """Register ``list-models`` and ``attacks`` on the sub-parsers ``sub``."""
    fmt = options.FORMATTER
    s = sub.add_parser("list-models", help="models of the registry", formatter_class=fmt,
                       description="Print the model names `--model` accepts, one per line: the models shipped "
                                   "with the package (msparse/..., pyautoattack/..., usable offline) first, then "
                                   "the RobustBench entries (their weights are downloaded on first use).")
    options.debug_flag(s)
    s.set_defaults(func=cmd_list_models)

    s = sub.add_parser("attacks", help="attack methods of the registry", formatter_class=fmt,
                       description="Print the registered attack methods, one per line: name, the library that "
                                   "computes it, whether it needs the model's gradients (gradient-free ones cannot "
                                   "run through bpda: or surrogate:), its declared parameters with their defaults "
                                   "(override them as NAME[k=v,...] in --attack) and a summary. --attack also "
                                   "takes the sequences, shorthands and modes listed under `msparse --help`.")
    options.debug_flag(s)
    s.set_defaults(func=cmd_attacks)
