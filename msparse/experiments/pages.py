"""The book's pages, registered once: each page is one :class:`Page` — its notebook, title, part, parameters
(:class:`Page.Params`, the single source of the notebook's parameters cell), quick-profile overrides, experiment
module, plan key and claims.

Each experiment module registers its page at import (``register(Page(...))`` at its end); :data:`ORDER` is the one
list of the pages, in book order, each with the module that registers it. Everything that lists pages iterates
:func:`pages`: the book's notebook list and ``_toc.yml`` (:mod:`msparse.book`), the quick profile, the paper plan's
page keys (:data:`msparse.experiments.plan.PAGES`) and the claims ledger (:func:`msparse.experiments.claims.run`).

A page's parameters are a dataclass whose fields, in order, are the notebook's parameters cell: each field made
by :func:`param` (its default, the comment written after it, and, for a value that is not a Python literal, such as
``8 / 255``, the expression written in the cell). :func:`render_parameters` writes the cell;
``python -m msparse book --sync-parameters`` rewrites the notebooks' cells from it, and the tests check that every
cell equals its rendering, so a parameter changes in one place.

    from msparse.experiments import pages
    p = pages.page("table1_alpha")
    print(pages.render_parameters(p))
    res = p.run(p.params(n_examples=24, n_iter=5))     # table1.run with these parameters
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import importlib
import io
import json
import math
import operator
import tokenize
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..errors import InputError, InputTypeError, UnknownNameError

__all__ = ["Page", "ORDER", "PARTS", "HEADER", "MODEL_HEADER", "param", "grid_plan", "register", "pages", "page", "render_parameters",
           "parse_parameters", "Assignment", "literal"]

#: every page of the book in book order, with the experiment module (under ``msparse.experiments``) that registers
#: it; the first is the start page (``root`` of ``_toc.yml``, no part)
ORDER: tuple[tuple[str, str], ...] = (
    ("intro", "claims"),
    ("fig1_operator", "fig1"),
    ("does_it_work", "works"),
    ("attack_strength", "strength"),
    ("table1_alpha", "table1"),
    ("fig3_headline", "headline"),
    ("alpha_explorer", "explorer"),
    ("table2_activations", "table2"),
    ("table3_threat_models", "table3"),
    ("table4_training", "table4"),
    ("table5_centre", "table5"),
    ("table6_attack_power", "table6"),
    ("table7_sites", "table7"),
    ("table8_main_vs_add", "table8"),
    ("adaptive", "adaptive"),
    ("standard_training", "standard"),
    ("statistics", "stats_page"),
)

#: the book's parts (the captions of ``_toc.yml``) in book order: every page but the start page is in one, and the
#: pages of a part follow each other in :data:`ORDER`
PARTS: tuple[str, ...] = (
    "The method",
    "Does MeanSparse work?",
    "Main results (paper Table 1, Fig. 3)",
    "Appendix ablations (ResNet-18)",
    "Stress tests",
    "Using msparse",            # reference pages only (msparse.book.BOOK_FILES), no notebook
)

#: the first line of a parameters cell
HEADER = "Parameters (papermill: -p NAME VALUE)"
#: the first line of the parameters cell of a page that takes a model
MODEL_HEADER = HEADER + ". model: a load_model name; 'random:<family>' = random weights"


def param(default, comment: str = "", *, expr: str | None = None):
    """A field of a page's ``Params``: its ``default`` (a list or dict is copied for each instance), the
    ``comment`` written after it in the parameters cell, and ``expr``, the expression the cell writes when the
    value is not a literal (``"8 / 255"``: numbers and ``+ - * /`` only; it must evaluate to ``default``)."""
    meta = {"comment": comment, "expr": expr}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Page:
    """One page of the book.

    ``name``: the notebook (``notebooks/<name>.md``) and the executed page (``_executed/<name>``); ``title``: its
    title in ``--list``; ``part``: the ``_toc.yml`` caption it sits under (None only for the start page);
    ``Params``: the dataclass of its parameters cell (fields made by :func:`param`); ``module``: the experiment
    module (``msparse.experiments.<module>``); ``quick``: its overrides in the quick profile (declared parameters
    only); ``plan_key``: its key in the paper plan (:data:`msparse.experiments.plan.PAGES`), where it has one;
    ``plan_run``: ``(item, model, kw, progress) -> attacks`` computes one plan item through the module's own
    function (``kw``: n_examples, n_iter, device, results_dir, n_train) and returns the attacks that call covered;
    ``claims``: ``kw -> [Claim or None]``, the page's primary claims on its module's default parameters, for the
    ledger (:func:`msparse.experiments.claims.run`; ``kw``: data_source, device, use_stored, results_dir,
    progress); ``header``: the first line of its parameters cell; ``runner``: ``(params, **extra) -> result``
    where the page does more than call ``module.run`` with its parameters; ``unused``: parameters the notebook only
    validates, not passed to ``module.run``.
    """
    name: str
    title: str
    part: str | None
    Params: type
    module: str
    quick: Mapping = field(default_factory=dict)
    plan_key: str | None = None
    plan_run: Callable | None = None
    claims: Callable | None = None
    header: str = MODEL_HEADER
    runner: Callable | None = None
    unused: tuple[str, ...] = ("dataset",)

    @property
    def parameter_names(self) -> list[str]:
        """The parameters of the page's notebook, in cell order."""
        return [f.name for f in dataclasses.fields(self.Params)]

    def params(self, overrides: Mapping | None = None, **kw):
        """The page's ``Params``: the notebook's defaults with ``overrides`` (and ``kw``); an unknown name raises
        :class:`~msparse.errors.InputError` naming the closest parameter."""
        from .setup import check_parameter_names

        given = {**(overrides or {}), **kw}
        check_parameter_names(given, set(self.parameter_names), f"page {self.name}")
        return self.Params(**given)

    def run(self, params=None, **extra):
        """Run the page's experiment with ``params`` (a ``Params``, a mapping of overrides, or None for the
        notebook's defaults): the module's ``run`` called with every parameter but :attr:`unused`, or the page's
        ``runner``; ``extra`` (e.g. ``progress=False``) is passed on."""
        if params is None or isinstance(params, Mapping):
            params = self.params(params)
        elif not isinstance(params, self.Params):
            raise InputTypeError(f"page {self.name}: params must be its Params, a mapping or None, got "
                                 f"{type(params).__name__}")
        if self.runner is not None:
            return self.runner(params, **extra)
        kw = {f.name: getattr(params, f.name) for f in dataclasses.fields(params) if f.name not in self.unused}
        return importlib.import_module(self.module).run(**kw, **extra)


