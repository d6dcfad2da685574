"""The book: parameter validation, the notebooks' contract, the offline JS wiring, and the built pages as a
reader sees them (headless Chromium screenshots)."""

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from msparse import book as mb
from msparse.experiments import setup as es, sweeps as sw

REPO = Path(__file__).resolve().parent.parent


def built_book_html() -> str | None:
    """The built book the page checks read: ``$MSPARSE_BOOK_HTML`` when set, else ``book/_build/html`` when a build
    (README command 1) left its ``index.html`` there, else None (those checks skip)."""
    default = REPO / "book" / "_build" / "html"
    return os.environ.get("MSPARSE_BOOK_HTML") or (str(default) if (default / "index.html").is_file() else None)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RANDOM = "random:resnet18-gelu-w16"  # the pages' rendering does not depend on the weights


# ------------------------------------------------------------------------------------------------
# parameters
@pytest.mark.parametrize("params, message", [
    ({"model": "no-such-model"}, "unknown model"),
    ({"n_examples": 0}, "n_examples must be a positive integer"),
    ({"n_train": -5}, "n_train must be a positive integer"),
    ({"alphas": [0.0, -0.1]}, "alphas"),
    ({"alpha": -1}, "alpha"),
    ({"attack": "pgd-999"}, "unknown attack"),
    ({"eps": 8}, "eps must be in"),
    ({"dataset": "imagenet"}, "cifar10"),
    ({"data_source": "web"}, "data_source"),
    ({"use_stored": "yes"}, "use_stored"),
])
def test_check_params_rejects_broken_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        es.check_params(**params)


def test_check_params_accepts_good_parameters():
    p = es.check_params(model="msparse/default", n_examples=10, alphas=[0, 0.25], attack="bpda", eps=8 / 255,
                        device="cpu", seed=0, use_stored=True)
    assert p["alphas"] == [0.0, 0.25]
    es.check_params(model=RANDOM)


# ------------------------------------------------------------------------------------------------
# the notebooks' contract
def _notebooks():
    return sorted((REPO / "notebooks").glob("*.md"))


def test_every_notebook_is_a_myst_text_notebook_with_one_parameters_cell():
    import jupytext

    names = [n for n, _ in mb.NOTEBOOKS]
    assert sorted(p.stem for p in _notebooks()) == sorted(names), "notebooks/*.md and mb.NOTEBOOKS differ"
    for name in names:
        path = REPO / "notebooks" / f"{name}.md"
        assert path.is_file() and mb.notebook_path(name) == path, name
        nb = jupytext.read(path, fmt="md:myst")
        assert nb.metadata["jupytext"]["text_representation"]["format_name"] == "myst", name
        assert nb.metadata["kernelspec"]["name"] == "python3", name
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and tagged[0].cell_type == "code", f"{name}: exactly one parameters cell"
    assert not list((REPO / "notebooks").glob("*.ipynb")), "generated .ipynb in notebooks/"
    tracked = subprocess.run(["git", "ls-files", "notebooks"], cwd=REPO, capture_output=True, text=True).stdout
    tracked = [f for f in tracked.split() if (REPO / f).exists()]  # a deletion not yet committed is not tracked
    assert not [f for f in tracked if f.endswith(".ipynb")], "notebooks/ must hold text notebooks only"
    assert not [f for f in tracked if f.endswith(".py")], "no notebook generator"


def test_every_notebook_has_parameters_and_validates_them_first(tmp_path):
    import jupytext
    import papermill as pm

    assert _notebooks(), "no notebooks"
    for path in _notebooks():
        nb = mb.read_notebook(path.stem)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), path.name
        assert "es.check_params(" in code[1].source, f"{path.name}: the first cell must validate the parameters"
        jupytext.write(nb, tmp_path / f"{path.stem}.ipynb", fmt="ipynb")
        declared = pm.inspect_notebook(str(tmp_path / f"{path.stem}.ipynb"))
        assert {"model", "device", "seed", "use_stored"} <= set(declared), path.name
        assert all(not c.get("outputs") for c in code), f"{path.name} is committed with outputs"


