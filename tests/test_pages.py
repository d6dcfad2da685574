"""The page registry (msparse.experiments.pages): one Page per notebook, the single source of the book's list,
_toc.yml, the quick profile, the plan's page keys, the claims ledger's pages and each notebook's parameters cell."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import shutil
from pathlib import Path

import pytest

from msparse import book as mb
from msparse.errors import InputError, UnknownNameError
from msparse.experiments import pages as pg

REPO = Path(__file__).resolve().parent.parent
PAGES = pg.pages()


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry and ORDER, restored after the test: pages registered here do not leak."""
    monkeypatch.setattr(pg, "_REGISTRY", dict(pg._REGISTRY))
    monkeypatch.setattr(pg, "ORDER", tuple(pg.ORDER))
    return pg


@dataclasses.dataclass
class _FakeParams:
    model: str = pg.param("msparse/default")
    n_examples: int = pg.param(8, "test images")
    alphas: list = pg.param([0.0, 0.35], "α values")


def _fake_page(**kw) -> pg.Page:
    base = dict(name="fake_page", title="A fake page", part="Stress tests", Params=_FakeParams,
                module="msparse.experiments.fig1", quick={"n_examples": 2})
    return pg.Page(**{**base, **kw})


# ------------------------------------------------------------------------------------------------
# one page per notebook, one notebook per page
def test_every_notebook_is_exactly_one_registered_page_in_book_order():
    stems = sorted(p.stem for p in (REPO / "notebooks").glob("*.md"))
    names = [p.name for p in PAGES]
    assert sorted(names) == stems and len(set(names)) == len(names)
    assert names == [n for n, _ in pg.ORDER]
    assert mb.NOTEBOOKS == tuple((p.name, p.title) for p in PAGES) == mb.notebooks()
    for p, (name, module) in zip(PAGES, pg.ORDER):
        assert p.module == f"msparse.experiments.{module}" and importlib.import_module(p.module).PAGE is p
        assert mb.notebook_path(p.name).is_file()
    assert PAGES[0].name == "intro" and PAGES[0].part is None and all(p.part in pg.PARTS for p in PAGES[1:])


def test_the_committed_toc_is_the_registrys_rendering():
    import yaml

    text = (REPO / "book" / "_toc.yml").read_text()
    assert text == mb.render_toc(), "book/_toc.yml differs from the page registry: python -m msparse book " \
                                    "--sync-parameters rewrites it"
    toc = yaml.safe_load(text)
    assert toc["root"] == f"_executed/{PAGES[0].name}"
    assert [p["caption"] for p in toc["parts"]] == list(pg.PARTS)
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    # the method opens the book, the reference pages (no notebook) close it: BOOK_FILES first in each part
    assert files == ["method"] + [f"_executed/{p.name}" for p in PAGES[1:]] + [n for n, _ in mb.BOOK_FILES[1:]]


def test_a_build_writes_the_toc_from_the_registry(tmp_path):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: stale\n")
    assert mb.write_toc(tmp_path) is True and (tmp_path / "_toc.yml").read_text() == mb.render_toc()
    assert mb.write_toc(tmp_path) is False   # unchanged: not rewritten


# ------------------------------------------------------------------------------------------------
# the parameters cell
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_parameters_cell_is_its_params_rendering(page):
    source = mb.parameters_source(page.name)
    header, cell = pg.parse_parameters(source)
    fields = dataclasses.fields(page.Params)
    assert header == page.header
    assert [a.name for a in cell] == [f.name for f in fields], f"{page.name}: names or order differ"
    for a, f in zip(cell, fields):
        default = getattr(page.Params(), f.name)
        assert pg.literal(a.value) == pg.literal(default), f"{page.name}.{f.name}: {a.value!r} != {default!r}"
        assert a.comment == f.metadata["comment"], f"{page.name}.{f.name}: comment differs"
        assert a.source == (f.metadata["expr"] or pg.literal(default)), f"{page.name}.{f.name}: written differently"
    assert source == pg.render_parameters(page), f"{page.name}: python -m msparse book --sync-parameters"


def test_papermill_sees_the_params_fields(tmp_path):
    import jupytext
    import papermill as pm

    for page in PAGES:
        jupytext.write(mb.read_notebook(page.name), tmp_path / f"{page.name}.ipynb", fmt="ipynb")
        assert list(pm.inspect_notebook(str(tmp_path / f"{page.name}.ipynb"))) == page.parameter_names, page.name


