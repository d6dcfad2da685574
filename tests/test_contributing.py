"""The book's Contributing page (book/contributing.md) stays true: its three recipes (add a model, an attack, a
page) are run from the page's own snippets, and every ``msparse.…`` name and repository file it cites exists, so a
renamed API breaks this test before it misleads a reader."""
from __future__ import annotations

import argparse
import importlib
import re
import textwrap
from pathlib import Path

import pytest
import torch

from msparse import book as mb

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "book" / "contributing.md"


def recipe(title: str) -> str:
    """The text of the page's section ``## <title>``."""
    parts = re.split(r"^## ", PAGE.read_text(encoding="utf-8"), flags=re.M)
    found = [p for p in parts if p.startswith(title + "\n")]
    assert len(found) == 1, f"book/contributing.md has no single section '## {title}'"
    return found[0]


def snippets(text: str, lang: str = "python") -> list[str]:
    """The fenced ``lang`` code blocks of ``text`` (a block indented inside a list item is dedented)."""
    blocks = re.finditer(r"^( *)```(\w*)\n(.*?)^\1```", text, re.M | re.S)
    return [textwrap.dedent(m.group(3)) for m in blocks if m.group(2) == lang]


def resolve(dotted: str):
    """``msparse.a.b.name`` -> the object: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


# ------------------------------------------------------------------------------------------------
def test_every_msparse_name_and_file_the_page_cites_exists():
    text = PAGE.read_text(encoding="utf-8")
    names = sorted(set(re.findall(r"`(msparse(?:\.\w+)+)`", text)))
    assert len(names) >= 10
    missing = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert not missing, f"book/contributing.md cites names that do not exist: {missing}"
    files = sorted(set(re.findall(r"`((?:msparse|tests)/[\w/]+\.py)`", text)))
    assert files and not [f for f in files if not (REPO / f).is_file()], files


def test_the_model_recipe_registers_a_model_that_loads_and_is_listed(monkeypatch):
    from msparse.models import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))   # the example entry does not leak
    [code] = snippets(recipe("Add a model"))
    key = re.search(r'register_model\("([^"]+)"', code).group(1)
    exec(compile(code, "book/contributing.md (Add a model)", "exec"), {"__name__": "contributing_model"})
    model = registry.load_model(key)
    assert model.msparse_card["registry"] == {"entry": key, "version": 1}
    assert key in registry.list_models(include_robustbench=False)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_the_attack_recipe_is_one_file_whose_attack_every_route_and_evaluate_accept(tmp_path):
    import msparse
    from msparse.attacks import base, registry
    from msparse.attacks.gradest import PARAMS, GradEst
    from msparse.errors import InputError, UnknownNameError
    from msparse.experiments.plan import passes

    section = recipe("Add an attack")
    [code] = snippets(section)
    name = re.search(r'name = "([\w-]+)"', code).group(1)
    with pytest.raises(UnknownNameError):
        base.parse_attack(name)
    namespace = {"__name__": "contributing_attack"}
    exec(compile(code, "book/contributing.md (Add an attack)", "exec"), namespace)   # the one new file
    try:
        cls = registry.get_attack(name)
        assert name in registry.list_attacks() and not cls.needs_grad
        assert base.parse_attack(name) == [base.Attack(name)]
        assert base.parse_attack(f"transfer:{name}") == [base.Attack(name, "transfer")]
        assert base.parse_attack(f"worst:apgd,{name}")[-1] == base.Attack(name)
        with pytest.raises(InputError, match="uses no gradient"):
            base.parse_attack(f"bpda:{name}")
        with pytest.raises(InputError, match="declared parameters: tries"):
            base.parse_attack(f"{name}[steps=3]")
        assert passes(name, n_iter=10) == pytest.approx(4 / 3 + 1 / 3)
        # evaluate runs it, and its declared parameter is in the record key
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
        x = torch.rand(6, 3, 8, 8)
        with torch.no_grad():
            y = model(x).argmax(1)
        store = tmp_path / "store"
        res = msparse.evaluate(model, x, y, attack=name, store=store, progress=False)
        assert res.n == 6 and 0 <= res.robust_acc <= res.clean_acc == 1.0
        assert res.spec["attack"]["name"] == name and res.spec["attack"][name] == {"tries": 4}
        more = msparse.evaluate(model, x, y, attack=f"{name}[tries=8]", store=store, progress=False)
        assert more.key != res.key and more.spec["attack"][name] == {"tries": 8}
    finally:
        registry.unregister_attack(name)
    # the worked examples the recipe names are what it says they are
    assert "gradest" in section and registry.get_attack("gradest") is GradEst and not GradEst.needs_grad
    assert base.attack_params(base.parse_attack("gradest")) == {"gradest": dict(PARAMS)}
    assert registry.get_attack("apgd-ce").__module__ == "msparse.attacks.apgd_ce"


def test_the_page_recipe_puts_a_page_in_the_book_list_toc_and_quick_profile(monkeypatch):
    from msparse.experiments import pages as pg

    monkeypatch.setattr(pg, "_REGISTRY", dict(pg._REGISTRY))   # the example page does not leak
    monkeypatch.setattr(pg, "ORDER", tuple(pg.ORDER))
    section = recipe("Add a page")
    [code] = snippets(section)
    importlib.import_module("msparse.experiments.standard")
    namespace = {"__name__": "msparse.experiments.standard"}   # as if written in an experiment module
    exec(compile(code, "book/contributing.md (Add a page)", "exec"), namespace)
    page = namespace["PAGE"]
    pg.ORDER = pg.ORDER + ((page.name, "standard"),)           # "add (name, module) to ORDER"
    assert pg.page(page.name) is page
    assert mb.NOTEBOOKS[-1] == (page.name, page.title)
    toc = mb.render_toc()
    part = toc.split(f"  - caption: {page.part}\n")[1].split("  - caption: ")[0]
    assert part.endswith(f"      - file: {mb.EXECUTED}/{page.name}\n")
    assert mb.profile_parameters("quick", page.name) == {**mb.PROFILES["quick"], **page.quick}
    # the command the recipe runs is the book command's, for this page
    [command] = [l for block in snippets(section, "") for l in block.splitlines() if "--sync-parameters" in l]
    args = command.split("msparse book", 1)[1].split()
    parsed = mb.add_arguments(argparse.ArgumentParser()).parse_args(args)
    assert parsed.sync_parameters and parsed.only == [page.name]
    assert command.startswith(".venv/bin/python -m msparse book")


def test_every_reference_page_is_a_file_and_travels_with_a_copied_book(tmp_path):
    assert ("contributing", "Using msparse") in mb.BOOK_FILES
    for name, _ in mb.BOOK_FILES:
        assert (mb.BOOK_DIR / f"{name}.md").is_file(), f"book/{name}.md is registered in BOOK_FILES but missing"
    mb._copy_sources(tmp_path)
    assert all((tmp_path / f"{name}.md").is_file() for name, _ in mb.BOOK_FILES)