def test_book_toc_lists_every_notebook_in_order():
    toc = (REPO / "book" / "_toc.yml").read_text()
    listed = re.findall(r"(?:root|file): _executed/(\w+)", toc)
    assert listed == [n for n, _ in mb.NOTEBOOKS]
    assert {p.stem for p in _notebooks()} <= set(listed)


def test_widget_js_comes_from_npm_at_build_time_not_from_the_repository():
    import yaml

    cfg = yaml.safe_load((REPO / "book" / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"
    sph = cfg["sphinx"]["config"]
    assert list(sph["nb_ipywidgets_js"]) == ["require.js", "embed-amd.js"]
    assert sph["html_static_path"] == [mb.WIDGET_JS, "_css"]
    assert not list((REPO / "book" / "_css").glob("*.js")), "the book's own static folder holds style sheets only"
    assert not (REPO / "book" / "_static").exists(), "JB1 would add every _static/*.js to every page"
    tracked = subprocess.run(["git", "ls-files", "book", "notebooks"], cwd=REPO, capture_output=True, text=True).stdout
    assert not [f for f in tracked.split() if f.endswith(".js")], "third-party JS must not be committed"
    ignored = (REPO / "book" / ".gitignore").read_text()
    for d in ("_build/", "_executed/", "_widgets_js/"):
        assert d in ignored


def test_broken_parameters_fail_the_notebook_with_a_clear_message(tmp_path):
    import nbformat

    before = sorted(p.name for p in (REPO / "notebooks").iterdir())
    (run,) = mb.run_notebooks(["fig1_operator"], out_dir=tmp_path, parameters={"n_train": 0}, progress=False,
                              timeout=600)
    assert not run.ok and "n_train must be a positive integer" in run.error, run.error
    nb = nbformat.read(str(tmp_path / "fig1_operator.ipynb"), as_version=4)  # papermill keeps the failed copy
    assert nb.metadata["papermill"]["parameters"] == {"n_train": 0}
    assert nb.metadata["papermill"]["input_path"] == "notebooks/fig1_operator.md"
    assert any(o.get("ename") == "InputError" for c in nb.cells for o in c.get("outputs", []))
    assert sorted(p.name for p in (REPO / "notebooks").iterdir()) == before, "nothing may be written to notebooks/"


def test_static_slider_html_switches_frames_without_a_script_tag():
    from msparse.report import plots, widgets
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = []
    for a in (0.0, 0.5):
        fig = plots.operator_curve(0.0, 1.0, a)
        frames.append((f"α = {a:g}", plots.to_png(fig)))
    html = widgets.static_slider(frames, title="alpha")
    assert '<input type="range" min="0" max="1"' in html
    assert html.count('class="ms-frame"') == 2 and "<script" not in html
    assert "oninput=" in html


# ------------------------------------------------------------------------------------------------
# the built book, as a reader sees it
@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    if shutil.which("npm") is None and not (REPO / "book" / mb.WIDGET_JS / "embed-amd.js").is_file():
        pytest.skip("npm not installed and no fetched widget JS")
    full = built_book_html()
    if full and all((Path(full) / "_executed" / f"{n}.html").is_file() for n in ("fig1_operator", "alpha_explorer")):
        return Path(full).resolve()  # CI: the book README command 1 built, read as a reader would
    root = tmp_path_factory.mktemp("book")
    report = mb.build_book("quick", ["fig1_operator", "alpha_explorer"], book_dir=root / "book",
                           parameters={"model": RANDOM, "results_dir": str(root / "results")}, progress=False,
                           timeout=900)
    assert report.ok, report.log + "\n".join(f"{r.name}: {r.error}" for r in report.failed)
    return report.html


def _screenshot(page: Path, out: Path) -> bytes:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--no-first-run", "--disable-sync",
                        f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--window-size=1280,3000",
                        f"--screenshot={out}", page.as_uri()], capture_output=True, timeout=180)
    assert out.is_file(), f"chromium wrote no screenshot of {page}"
    return out.read_bytes()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
@pytest.mark.parametrize("page", ["index.html", "_executed/fig1_operator.html", "_executed/alpha_explorer.html"])
def test_built_pages_render_non_blank_in_chromium(built_book, page, tmp_path):
    from msparse.report.plots import is_blank_png

    path = built_book / page
    assert path.is_file()
    png = _screenshot(path, tmp_path / "shot.png")
    assert not is_blank_png(png, tol=5.0), f"{page} renders blank"


