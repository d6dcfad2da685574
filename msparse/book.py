"""The book's build: run every page's notebook with papermill, then build the Jupyter Book offline.

The pages' code lives in :mod:`msparse.experiments` (set-up, sweeps) and :mod:`msparse.report` (tables, figures,
verdicts); this module only executes the notebooks and builds the site.

    python -m msparse book            # the whole book on the offline default model (CPU, records reused)
    python -m msparse book --quick    # CI: every notebook with small parameters
    python -m msparse.book --only fig1_operator table1_alpha
    python -m msparse book --sync-parameters   # rewrite the notebooks' parameters cells and _toc.yml from the pages

Notebooks live in ``notebooks/<name>.md`` as MyST Markdown text notebooks (jupytext, no outputs); each is
read through jupytext and executed by papermill into ``book/_executed/<name>.ipynb``, and the HTML goes to
``book/_build/html/`` (both ignored). The ipywidgets JavaScript is fetched from the npm
registry at build time (``npm pack``, sha512-checked) into ``book/_widgets_js/`` (ignored), never committed.

The pages are :mod:`msparse.experiments.pages`' registry: the notebook list (:func:`notebooks`), ``_toc.yml``
(:func:`render_toc`, written into the book folder by every build and kept in the repository equal to it), each page's
quick-profile overrides and its parameters cell (:func:`sync_parameters`) all come from it.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, MsparseError, StateError
from .experiments import pages as _pages

__all__ = ["NOTEBOOKS", "PROFILES", "BUILD_PARAMETERS", "run_notebooks", "fetch_widget_js", "build_book",
           "BuildReport", "NotebookRun", "main", "run", "add_arguments", "notebooks", "profile_parameters",
           "render_toc", "write_toc", "sync_parameters", "BOOK_FILES"]

REPO = Path(__file__).resolve().parent.parent
BOOK_DIR = REPO / "book"
NOTEBOOK_DIR = REPO / "notebooks"
EXECUTED = "_executed"
WIDGET_JS = "_widgets_js"
#: written into every folder ``--book-dir`` makes: a non-empty folder without it is not msparse's to overwrite
BOOK_MARKER = ".msparse-book"

#: pages of the book that are not notebooks (``book/<name>.md``, plain MyST Markdown): ``(name, part)`` in book
#: order, the first chapters of their part (a part of reference pages, "Using msparse", has no notebook at all)
_USING = "Using msparse"
BOOK_FILES: tuple[tuple[str, str], ...] = (
    ("method", "The method"),
    ("usage_api", _USING),
    ("usage_results", _USING),
    ("usage_book", _USING),
    ("usage_training", _USING),
    ("usage_appendix", _USING),
    ("usage_scaleout", _USING),
    ("usage_performance", _USING),
    ("usage_failures", _USING),
    ("contributing", _USING),
)


def notebooks() -> tuple[tuple[str, str], ...]:
    """``(notebook name, title)`` of every page, in book order: the page registry
    (:func:`msparse.experiments.pages.pages`). ``NOTEBOOKS`` is the same, read at each access."""
    return tuple((p.name, p.title) for p in _pages.pages())


def __getattr__(name: str):
    if name == "NOTEBOOKS":
        return notebooks()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: book-wide parameter overrides per build profile ("default" = each notebook's own parameters cell); the quick
#: profile adds each page's own overrides (:attr:`msparse.experiments.pages.Page.quick`): see
#: :func:`profile_parameters`
PROFILES: dict[str, dict] = {
    "default": {},
    "quick": {"results_dir": str(BOOK_DIR / "_cache" / "results-quick")},
}


def profile_parameters(profile: str, name: str) -> dict:
    """The overrides ``profile`` gives notebook ``name``: the profile's book-wide ones, then (quick profile) the
    page's own :attr:`~msparse.experiments.pages.Page.quick` (none for a notebook that is not a registered page).
    Raises :class:`~msparse.errors.InputError` for an unknown profile."""
    if profile not in PROFILES:
        raise InputError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    page = {p.name: p for p in _pages.pages()}.get(name)
    own = dict(page.quick) if profile == "quick" and page is not None else {}
    return {**PROFILES[profile], **copy.deepcopy(own)}


#: parameters of every batch build: no live ipywidgets (a static page cannot drive them, and executing widget
#: output under nbclient can lose the kernel's reply and leave a cell waiting until its timeout)
BUILD_PARAMETERS: dict = {"live": False}

_NPM = {  # package@version -> (sha512 integrity, {file in the tarball: file name in _widgets_js})
    "requirejs@2.3.8": ("sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
                        {"package/require.js": "require.js"}),
    "@jupyter-widgets/html-manager@1.0.15": (
        "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        {"package/dist/embed-amd.js": "embed-amd.js", "package/dist/*.woff2": None, "package/dist/*.woff": None,
         "package/dist/*.ttf": None, "package/dist/*.eot": None, "package/dist/*.svg": None}),
}


# ================================================================================================
# running notebooks
# ================================================================================================
def _placeholder(path: Path, name: str, title: str, why: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n⏳ **Not yet run here** — {why}\n\n"
                                              f"Run `python -m msparse book --only {name}` to execute it.")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


@dataclass
class NotebookRun:
    name: str
    ok: bool
    seconds: float
    error: str = ""


NOTEBOOK_SUFFIX = ".md"  # MyST Markdown text notebooks (jupytext); papermill runs their .ipynb conversion


def _ipc_kernel_manager():
    """nbclient's kernel manager talking to the kernel over local IPC sockets instead of TCP on localhost: ipykernel
    warns "Kernel is running over TCP without encryption" at every start over TCP (once per page in the build's
    output); over IPC there is no network socket to warn about. Errors are reported as before."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self):
            return "ipc"

    return IPCKernelManager