def test_rendering_writes_python_that_reads_back_as_the_defaults(scratch_registry):
    @dataclasses.dataclass
    class Odd:
        text: str = pg.param('say "hi"\nthen \\ leave', "quotes, a newline and a backslash")
        nested: dict = pg.param({"a": [1, 2.5, None], "b": (True,)})
        ratio: float = pg.param(128 / 255, expr="128 / 255")

    page = pg.register(_fake_page(Params=Odd, quick={}))
    source = pg.render_parameters(page)
    assert source.splitlines()[-1] == "ratio = 128 / 255"
    _, cell = pg.parse_parameters(source)
    assert [(a.name, a.value) for a in cell] == [(f.name, getattr(Odd(), f.name)) for f in dataclasses.fields(Odd)]
    assert Odd().nested is not Odd().nested   # a mutable default is copied per instance


@pytest.mark.parametrize("cell, message", [
    ("x = foo()", "neither a literal"),
    ("x = [1,\n     2]", "on one line"),
    ("x, y = 1, 2", "not `name = value`"),
])
def test_parse_parameters_refuses_what_is_not_a_parameter_line(cell, message):
    with pytest.raises(InputError, match=message):
        pg.parse_parameters(cell)


def test_sync_parameters_rewrites_only_the_cell(tmp_path, monkeypatch, scratch_registry):
    name = "table8_main_vs_add"
    src = mb.notebook_path(name)
    shutil.copy(src, tmp_path / src.name)
    original = src.read_text()
    assert mb.sync_parameters([name], notebook_dir=tmp_path) == []           # already in sync
    # the Params change in one place: the cell follows, nothing else in the file moves
    page = pg.page(name)
    Changed = dataclasses.make_dataclass("Params", [
        (f.name, f.type, pg.param(True, "changed in Params") if f.name == "with_stem" else
         dataclasses.field(default=f.default, default_factory=f.default_factory, metadata=f.metadata))
        for f in dataclasses.fields(page.Params)])
    monkeypatch.setitem(pg._REGISTRY, name, dataclasses.replace(page, Params=Changed))
    assert mb.sync_parameters([name], notebook_dir=tmp_path) == [name]
    text = (tmp_path / src.name).read_text()
    old_line = next(ln for ln in original.splitlines() if ln.startswith("with_stem = "))
    assert text == original.replace(old_line, "with_stem = True  # changed in Params")
    assert mb.parameters_source(name, tmp_path) == pg.render_parameters(pg.page(name))


def test_book_sync_parameters_command_touches_only_what_differs(tmp_path, monkeypatch, capsys):
    nbdir, bookdir = tmp_path / "notebooks", tmp_path / "book"
    shutil.copytree(REPO / "notebooks", nbdir)
    bookdir.mkdir()
    (bookdir / "_toc.yml").write_text("stale\n")
    cell = mb.parameters_source("fig1_operator", nbdir)
    path = nbdir / "fig1_operator.md"
    path.write_text(path.read_text().replace(cell, cell.replace("alpha = 0.25", "alpha = 0.3")))
    monkeypatch.setattr(mb, "NOTEBOOK_DIR", nbdir)
    monkeypatch.setattr(mb, "BOOK_DIR", bookdir)
    assert mb.main(["--sync-parameters"]) == 0
    out = capsys.readouterr().out
    assert "fig1_operator" in out and "_toc.yml" in out and out.count("rewrote") == 2
    assert path.read_text() == (REPO / "notebooks" / "fig1_operator.md").read_text()
    assert (bookdir / "_toc.yml").read_text() == mb.render_toc()


# ------------------------------------------------------------------------------------------------
# quick profile, plan, claims
def test_the_quick_profile_names_only_declared_parameters():
    for page in PAGES:
        assert set(page.quick) <= set(page.parameter_names), page.name
        got = mb.profile_parameters("quick", page.name)
        assert got == {**mb.PROFILES["quick"], **page.quick}
        assert mb.profile_parameters("default", page.name) == {}
    with pytest.raises(InputError, match="unknown profile"):
        mb.profile_parameters("fast", "intro")


