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
    ("data.py", "import msparse\n", "msparse"),
])
def test_an_upward_import_is_found_wherever_it_is_written(tmp_path, monkeypatch, rel, text, target):
    """Function-level, relative, absolute and ``from msparse import X`` imports all count."""
    path = ROOT / rel
    real_read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: text if self == path else real_read(self, *a, **k))
    found = list(imports(path))
    assert [t for _, t in found] == [target]
    assert layer_of(target) > layer_of(module_name(path))