_REGISTRY: dict[str, Page] = {}


def grid_plan(run: Callable, **fixed) -> Callable:
    """The ``plan_run`` of a page whose plan items are α grids: ``run(model, alphas=item's α, attack=item's attack,
    **fixed)`` (:func:`msparse.experiments.plan.run_plan`)."""
    def plan_run(it, model: str, kw: dict, progress: bool) -> tuple[str, ...]:
        run(model, alphas=it.alphas, attack=it.attack, progress=progress, **fixed, **kw)
        return (it.attack,)

    return plan_run


def register(page: Page) -> Page:
    """Add ``page`` to the registry (called once by its experiment module at import) and return it. Raises
    :class:`~msparse.errors.InputError` for a second page of the same name, ``Params`` that is not a dataclass of
    :func:`param` fields whose defaults render as the cell writes them, or quick overrides of undeclared
    parameters."""
    if not isinstance(page, Page):
        raise InputTypeError(f"register takes a Page, got {type(page).__name__}")
    if page.name in _REGISTRY and _REGISTRY[page.name] is not page:
        raise InputError(f"page {page.name!r} is registered twice ({_REGISTRY[page.name].module} and {page.module})")
    if not dataclasses.is_dataclass(page.Params):
        raise InputError(f"page {page.name}: Params must be a dataclass (fields made by pages.param)")
    if page.part is not None and page.part not in PARTS:
        raise InputError(f"page {page.name}: part {page.part!r} is not one of pages.PARTS: {', '.join(PARTS)}")
    names = page.parameter_names
    bad = sorted(set(page.quick) - set(names))
    if bad:
        raise InputError(f"page {page.name}: quick overrides {', '.join(bad)} are not parameters of its notebook; "
                         f"parameters: {', '.join(names)}")
    if (page.plan_key is None) != (page.plan_run is None):
        raise InputError(f"page {page.name}: a plan_key needs a plan_run and a plan_run a plan_key")
    render_parameters(page)   # every default renders (and every expr evaluates to its default)
    _REGISTRY[page.name] = page
    return page