def notebook_path(name: str, notebook_dir: Path | None = None) -> Path:
    """The source of notebook ``name``: ``notebooks/<name>.md`` (a MyST Markdown text notebook)."""
    return Path(notebook_dir or NOTEBOOK_DIR) / f"{name}{NOTEBOOK_SUFFIX}"


def read_notebook(name: str, notebook_dir: Path | None = None):
    """Notebook ``name`` read through jupytext, as an ``nbformat`` v4 notebook (no outputs)."""
    import jupytext

    nb = jupytext.read(notebook_path(name, notebook_dir), fmt="md:myst")
    nb.metadata.pop("jupytext", None)  # the executed .ipynb is not paired with the text file
    return nb


def _yaml_scalar(text: str) -> str:
    """``text`` as a YAML scalar: plain where YAML reads it back as this string, else double-quoted (JSON, which
    YAML reads)."""
    import yaml

    try:
        plain = yaml.safe_load(f"k: {text}") == {"k": text}
    except yaml.YAMLError:
        plain = False
    return text if plain and "\n" not in text else json.dumps(text, ensure_ascii=False)


def render_toc() -> str:
    """``_toc.yml`` of the book from the page registry: the start page as ``root``, then each part of
    :data:`msparse.experiments.pages.PARTS` that has pages, with its :data:`BOOK_FILES` first and its pages'
    executed notebooks in book order."""
    pages = _pages.pages()
    lost = [n for n, part in BOOK_FILES if part not in _pages.PARTS]
    if lost:
        raise InputError(f"book.BOOK_FILES: {', '.join(lost)} in a part that is not one of pages.PARTS")
    lines = ["format: jb-book", f"root: {EXECUTED}/{pages[0].name}", "parts:"]
    for part in _pages.PARTS:
        files = [n for n, where in BOOK_FILES if where == part]
        files += [f"{EXECUTED}/{p.name}" for p in pages[1:] if p.part == part]
        if files:
            lines += [f"  - caption: {_yaml_scalar(part)}", "    chapters:"] + [f"      - file: {f}" for f in files]
    return "\n".join(lines) + "\n"