def test_plan_pages_come_from_the_registry():
    from msparse.experiments import plan

    keyed = [p for p in PAGES if p.plan_key]
    assert plan.PAGES == {p.plan_key: p.module.rsplit(".", 1)[-1] for p in keyed}
    assert {it.page for it in plan.paper_plan()} == set(plan.PAGES)
    assert all(callable(p.plan_run) for p in keyed) and not any(p.plan_run for p in PAGES if not p.plan_key)


def test_run_plan_dispatches_through_each_pages_plan_run(monkeypatch, scratch_registry):
    from msparse.experiments import plan

    calls = []
    for p in PAGES:
        if p.plan_key:
            fake = (lambda key: lambda it, model, kw, progress: calls.append((key, model, it.attack)) or
                    (("aa", "bpda") if key == "fig3" else (it.attack,)))(p.plan_key)
            monkeypatch.setitem(pg._REGISTRY, p.name, dataclasses.replace(p, plan_run=fake))
    items = plan.paper_plan(8, models=["Peng2023Robust"], pages=["fig3", "table1"])
    done = plan.run_plan(items, progress=False)
    book = [it for it in items if it.in_book]
    # fig3's AA and BPDA items of one model are one call; table1 is its own
    assert calls == [("table1", "Peng2023Robust", "apgd-ce"), ("fig3", "Peng2023Robust", "aa")]
    assert [s.startswith("done") for it, s in done if it.in_book] == [True] * len(book)


def test_the_claims_ledger_collects_each_registered_pages_claims_in_book_order(monkeypatch, scratch_registry,
                                                                               no_compute):
    from msparse.experiments import claims

    with_claims = [p for p in PAGES if p.claims]
    assert [p.name for p in with_claims] == ["table1_alpha", "fig3_headline", "table2_activations",
                                             "table3_threat_models", "table4_training", "table5_centre",
                                             "table7_sites", "table8_main_vs_add"]
    seen = []
    for p in with_claims:
        fake = (lambda name: lambda kw: seen.append((name, kw)) or [name, None])(p.name)
        monkeypatch.setitem(pg._REGISTRY, p.name, dataclasses.replace(p, claims=fake))
    kw = {"results_dir": "x"}
    assert claims._collect(kw) == [p.name for p in with_claims]       # None (no claim at that α) dropped
    assert [n for n, _ in seen] == [p.name for p in with_claims] and all(k is kw for _, k in seen)


# ------------------------------------------------------------------------------------------------
# one place to add a page
def test_a_page_added_to_the_registry_is_in_the_book_list_toc_quick_profile_and_plan(scratch_registry):
    from msparse.experiments import plan

    fake = pg.register(_fake_page(plan_key="fake", plan_run=lambda it, model, kw, progress: (it.attack,)))
    pg.ORDER = pg.ORDER + (("fake_page", "fig1"),)
    assert mb.NOTEBOOKS[-1] == ("fake_page", "A fake page")
    toc = mb.render_toc()
    assert "      - file: _executed/statistics\n      - file: _executed/fake_page\n  - caption: " in toc
    assert mb.profile_parameters("quick", "fake_page") == {**mb.PROFILES["quick"], "n_examples": 2}
    assert plan.PAGES["fake"] == "fig1"
    mb._check_pages(["fake_page"])   # --only accepts it
    assert pg.page("fake_page") is fake


def test_the_registry_refuses_inconsistent_pages(scratch_registry):
    with pytest.raises(InputError, match="quick overrides n_exampels"):
        pg.register(_fake_page(quick={"n_exampels": 2}))
    with pytest.raises(InputError, match="not one of pages.PARTS"):
        pg.register(_fake_page(part="Appendix"))
    with pytest.raises(InputError, match="plan_key needs a plan_run"):
        pg.register(_fake_page(plan_key="fake"))
    with pytest.raises(InputError, match="registered twice"):
        pg.register(_fake_page(name="table1_alpha"))

    @dataclasses.dataclass
    class BadExpr:
        eps: float = pg.param(8 / 255, expr="4 / 255")

    with pytest.raises(InputError, match="not its default"):
        pg.register(_fake_page(Params=BadExpr, quick={}))
    pg.register(_fake_page())
    with pytest.raises(InputError, match="not placed in pages.ORDER"):
        pg.pages()
    pg.ORDER = pg.ORDER + (("fake_page", "fig1"), ("nowhere", "fig1"))
    with pytest.raises(InputError, match="registers no page of that name"):
        pg.pages()
    pg.ORDER = pg.ORDER[:-2] + (("fake_page", "table1"),)
    with pytest.raises(InputError, match="pages.ORDER says msparse.experiments.table1"):
        pg.pages()
    pg.ORDER = pg.ORDER[:2] + (("fake_page", "fig1"),) + pg.ORDER[2:-1]
    with pytest.raises(InputError, match="each part's pages together"):
        pg.pages()
    pg.ORDER = pg.ORDER[:2] + pg.ORDER[3:] + (("fake_page", "fig1"),)
    assert pg.pages()[-1].name == "fake_page"
    with pytest.raises(UnknownNameError, match="no page 'nosuch'"):
        pg.page("nosuch")