def pages() -> tuple[Page, ...]:
    """Every page in book order (:data:`ORDER`), each module imported so that it registers its page. Raises
    :class:`~msparse.errors.InputError` when ORDER and the registry disagree or the book has not exactly one
    start page (the first, without a part)."""
    for name, module in ORDER:
        importlib.import_module(f"msparse.experiments.{module}")
    out = []
    for name, module in ORDER:
        got = _REGISTRY.get(name)
        if got is None:
            raise InputError(f"page {name!r} is in pages.ORDER but msparse.experiments.{module} registers no page "
                             f"of that name: add register(Page({name!r}, ...)) to the module")
        if got.module != f"msparse.experiments.{module}":
            raise InputError(f"page {name!r}: pages.ORDER says msparse.experiments.{module}, the page says "
                             f"{got.module}")
        out.append(got)
    extra = sorted(set(_REGISTRY) - {n for n, _ in ORDER})
    if extra:
        raise InputError(f"page(s) {', '.join(extra)} registered but not placed in pages.ORDER (the book order)")
    roots = [p.name for p in out if p.part is None]
    if roots != [out[0].name]:
        raise InputError(f"the book has one start page, the first of pages.ORDER, without a part; pages without a "
                         f"part: {', '.join(roots) or 'none'}")
    seen = [p.part for i, p in enumerate(out[1:], 1) if p.part != out[i - 1].part]
    if seen != sorted(seen, key=PARTS.index) or len(seen) != len(set(seen)):
        raise InputError(f"pages.ORDER must list each part's pages together, parts in the order of pages.PARTS; it "
                         f"visits {' → '.join(seen)}")
    return tuple(out)


def page(name: str) -> Page:
    """The registered page ``name`` (:class:`~msparse.errors.UnknownNameError` otherwise)."""
    found = {p.name: p for p in pages()}
    if name not in found:
        raise UnknownNameError(f"no page {name!r}; pages: {', '.join(found)}")
    return found[name]


# ================================================================================================
# the parameters cell
# ================================================================================================
def literal(value) -> str:
    """``value`` as the parameters cell writes it: Python literal syntax with double-quoted strings (None, bools,
    ints, finite floats, strings, and lists, tuples and dicts of these). Raises
    :class:`~msparse.errors.InputError` for anything else (give the field an ``expr``)."""
    if value is None or isinstance(value, (bool, int)):
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"{value!r} is not a literal: give the parameter an expr")
        return repr(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if ast.literal_eval(text) == value else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(literal, value)) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(literal, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise InputError(f"{type(value).__name__} value {value!r} has no literal form: give the parameter an expr")


_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _value(node: ast.AST):
    """The value of a parameter's expression: a literal, or numbers combined with ``+ - * /``."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _value(node.left), _value(node.right)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right)):
            return _ARITHMETIC[type(node.op)](left, right)
    raise InputError(f"{ast.unparse(node)!r} is neither a literal nor arithmetic on numbers")


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def render_parameters(page: Page) -> str:
    """The source of ``page``'s parameters cell: ``# <header>``, then one line per field of ``page.Params`` in
    order, ``name = <value>  # <comment>`` (the value as :func:`literal` writes the default, or the field's
    ``expr``)."""
    lines = [f"# {page.header}"] if page.header else []
    for f in dataclasses.fields(page.Params):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise InputError(f"page {page.name}: parameter {f.name} has no default (make it with pages.param)")
        default, expr = _default(f), f.metadata.get("expr")
        if expr is not None:
            got = _value(ast.parse(expr, mode="eval").body)
            if literal(got) != literal(default):
                raise InputError(f"page {page.name}: parameter {f.name}: expr {expr!r} is {got!r}, not its default "
                                 f"{default!r}")
        comment = f.metadata.get("comment") or ""
        lines.append(f"{f.name} = {expr if expr is not None else literal(default)}"
                     + (f"  # {comment}" if comment else ""))
    return "\n".join(lines)


@dataclass(frozen=True)
class Assignment:
    """One line of a parameters cell: the name, its value, the value as written, and the comment after it."""
    name: str
    value: object
    source: str
    comment: str = ""


def parse_parameters(source: str) -> tuple[str, list[Assignment]]:
    """A parameters cell's header (its comment lines before the first assignment, joined by newlines) and its
    assignments in order. Raises :class:`~msparse.errors.InputError` for a statement that is not ``name = value``
    on one line, or a value that is neither a literal nor arithmetic on numbers."""
    tree = ast.parse(source)
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string[1:].strip()
    out = []
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.lineno == node.end_lineno):
            raise InputError(f"parameters cell line {node.lineno}: {ast.unparse(node)!r} is not `name = value` on "
                             "one line")
        out.append(Assignment(node.targets[0].id, _value(node.value), ast.get_source_segment(source, node.value),
                              comments.get(node.lineno, "")))
    first = tree.body[0].lineno if tree.body else len(source.splitlines()) + 1
    header = "\n".join(comments[i] for i in sorted(comments) if i < first)
    return header, out