def test_figure_pages_contain_figures_and_the_slider(built_book):
    from msparse.report.plots import is_blank_png
    import base64

    fig1 = (built_book / "_executed" / "fig1_operator.html").read_text()
    imgs = re.findall(r'<img[^>]+src="([^"]+\.png)"', fig1)
    assert len(imgs) >= 2, "Fig. 1 and Fig. 2 should be images"
    for src in imgs:
        assert not is_blank_png((built_book / "_executed" / src).read_bytes())
    assert "Verdict:" not in fig1 and "carries no verdict" in fig1   # a page without numbers claims nothing

    explorer = (built_book / "_executed" / "alpha_explorer.html").read_text()
    assert re.search(r'<input type="range"[^>]*oninput=', explorer), "kernel-free α slider missing"
    frames = re.findall(r'class="ms-frame"[^>]*src="data:image/png;base64,([^"]+)"', explorer)
    assert len(frames) >= 2
    assert not any(is_blank_png(base64.b64decode(f)) for f in frames)


def test_widget_js_is_served_from_the_book_itself(built_book):
    page = (built_book / "_executed" / "alpha_explorer.html").read_text()
    if "application/vnd.jupyter.widget-state+json" not in page:
        pytest.skip("no widget state in this page")
    assert re.search(r'<script src="\.\./_static/require\.js', page)
    assert re.search(r'<script src="\.\./_static/embed-amd\.js', page)
    assert "cdn.jsdelivr.net" not in page and "cdnjs.cloudflare.com" not in page
    assert (built_book / "_static" / "embed-amd.js").is_file()


# ------------------------------------------------------------------------------------------------
# a full build (CI: `python -m msparse book --quick`, then MSPARSE_BOOK_HTML=book/_build/html pytest ...)
_FULL = built_book_html()
#: pages that check no number of the paper (a redrawn figure, an interactive explorer): no verdict line
PAGES_WITHOUT_NUMBERS = ("fig1_operator", "alpha_explorer", "attack_strength")  # no claim of the paper to judge


@pytest.mark.skipif(not _FULL, reason="no built book: run python -m msparse book (or set MSPARSE_BOOK_HTML)")
@pytest.mark.parametrize("name", [n for n, _ in mb.NOTEBOOKS])
def test_every_page_of_a_full_build_has_figures_a_verdict_and_no_traceback(name, tmp_path):
    from msparse.report.plots import is_blank_png

    page = Path(_FULL).resolve() / "_executed" / f"{name}.html"
    text = page.read_text()
    assert "Not yet run here** — this build did not execute" not in text, f"{name} was not executed"
    if name in PAGES_WITHOUT_NUMBERS:
        assert "Verdict:" not in text, f"{name} has no numbers of the paper to check, but shows a verdict"
    else:
        assert "Verdict:" in text, f"{name} has no verdict line"
    assert 'class="output traceback' not in text and "Traceback (most recent call last)" not in text, f"{name} failed"
    outside = [w for w in ("spec.md", "architecture.md", "stack.md", "shared/reference", "/work/") if w in text]
    assert not outside, f"{name} refers to documents outside the repository: {outside}"
    files = re.findall(r'<img[^>]+src="(?!data:)([^"]+\.png)"', text)
    inline = re.findall(r'<img[^>]+src="data:image/png;base64,([^"]+)"', text)
    assert files or inline, f"{name} has no figure"
    for data in [(page.parent / src).read_bytes() for src in files] + [base64.b64decode(b) for b in inline]:
        assert not is_blank_png(data), f"{name}: blank figure"
    if CHROMIUM:
        assert not is_blank_png(_screenshot(page, tmp_path / "shot.png"), tol=5.0)


def test_adaptive_attacks_at_alpha_zero_reuse_the_direct_record():
    from msparse.attacks.base import canonical_name, direct_equivalent, parse_attack
    def direct(name):
        return canonical_name(direct_equivalent(parse_attack(name)))
    assert direct("bpda") == "apgd-ce+t"
    assert direct("transfer:apgd") == "apgd"
    assert direct("apgd-ce") == "apgd-ce"
    assert direct("worst:apgd,bpda:apgd") == "apgd"