def write_toc(book: Path, log=None) -> bool:
    """Write :func:`render_toc` to ``<book>/_toc.yml`` when it differs (atomically); True when it wrote. The
    repository's ``book/_toc.yml`` is kept equal to it (tests/test_pages.py), so a build rewrites it only after a
    page was added, moved or renamed in the registry."""
    from ._io import atomic_write_text

    path, text = Path(book) / "_toc.yml", render_toc()
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write_text(path, text)
    if log is not None:
        log(f"{path}: written from the page registry (msparse/experiments/pages.py)", flush=True)
    return True


def _parameters_cell(nb, name: str):
    tagged = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise InputError(f"notebook {name} has {len(tagged)} cells tagged parameters; it needs exactly one")
    return tagged[0]


def parameters_source(name: str, notebook_dir: Path | None = None) -> str:
    """The source of notebook ``name``'s parameters cell (the one code cell tagged ``parameters``)."""
    return _parameters_cell(read_notebook(name, notebook_dir), name).source


def sync_parameters(names: Sequence[str] | None = None, notebook_dir: Path | None = None) -> list[str]:
    """Rewrite the parameters cell of each page's notebook (``names``, default every page) from its ``Params``
    (:func:`msparse.experiments.pages.render_parameters`), leaving every other byte of the file as it is; returns
    the names of the notebooks it changed. Raises :class:`~msparse.errors.InputError` when a cell's text cannot be
    found once in its file (edit that cell by hand to match the rendering)."""
    from ._io import atomic_write_text

    changed = []
    for name in names or [n for n, _ in notebooks()]:
        want = _pages.render_parameters(_pages.page(name))
        have = parameters_source(name, notebook_dir)
        if have == want:
            continue
        path = notebook_path(name, notebook_dir)
        text = path.read_text(encoding="utf-8")
        if not have.strip() or text.count(have) != 1:
            raise InputError(f"{path}: the parameters cell's text is not found exactly once in the file; replace the "
                             f"cell's code by hand with:\n{want}")
        atomic_write_text(path, text.replace(have, want))
        if parameters_source(name, notebook_dir) != want:   # the file still reads back as a notebook with that cell
            atomic_write_text(path, text)
            raise InputError(f"{path}: rewriting the parameters cell did not give the rendering; the file is left "
                             "as it was")
        changed.append(name)
    return changed


def run_notebooks(names: Sequence[str] | None = None, *, profile: str = "default", out_dir: Path | None = None,
                  parameters: Mapping | None = None, notebook_dir: Path | None = None, timeout: int | None = None,
                  progress: bool = True, log=print) -> list[NotebookRun]:
    """Execute notebooks with papermill (profile overrides + ``parameters``, restricted to the parameters
    each notebook declares); the executed copies go to ``out_dir`` (default ``book/_executed``).

    A name in ``parameters`` that no selected notebook declares raises :class:`~msparse.errors.InputError`
    before anything runs (profile overrides are applied where declared, silently: they cover every page).

    Each ``notebooks/<name>.md`` is converted by jupytext into a temporary ``.ipynb`` for papermill; nothing is
    written next to the sources."""
    import jupytext
    import papermill as pm

    if profile not in PROFILES:
        raise InputError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    notebook_dir = Path(notebook_dir or NOTEBOOK_DIR)
    out_dir = Path(out_dir or BOOK_DIR / EXECUTED)
    out_dir.mkdir(parents=True, exist_ok=True)
    known = [n for n, _ in notebooks()]
    names = list(names) if names else known
    paths = [n for n in names if not isinstance(n, str) or n in ("", ".", "..") or Path(n).name != n]
    if paths:   # each name is also the executed copy's file name in out_dir: never a path out of it
        raise InputError(f"notebook names are plain names without a folder, got {', '.join(map(repr, paths))}; "
                         f"notebooks: {', '.join(known)}")
    bad = [n for n in names if not notebook_path(n, notebook_dir).is_file()]
    if bad:
        raise InputError(f"no notebook {', '.join(bad)} in {notebook_dir} (looked for <name>{NOTEBOOK_SUFFIX}); "
                         f"notebooks: {', '.join(known)}")
    runs = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="msparse-notebooks-") as tmp:
        ipynbs, declared_by = {}, {}
        for name in names:
            ipynbs[name] = Path(tmp) / f"{name}.ipynb"
            jupytext.write(read_notebook(name, notebook_dir), ipynbs[name], fmt="ipynb")
            declared_by[name] = set(pm.inspect_notebook(str(ipynbs[name])))
        _check_parameters(parameters or {}, declared_by)
        for i, name in enumerate(names, 1):
            src = notebook_path(name, notebook_dir)
            ipynb = ipynbs[name]
            declared = declared_by[name]
            merged = {**BUILD_PARAMETERS, **profile_parameters(profile, name), **(parameters or {})}
            params = {k: v for k, v in merged.items() if k in declared}
            if progress:
                shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "notebook defaults"
                log(f"[{i}/{len(names)}] {name} ({shown}) ...", flush=True)
            t0 = time.perf_counter()
            err = ""
            out = out_dir / f"{name}.ipynb"
            try:
                pm.execute_notebook(str(ipynb), str(out), parameters=params, progress_bar=False,
                                    cwd=str(REPO), kernel_name="python3", execution_timeout=timeout,
                                    stdout_file=_Indented(sys.stdout) if progress else None,
                                    raise_on_iopub_timeout=True,  # a lost output message fails, never passes
                                    kernel_manager_class=_ipc_kernel_manager())
            except Exception as e:  # papermill keeps the failed notebook with its error output
                err = _first_error_line(e)
                err += _failed_cell(out, err)
            finally:
                _record_source(out, src)
            dt = time.perf_counter() - t0
            runs.append(NotebookRun(name, not err, dt, err))
            if progress:
                log(f"[{i}/{len(names)}] {name}: {'ok' if not err else 'FAILED: ' + err} in {dt:.1f} s "
                    f"(total {time.perf_counter() - t_all:.0f} s)", flush=True)
    return runs


