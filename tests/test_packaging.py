"""Packaging contracts: one source of dependencies, README commands == CI, the public API."""

import re
import tomllib
from pathlib import Path

import msparse as ms

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The two shell commands of the README's first section (its first ```bash block)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_readme_gives_exactly_two_commands_and_ci_runs_them_verbatim():
    commands = readme_commands()
    assert len(commands) == 2
    setup, tests = commands
    assert "pip install" in setup and "python -m msparse" in setup
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert setup in ci and tests in ci


def test_environment_yml_only_delegates_to_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = (ROOT / "environment.yml").read_text()
    assert "python=3.11" in env and project["requires-python"] == ">=3.11"
    pip_lines = re.findall(r"^\s+-\s+(-e .*)$", env, re.M)
    extras = set(project["optional-dependencies"])
    assert pip_lines == [f"-e .[{','.join(sorted(extras))}]"]
    # no package is named in environment.yml except python and pip: pyproject is the single source
    names = {re.split(r"[=<>\[ ]", dep)[0].lower() for dep in project["dependencies"]}
    deps_section = env.split("dependencies:", 1)[1]
    listed = re.findall(r"^\s+-\s+([A-Za-z][A-Za-z0-9_.-]*)", deps_section, re.M)
    assert set(listed) == {"python", "pip"} and not names & set(listed)


def test_setuptools_is_pinned_below_81_for_robustbench():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "setuptools<81" in [d.split("#")[0].strip() for d in deps]


def test_readme_setup_builds_source_dependencies_under_the_build_constraint():
    """visdom (adv-lib's dependency) is sdist-only and its setup.py imports pkg_resources (gone from setuptools 82):
    the README's install must pass build-constraints.txt with a pip that knows --build-constraint (25.3+)."""
    setup = readme_commands()[0]
    assert '"pip>=25.3"' in setup and "--build-constraint build-constraints.txt" in setup
    assert setup.index('"pip>=25.3"') < setup.index("--build-constraint")
    pins = [ln.strip() for ln in (ROOT / "build-constraints.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    assert pins == ["setuptools<81"]
    assert "PIP_BUILD_CONSTRAINT=$PWD/build-constraints.txt" in (ROOT / "environment.yml").read_text()


def test_robustbench_imports_through_the_compat_shim():
    from msparse._compat import import_robustbench

    rb = import_robustbench()
    assert hasattr(rb, "load_model")


def test_public_api_contract():
    for name in ("MeanSparse", "sparsify", "calibrate", "set_alpha", "set_backward", "PRESETS"):
        assert hasattr(ms, name), name


def _torchvision_import_raises(monkeypatch, message: str):
    """Make ``importlib.import_module("torchvision")`` raise ``RuntimeError(message)`` (other names import as
    usual); returns the real ``import_module``."""
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "torchvision":
            raise RuntimeError(message)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    return real


def test_a_torchvision_built_for_another_torch_is_named_with_the_pair_to_install(monkeypatch):
    """torch 2.13.0+cpu beside PyPI's torchvision 0.28.0 (built for the CUDA torch 2.13.0) passes pip's check but
    fails on import with a bare RuntimeError; every msparse path that imports torchvision says what to install."""
    import importlib

    import pytest

    from msparse import _compat
    from msparse.errors import InstallError

    real = _torchvision_import_raises(monkeypatch, "operator torchvision::nms does not exist")
    for call in (_compat.import_torchvision, _compat.import_robustbench):
        with pytest.raises(InstallError, match=r"torchvision \S+ does not work with torch .*pip install "
                                               r"--force-reinstall 'torch==[0-9.]+' 'torchvision==[0-9.]+'"):
            call()
    monkeypatch.setattr(importlib, "import_module", real)
    assert _compat.import_torchvision().__name__ == "torchvision"


def test_an_unrelated_torchvision_runtime_error_is_not_relabelled(monkeypatch):
    import pytest

    from msparse import _compat

    _torchvision_import_raises(monkeypatch, "something else")
    with pytest.raises(RuntimeError, match="something else"):
        _compat.import_torchvision()