def test_worst_case_counts_an_image_robust_only_if_it_survives_every_attack():
    a = [dict(alpha=0.0, n=4, clean=100.0, robust=75.0, attack="apgd", robust_flags="1110"),
         dict(alpha=0.3, n=4, clean=100.0, robust=75.0, attack="apgd", robust_flags="1101", d_robust=0.0, p_robust=1.0)]
    b = [dict(alpha=0.0, n=4, clean=100.0, robust=50.0, attack="transfer:apgd", robust_flags="0110"),
         dict(alpha=0.3, n=4, clean=100.0, robust=25.0, attack="transfer:apgd", robust_flags="0001")]
    w = sw.worst_case(a, b)
    assert [r["robust_flags"] for r in w] == ["0110", "0001"] and [r["robust"] for r in w] == [50.0, 25.0]
    assert w[0]["attack"] == "worst of apgd, transfer:apgd" and "p_robust" not in w[0]
    assert w[1]["d_robust"] == pytest.approx(-25.0)          # recomputed against the worst case at alpha 0
    with pytest.raises(ValueError, match="same alpha"):
        sw.worst_case(a, b[::-1])


def test_a_cell_that_runs_past_its_timeout_fails_the_notebook_and_names_the_cell(tmp_path):
    (tmp_path / "slow.md").write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
        "```{code-cell}\n:tags: [parameters]\n\nx = 1\n```\n\n"
        "```{code-cell}\nimport time; time.sleep(60)  # the stuck cell\n```\n")
    runs = mb.run_notebooks(["slow"], notebook_dir=tmp_path, out_dir=tmp_path / "out", timeout=5, progress=False)
    assert len(runs) == 1 and not runs[0].ok
    assert "import time; time.sleep(60)" in runs[0].error and "cell" in runs[0].error


@pytest.mark.skipif(not _FULL, reason="no built book: run python -m msparse book (or set MSPARSE_BOOK_HTML)")
@pytest.mark.parametrize("name", [n for n, _ in mb.NOTEBOOKS])
def test_every_number_a_page_cites_is_its_records_number(name):
    """Each record in a page's provenance table is a committed (or freshly computed) record of the store, with
    the page's n and α, and its accuracy (robust; clean for clean-only records) is printed on the page."""
    import html as _html

    from msparse.evaluation.store import Store

    page = Path(_FULL).resolve() / "_executed" / f"{name}.html"
    text = page.read_text()
    plain = _html.unescape(re.sub(r"<[^>]+>", " ", text))
    st = Store(os.environ.get("MSPARSE_RESULTS") or REPO / "results")
    keys = st.keys()
    cited = 0
    for tbl in re.findall(r"<table.*?</table>", text, flags=re.S):
        head = re.findall(r"<th>(.*?)</th>", tbl.split("</thead>")[0])
        head = head[1:] if head[:1] == [""] else head          # a table shown with its index has an empty corner
        if head[:1] != ["record"] or "n" not in head or "<tbody>" not in tbl:   # the provenance tables
            continue
        for tr in re.findall(r"<tr>(.*?)</tr>", tbl.split("<tbody>")[1], flags=re.S):
            row = dict(zip(head, re.findall(r"<td>(.*?)</td>", tr)))
            hits = [k for k in keys if k.startswith(row["record"])]
            assert len(hits) == 1, f"{name}: record {row['record']} is not in the store"
            rec = st.get(hits[0])
            res = rec["result"]
            assert int(row["n"]) == res["n"], f"{name}: record {row['record']} has n={res['n']}, page says {row['n']}"
            if rec["spec"].get("kind") == "indicators":   # indicator values (shares), shown to 3 decimals
                vals = [i["value"] for i in res["indicators"].values() if i.get("value") is not None] \
                    if isinstance(res.get("indicators"), dict) else []
                assert all(f"{v:.3f}" in plain for v in vals), f"{name}: record {row['record']}'s values are not on the page"
                cited += 1
                continue
            if rec["spec"].get("skip"):   # a cascade stage: no robust accuracy of its own; what it attacked and broke
                skip, cf, rf = rec["spec"]["skip"], res["clean_flags"], res["robust_flags"]
                attacked = sum(1 for k, c in zip(skip, cf) if k == "0" and c == "1")
                broken = attacked - sum(1 for k, r in zip(skip, rf) if k == "0" and r == "1")
                assert re.search(rf"\b{attacked}\b", plain) and re.search(rf"\b{broken}\b", plain), \
                    f"{name}: stage record {row['record']} ({attacked} attacked, {broken} broken) is not on the page"
                cited += 1
                continue
            acc = res["clean_acc"] if rec["spec"]["attack"]["name"] == "none" else res["robust_acc"]
            assert f"{100 * acc:.1f}" in plain, f"{name}: record {row['record']}'s {100 * acc:.1f}% is not on the page"
            cited += 1
    if name not in PAGES_WITHOUT_NUMBERS:
        assert cited, f"{name} cites no record"