def _check_parameters(parameters: Mapping, declared_by: Mapping[str, set]) -> None:
    """Raise :class:`~msparse.errors.InputError`, before any notebook runs, for a parameter name that none of the
    selected notebooks declares (a typo would otherwise run every page with its defaults). A name some of them
    declare is passed to those only (e.g. ``model`` to every page that takes one)."""
    from .experiments.setup import check_parameter_names

    names = list(declared_by)
    where = f"notebook {names[0]}" if len(names) == 1 else f"any of the {len(names)} notebooks selected"
    check_parameter_names(parameters, set().union(*declared_by.values()) if names else set(), where)


def _record_source(executed: Path, src: Path) -> None:
    """Point the executed notebook's ``papermill.input_path`` at the text notebook, not the temporary .ipynb."""
    import nbformat

    if not executed.is_file():
        return
    try:
        shown = str(src.resolve().relative_to(REPO))
    except ValueError:
        shown = str(src)
    nb = nbformat.read(str(executed), as_version=4)
    nb.metadata.setdefault("papermill", {})["input_path"] = shown
    nbformat.write(nb, str(executed))


class _Indented:
    """Forwards a notebook's stdout (e.g. the per-α progress lines) to the terminal, indented."""

    def __init__(self, stream):
        self.stream, self._bol = stream, True

    def write(self, text: str) -> None:
        for ch in text.splitlines(keepends=True):
            self.stream.write(("    " if self._bol else "") + ch)
            self._bol = ch.endswith("\n")

    def flush(self) -> None:
        self.stream.flush()


def _failed_cell(executed: Path, error: str = "") -> str:
    """`` (cell N: first source line)`` of the cell that stopped the run of ``executed``.

    papermill marks a failed cell, but leaves a cell that ran past its timeout as "completed" without an
    exception; that cell is the last one that started. It is then marked failed, with an error output that
    says so, so the rendered page shows the failure instead of a silently truncated notebook."""
    import nbformat

    try:
        nb = nbformat.read(str(executed), as_version=4)
    except Exception:  # no executed copy was written
        return ""
    meta = [c.get("metadata", {}).get("papermill", {}) for c in nb.cells]
    idx = next((i for i, m in enumerate(meta) if m.get("status") == "failed" or m.get("exception")), None)
    if idx is None:
        started = [i for i, m in enumerate(meta) if m.get("start_time")]
        if not started:
            return ""
        idx = started[-1]
        cell = nb.cells[idx]
        cell.metadata.setdefault("papermill", {}).update(status="failed", exception=True)
        cell.setdefault("outputs", []).append(nbformat.v4.new_output(
            "error", ename="CellTimeoutError", evalue=f"this cell did not finish: {error}", traceback=[]))
        nbformat.write(nb, str(executed))
    first = next((ln for ln in nb.cells[idx].get("source", "").splitlines() if ln.strip()), "")
    return f" (cell {idx}: {first.strip()[:80]})"


