"""Imports go down the layers: a module of msparse imports only from its own layer or a lower one.

Every module under ``msparse/`` is parsed with :mod:`ast` (nothing is imported or executed); every ``import``
and ``from ... import`` -- at module level, inside functions, relative or absolute -- is resolved to the msparse
module it names and mapped to a layer by :data:`LAYERS`. An import of a higher layer fails the test, naming the
module and the line, unless :data:`ALLOWED` lists it with its reason.

The layers, lowest first (a module may import its own layer and any below it):

0. ``_io``, ``_device``, ``_compat``, ``errors``: helpers everything uses.
1. ``core`` (operator, statistics, placement, presets), ``models`` (names, registry, architectures), ``data``.
2. ``attacks``.
3. ``evaluation`` (evaluate, sweep, records, store, verification) and ``training``. ``training`` sits beside
   ``evaluation``, not ``attacks``: it imports ``attacks.pgd`` (its training attacks) and
   ``evaluation.evaluate`` (the APGD-CE accuracy of the model card, ``training/metrics.py``), and only the
   entry points (``cli``, the package's ``TrainConfig``) import it.
4. ``report`` and ``experiments`` (tables, verdicts and plots; the paper's items).
5. ``book``, ``cli``, ``demo`` and the package itself (``msparse/__init__.py``, ``__main__.py``): entry points.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import msparse

ROOT = Path(msparse.__file__).parent

#: first name after ``msparse.`` -> layer (see the module docstring); ``""`` is the package itself
LAYERS = {
    "_io": 0, "_device": 0, "_compat": 0, "_version": 0, "errors": 0,
    "core": 1, "models": 1, "data": 1,
    "attacks": 2,
    "evaluation": 3, "training": 3,
    "report": 4, "experiments": 4,
    "book": 5, "cli": 5, "demo": 5, "__main__": 5, "": 5,
}

#: known upward imports ``(importing module, imported module)``, each with why it is still there; a new one fails
#: the test, and an entry that no longer occurs fails it too (so the list only shrinks)
ALLOWED: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(dotted: str) -> bool:
    """Is ``dotted`` (``msparse....``) a module or package of the source tree?"""
    rel = Path(*dotted.split("."))
    return (ROOT.parent / rel).with_suffix(".py").is_file() or (ROOT.parent / rel / "__init__.py").is_file()


def imports(path: Path):
    """``(line, imported msparse module)`` for every import of an msparse module in the file at ``path``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "msparse" or alias.name.startswith("msparse."):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base != "msparse" and not base.startswith("msparse."):
                continue
            for alias in node.names:   # ``from pkg import submodule`` imports the submodule
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if is_module(sub) else base


def layer_of(dotted: str) -> int:
    parts = dotted.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top not in LAYERS:
        raise AssertionError(f"{dotted}: msparse.{top} has no layer; add it to tests/test_layers.py LAYERS")
    return LAYERS[top]