# ------------------------------------------------------------------------------------------------
# run(params)
@pytest.mark.parametrize("page", [p for p in PAGES if p.runner is None], ids=lambda p: p.name)
def test_page_run_calls_the_experiment_function_with_the_parameters(page, monkeypatch):
    mod = importlib.import_module(page.module)
    accepted = inspect.signature(mod.run).parameters
    passed = [n for n in page.parameter_names if n not in page.unused]
    assert set(passed) <= set(accepted), f"{page.name}: {mod.__name__}.run takes no {set(passed) - set(accepted)}"
    got = {}
    monkeypatch.setattr(mod, "run", lambda **kw: got.update(kw) or "result")
    assert page.run(page.params({"results_dir": "elsewhere"}), progress=False) == "result"
    defaults = page.Params()
    assert got == {**{n: getattr(defaults, n) for n in passed}, "results_dir": "elsewhere", "progress": False}
    got.clear()
    page.run()   # None: the notebook's defaults
    assert got == {n: getattr(defaults, n) for n in passed}


def test_page_run_of_the_chapter_runs_one_model_as_its_notebook_does(monkeypatch):
    from msparse.experiments import works

    got = {}
    monkeypatch.setattr(works, "run", lambda models, **kw: got.update(models=models, **kw))
    page = pg.page("does_it_work")
    page.run({"model": "msparse/default", "alpha": 0.25, "n_examples": 12})
    assert got["models"] == [("msparse/default", 0.25, 12)] and got["full_aa"] == ["msparse/default"]
    page.run()
    assert got["models"] == [tuple(m) for m in page.Params().models]


def test_page_run_of_the_strength_page_and_the_start_page(monkeypatch):
    from msparse.experiments import claims, strength

    calls = []
    monkeypatch.setattr(strength, "run", lambda m, **kw: calls.append(("check", m, kw["seeds"])) or m)
    monkeypatch.setattr(strength, "held_out_sweep", lambda m, alphas, **kw: calls.append(("sweep", m)) or ("h", []))
    results, studies = pg.page("attack_strength").run({"model": "msparse/default", "seed": 3})
    assert calls == [("check", "msparse/default", [3])] and results == ["msparse/default"] and studies == []
    monkeypatch.setattr(claims, "answers", lambda results_dir=None: {"from": results_dir})
    assert pg.page("intro").run({"results_dir": "store"}) == {"from": "store"}


def test_page_params_refuse_unknown_names_and_wrong_types():
    page = pg.page("table1_alpha")
    with pytest.raises(InputError, match=r"'n_exampels' \(did you mean 'n_examples'\?\).*page table1_alpha"):
        page.params(n_exampels=5)
    with pytest.raises(InputError, match="must be its Params"):
        page.run(object())
    assert page.params(n_examples=5).n_examples == 5 and page.params().alphas is not page.params().alphas


def test_a_caption_yaml_would_misread_is_quoted_in_the_toc(scratch_registry, monkeypatch):
    import yaml

    monkeypatch.setattr(pg, "PARTS", pg.PARTS + ("Odd: part #1",))
    pg.register(_fake_page(part="Odd: part #1"))
    pg.ORDER = pg.ORDER + (("fake_page", "fig1"),)
    last = yaml.safe_load(mb.render_toc())["parts"][-1]
    assert last == {"caption": "Odd: part #1", "chapters": [{"file": "_executed/fake_page"}]}