def _first_error_line(e: BaseException) -> str:
    ename, evalue = getattr(e, "ename", None), getattr(e, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"


# ================================================================================================
# widget JavaScript from the npm registry
# ================================================================================================
def _sha512(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch_widget_js(dest: Path | None = None, log=print) -> Path:
    """Fetch require.js and @jupyter-widgets/html-manager's ``embed-amd.js`` (plus its fonts) from the npm
    registry with ``npm pack`` into ``dest`` (default ``book/_widgets_js``), checking each tarball's sha512.
    Does nothing when the files are already there."""
    import fnmatch

    dest = Path(dest or BOOK_DIR / WIDGET_JS)
    stamp = dest / ".fetched.json"

    def fresh(d: Path) -> bool:
        st = d / ".fetched.json"
        return st.is_file() and json.loads(st.read_text()) == sorted(_NPM) and (d / "embed-amd.js").is_file()

    if fresh(dest):
        return dest
    cache = BOOK_DIR / WIDGET_JS
    if cache.resolve() != dest.resolve() and fresh(cache):  # an earlier fetch for the repository's book
        shutil.copytree(cache, dest, dirs_exist_ok=True)
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise StateError("npm is not installed: the book fetches the ipywidgets JavaScript from the npm registry "
                           "at build time (apt-get install nodejs npm), or build with --no-widget-js")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        log(f"fetching widget JavaScript from the npm registry: {', '.join(_NPM)}", flush=True)
        proc = subprocess.run([npm, "pack", "--silent", *_NPM], cwd=tmp, capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise StateError(f"npm pack failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        tgz = {p.name: p for p in Path(tmp).glob("*.tgz")}
        for spec, (integrity, files) in _NPM.items():
            name, version = spec.rsplit("@", 1)
            fname = f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
            if fname not in tgz:
                raise StateError(f"npm pack did not produce {fname} (got {sorted(tgz)})")
            if _sha512(tgz[fname]) != integrity:
                raise StateError(f"{fname}: sha512 does not match the pinned integrity {integrity}")
            with tarfile.open(tgz[fname]) as tf:
                for member in tf.getmembers():
                    for pattern, target in files.items():
                        if member.isfile() and fnmatch.fnmatch(member.name, pattern):
                            out = dest / (target or Path(member.name).name)
                            out.write_bytes(tf.extractfile(member).read())
    stamp.write_text(json.dumps(sorted(_NPM)))
    return dest


# ================================================================================================
# building the book
# ================================================================================================
@dataclass
class BuildReport:
    html: Path
    runs: list
    seconds: float
    build_seconds: float
    ok: bool
    log: str = ""

    @property
    def failed(self) -> list:
        return [r for r in self.runs if not r.ok]


def _copy_sources(dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in BOOK_DIR.iterdir():
        if f.is_file() and f.suffix in (".md", ".yml", ".bib"):
            shutil.copy2(f, dst / f.name)
    shutil.copytree(BOOK_DIR / "_css", dst / "_css", dirs_exist_ok=True)   # the book's style sheet


def build_book(profile: str = "default", only: Sequence[str] | None = None, *, book_dir: Path | None = None,
               execute: bool = True, widget_js: bool = True, parameters: Mapping | None = None,
               timeout: int | None = None, progress: bool = True, log=print) -> BuildReport:
    """Set up and build the whole book: fetch the widget JS, execute the notebooks (``only`` a subset; the
    others keep their last executed copy or get a 'not yet run here' page), then ``jupyter-book build``.

    ``book_dir``: where to build (default the repository's ``book/``; a different folder gets a copy of the
    book's sources — used by the tests — and must be new, empty or made by an earlier build: see
    :func:`_claim_book_dir`). ``only``: page names of :func:`notebooks`. ``_toc.yml`` is written from the page
    registry (:func:`write_toc`). Returns a :class:`BuildReport`; the
    HTML is ``<book>/_build/html``.
    """
    t0 = time.perf_counter()
    book = Path(book_dir) if book_dir else BOOK_DIR
    _check_pages(only)
    if book.resolve() != BOOK_DIR.resolve():
        _claim_book_dir(book)
        _copy_sources(book)
    executed = book / EXECUTED
    if widget_js:
        try:
            fetch_widget_js(book / WIDGET_JS, log=log)
        except Exception as e:
            log(f"WARNING: widget JavaScript not fetched ({e}); live widgets will render blank in the static book "
                "(the kernel-free α slider does not need it)", flush=True)
    runs = []
    if execute:
        runs = run_notebooks(only, profile=profile, out_dir=executed, parameters=parameters, timeout=timeout,
                             progress=progress, log=log)
    write_toc(book, log=log if progress else None)
    for name, title in notebooks():
        if not (executed / f"{name}.ipynb").is_file():
            _placeholder(executed / f"{name}.ipynb", name, title, "this build did not execute this notebook.")
    if not (book / WIDGET_JS).is_dir():
        (book / WIDGET_JS).mkdir(parents=True)
    if progress:
        log("building the book (jupyter-book build) ...", flush=True)
    t1 = time.perf_counter()
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.is_file() else "jupyter-book", "build", str(book), "--all"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    build_s = time.perf_counter() - t1
    html = book / "_build" / "html"
    ok = proc.returncode == 0 and (html / "index.html").is_file()
    if not ok:
        log(proc.stdout[-3000:] + proc.stderr[-3000:], flush=True)
    report = BuildReport(html, runs, time.perf_counter() - t0, build_s, ok and not any(not r.ok for r in runs),
                         proc.stdout[-5000:] + proc.stderr[-5000:])
    if progress:
        log(f"book: {html / 'index.html'} — {len(runs)} notebooks executed, {len(report.failed)} failed, "
            f"jupyter-book {build_s:.0f} s, total {report.seconds:.0f} s", flush=True)
        for r in report.failed:
            log(f"  FAILED {r.name}: {r.error}", flush=True)
    return report


def _check_pages(names: Sequence[str] | None) -> None:
    """Raise :class:`~msparse.errors.InputError` unless every name is a page of the book (:func:`notebooks`):
    a name is also a file name under ``_executed/``, so a path (``../x``, ``/tmp/x``) must never get through."""
    known = [n for n, _ in notebooks()]
    bad = [n for n in names or () if n not in known]
    if bad:
        raise InputError(f"--only {' '.join(map(repr, bad))}: not a page of the book; give page names "
                         f"(python -m msparse book --list): {', '.join(known)}")


def _claim_book_dir(book: Path) -> None:
    """Make ``book`` a build folder of msparse's (created with :data:`BOOK_MARKER` in it), or accept it when
    it is one already or empty; refuse (:class:`~msparse.errors.InputError`) a file or a non-empty folder that
    msparse did not make, whose files the build would overwrite."""
    from ._io import atomic_write_text

    if book.exists() and not book.is_dir():
        raise InputError(f"--book-dir {book} is a file: give a new or empty folder")
    if book.is_dir() and not (book / BOOK_MARKER).is_file() and any(book.iterdir()):
        raise InputError(f"--book-dir {book} is a folder msparse did not make and is not empty (no "
                         f"{BOOK_MARKER} in it): the build would overwrite its files; give a new or empty folder")
    if not (book / BOOK_MARKER).is_file():
        atomic_write_text(book / BOOK_MARKER, "a book build folder made by msparse (python -m msparse book "
                                              "--book-dir); msparse may overwrite any file in it\n")


def _positive_seconds(text: str) -> int:
    """``--timeout``: a whole number of seconds > 0 (argparse turns the error into one line and exit 2)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {v}")
    return v


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``book`` command's options (for ``python -m msparse book``; see :func:`run`)."""
    ap.add_argument("--quick", action="store_true", help="small parameters for every notebook (CI)")
    ap.add_argument("--profile", choices=sorted(PROFILES), default=None, help="parameter profile (default: default)")
    ap.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="execute only these notebooks")
    ap.add_argument("--no-execute", action="store_true", help="rebuild the HTML from the last executed notebooks")
    ap.add_argument("--no-widget-js", action="store_true", help="do not fetch the ipywidgets JavaScript from npm")
    ap.add_argument("--device", default=None, help="cpu, cuda or auto (passed to every notebook)")
    ap.add_argument("--results-dir", default=None, help="results store (default: $MSPARSE_RESULTS or results/)")
    ap.add_argument("--model", default=None, help="model for every notebook that takes one (default: each notebook's)")
    ap.add_argument("--timeout", type=_positive_seconds, default=7200,
                    help="per-cell timeout in seconds (default 7200; a stuck kernel fails instead of hanging)")
    ap.add_argument("--book-dir", default=None, help="build somewhere else (a copy of the book's sources): a new or "
                                                     "empty folder, or one an earlier --book-dir build made")
    ap.add_argument("--recompute-other-versions", action="store_true",
                    help="treat stored records computed under another torch minor or pyautoattack version than the "
                         "running ones as missing: recompute (and overwrite) them here")
    from .evaluation.executor import cluster_arg

    ap.add_argument("--cluster", type=cluster_arg, default=None,
                    help="compute the pages' missing records on a Dask cluster: local:N, tcp://host:8786 or slurm:N "
                         "(default in-process; see book/usage_scaleout.md)")
    ap.add_argument("--list", action="store_true", help="list the notebooks and exit")
    ap.add_argument("--sync-parameters", action="store_true",
                    help="rewrite each notebook's parameters cell (with --only: those notebooks') and book/_toc.yml "
                         "from the page registry (msparse/experiments/pages.py and each page's Params), then exit")
    return ap


def run(a: argparse.Namespace) -> int:
    """Run the ``book`` command from parsed arguments; returns the exit code (1 if a notebook or the build failed)."""
    if a.list:
        for n, t in notebooks():
            print(f"{n:22s} {t}")
        return 0
    if getattr(a, "sync_parameters", False):
        _check_pages(a.only)
        changed = sync_parameters(a.only)
        toc = write_toc(BOOK_DIR)
        for name in changed:
            print(f"rewrote the parameters cell of {notebook_path(name)}")
        if toc:
            print(f"rewrote {BOOK_DIR / '_toc.yml'}")
        if not changed and not toc:
            print("every parameters cell and book/_toc.yml already match the page registry")
        return 0
    profile = a.profile or ("quick" if a.quick else "default")
    if getattr(a, "recompute_other_versions", False):
        from .evaluation.store import RECOMPUTE_ENV

        os.environ[RECOMPUTE_ENV] = "1"  # read by every Store, in this process and in the notebook kernels
    if getattr(a, "cluster", None):
        from .evaluation.executor import ENV_VAR

        os.environ[ENV_VAR] = a.cluster   # read by the sweep engine in every kernel
    params = {k: v for k, v in {"device": a.device, "results_dir": a.results_dir, "model": a.model}.items()
              if v is not None}
    report = build_book(profile, a.only, book_dir=Path(a.book_dir) if a.book_dir else None,
                        execute=not a.no_execute, widget_js=not a.no_widget_js, parameters=params,
                        timeout=a.timeout)
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m msparse.book [options]`` (the same options as ``python -m msparse book``)."""
    ap = argparse.ArgumentParser(prog="msparse book", description=(
        "Execute every notebook with papermill (stored result records are reused; missing ones are computed) "
        "and build the static book into book/_build/html."))
    args = add_arguments(ap).parse_args(argv)
    try:
        return run(args)
    except MsparseError as e:   # one line, as from python -m msparse book
        print(f"msparse book: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