def upward_imports() -> list[tuple[str, int, str]]:
    """``(importing module, line, imported module)`` for every import of a higher layer."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        src = module_name(path)
        for line, target in sorted(imports(path)):
            if layer_of(target) > layer_of(src):
                out.append((src, line, target))
    return out


def test_every_module_has_a_layer():
    for path in sorted(ROOT.rglob("*.py")):
        layer_of(module_name(path))


def test_imports_go_down_the_layers():
    bad = [f"{path} line {line} imports {target} (layer {layer_of(target)} above {layer_of(path)})"
           for path, line, target in upward_imports() if (path, target) not in ALLOWED]
    assert not bad, "imports that go up a layer (move the thing imported down, or import it from below):\n" + \
        "\n".join(bad)


def test_allowed_upward_imports_still_occur():
    found = {(path, target) for path, _, target in upward_imports()}
    stale = sorted(set(ALLOWED) - found)
    assert not stale, f"tests/test_layers.py ALLOWED lists imports that no longer occur; remove them: {stale}"


@pytest.mark.parametrize("rel, text, target", [
    ("evaluation/verify.py", "def f():\n    from ..experiments import setup\n", "msparse.experiments.setup"),
    ("evaluation/verify.py", "from ..experiments.setup import load\n", "msparse.experiments.setup"),
    ("core/placement.py", "import msparse.cli\n", "msparse.cli"),
    ("core/placement.py", "from msparse import cli\n", "msparse.cli"),
    ("models/zoo.py", "from .. import evaluation\n", "msparse.evaluation"),
    ("data/loading.py", "import msparse\n", "msparse"),
])
def test_an_upward_import_is_found_wherever_it_is_written(tmp_path, monkeypatch, rel, text, target):
    """Function-level, relative, absolute and ``from msparse import X`` imports all count."""
    path = ROOT / rel
    real_read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: text if self == path else real_read(self, *a, **k))
    found = list(imports(path))
    assert [t for _, t in found] == [target]
    assert layer_of(target) > layer_of(module_name(path))


# --------------------------------------------------------------------------------------------------
# no import cycles: the same imports (function-level ones included) as a graph
# --------------------------------------------------------------------------------------------------

#: known import cycles (the modules of each, as a frozenset), each with why it is still there; a new one fails the
#: test, and an entry that no longer occurs fails it too (so the list only shrinks)
KNOWN_CYCLES: dict[frozenset, str] = {
    frozenset({"msparse.core.placement", "msparse.core.presets"}):
        "presets are lists of placement.Rule, and sparsify() resolves a preset name (function-level import in "
        "placement._resolve); moving Rule to a module of its own would break it",
}

#: the evaluation layer in the order data flows: a module may import the ones before it, never one after it
EVALUATION_ORDER = ("evaluate", "shards", "executor", "sweep")


def import_graph() -> dict[str, dict[str, int]]:
    """``{module: {imported msparse module: first line}}`` over every module of the source tree, every import
    counted (module level, inside functions, relative or absolute; see :func:`imports`)."""
    graph: dict[str, dict[str, int]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        edges = graph.setdefault(module_name(path), {})
        for line, target in sorted(imports(path)):
            edges.setdefault(target, line)
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with two modules or more (Tarjan's algorithm, iterative),
    each sorted. A module that imports itself is not a cycle (it is in ``sys.modules`` by then)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def _describe_cycle(graph, comp: list[str]) -> str:
    members = set(comp)
    edges = [f"{a} line {line} imports {b}" for a in comp for b, line in sorted(graph[a].items()) if b in members]
    return "  cycle " + " <-> ".join(comp) + ":\n" + "\n".join(f"    {e}" for e in edges)


def test_no_import_cycles():
    graph = import_graph()
    bad = [c for c in import_cycles(graph) if frozenset(c) not in KNOWN_CYCLES]
    assert not bad, ("import cycles among msparse modules (a function-level import that hides one counts too; "
                     "move the shared thing down or pass it in):\n" + "\n".join(_describe_cycle(graph, c)
                                                                          for c in bad))


def test_known_cycles_still_occur():
    found = {frozenset(c) for c in import_cycles(import_graph())}
    stale = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not stale, f"tests/test_layers.py KNOWN_CYCLES lists cycles that no longer occur; remove them: {stale}"


def test_the_evaluation_modules_import_in_the_order_data_flows():
    graph = import_graph()
    names = [f"msparse.evaluation.{m}" for m in EVALUATION_ORDER]
    bad = [f"{a} line {graph[a][b]} imports {b}" for i, a in enumerate(names) for b in names[i + 1:] if b in graph[a]]
    assert not bad, f"the evaluation layer flows {' < '.join(EVALUATION_ORDER)}; these imports go against it: {bad}"


def test_import_cycles_finds_a_cycle_hidden_in_a_function(monkeypatch):
    """The executor<->sweep cycle as it was (a function-level import of sweep in executor) is found."""
    path = ROOT / "evaluation" / "executor.py"
    text = path.read_text(encoding="utf-8") + "\n\ndef _hidden():\n    from .sweep import sweep\n"
    real_read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: text if self == path else real_read(self, *a, **k))
    cycles = import_cycles(import_graph())
    assert ["msparse.evaluation.executor", "msparse.evaluation.sweep"] in cycles
    assert import_cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"d": 1}}) == [["a", "b", "c"]]