def test_the_build_runs_its_kernels_over_ipc_so_ipykernel_has_no_tcp_warning(tmp_path, capfd):
    assert mb._ipc_kernel_manager()().transport == "ipc"
    (tmp_path / "one.md").write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
        "```{code-cell}\n:tags: [parameters]\n\nx = 1\n```\n\n```{code-cell}\nprint(x + 1)\n```\n")
    (run,) = mb.run_notebooks(["one"], notebook_dir=tmp_path, out_dir=tmp_path / "out", timeout=120, progress=False)
    assert run.ok, run.error
    assert "without encryption" not in capfd.readouterr().err


# ------------------------------------------------------------------------------------------------
# the README's book section: findings that match the pages, commands that run as written
README = REPO / "README.md"


def _readme_findings() -> list[tuple[list[str], list[str], str]]:
    """The README's findings bullets (between the <!-- findings ... --> and <!-- /findings --> markers): (pages cited
    in backticks, percentages, the bullet)."""
    block = README.read_text().split("<!-- findings")[1].split("-->", 1)[1].split("<!-- /findings -->")[0]
    items = [b.strip() for b in re.split(r"^\* ", block, flags=re.M)[1:]]
    return [(re.findall(r"`(\w+)`", it), re.findall(r"(\d+(?:\.\d+)?)%", it), it) for it in items]


def test_readme_findings_cite_a_page_for_every_number():
    names = {n for n, _ in mb.NOTEBOOKS}
    found = _readme_findings()
    assert len(found) >= 3
    for pages, pcts, item in found:
        assert pages and set(pages) <= names, f"a finding must cite its page(s) in backticks: {item[:80]}"
        assert pcts, f"a finding without a number: {item[:80]}"


@pytest.mark.skipif(not _FULL, reason="no built book: run python -m msparse book (or set MSPARSE_BOOK_HTML)")
def test_every_percentage_in_the_readme_findings_is_on_the_page_it_cites():
    import html as _html

    for pages, pcts, item in _readme_findings():
        text = " ".join(_html.unescape(re.sub(r"<[^>]+>", " ", (Path(_FULL).resolve() / "_executed" / f"{p}.html")
                                                .read_text())) for p in pages)
        shown = {float(x) for x in re.findall(r"(?<![\d.])\d+\.\d+|(?<![\d.])\d+(?![\d.])", text)}
        missing = [p for p in pcts if float(p) not in shown]
        assert not missing, f"README finding cites {missing}% that {', '.join(pages)} does not show: {item[:100]}"


def test_readme_book_commands_run_as_written_after_the_quick_start():
    """After the Quick start, python, papermill and jupytext are the venv's: a bare `papermill` or `python` in the
    book section's commands would use whatever is on PATH (or nothing)."""
    text = README.read_text()
    section = text.split("## The book")[1].split("\n## ")[0]
    lines = [l.strip() for block in re.findall(r"```\n(.*?)```", section, flags=re.S) for l in block.splitlines()]
    commands = [l for l in lines if l and not l.startswith("#")]
    assert commands
    for c in commands:
        assert c.startswith(".venv/bin/"), f"README: {c!r} does not run as written after the Quick start"
