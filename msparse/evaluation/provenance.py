"""Provenance: where and how a record was made (git commit, library versions, device, host, time), and whether
a record was computed under other library versions than the running ones.

Versions are provenance, not part of a record's key: ``python -m msparse results verify`` checks that a record
still reproduces under the running versions, and a :class:`~msparse.evaluation.store.Store` opened with
``reuse_other_versions=False`` treats a record of another torch minor or pyautoattack version as missing
(:func:`versions_differ`).
"""
from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from .._device import device_name

__all__ = ["versions", "repo_root", "git_commit", "provenance", "record_versions", "versions_differ"]


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception:
        return None


def versions() -> dict[str, str | None]:
    """Versions of the packages that matter for a number."""
    import torch
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("pyautoattack", "numpy", "msparse", "robustbench"):
        out[dist] = _version(dist)
    if out["msparse"] is None:   # running from a checkout that is not pip-installed
        from .._version import __version__
        out["msparse"] = __version__
    return out


def repo_root() -> Path | None:
    """The repository root if this package runs from a checkout (has pyproject.toml and .git)."""
    here = Path(__file__).resolve().parents[2]   # msparse/evaluation/provenance.py -> the checkout
    if (here / "pyproject.toml").exists() or (here / ".git").exists():
        return here
    return None


def git_commit(path: Path | None = None) -> str | None:
    """``<commit>`` or ``<commit>-dirty`` of the checkout at ``path`` (None outside git)."""
    path = path or repo_root()
    if path is None:
        return None
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device=None, wall_s: float | None = None, **extra) -> dict[str, Any]:
    """Where and how a record was made: commit, versions, device, host OS, time, wall time."""
    out = {
        "commit": git_commit(),
        "versions": versions(),
        "device": device_name(device),
        "platform": platform.platform(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if wall_s is not None:
        out["wall_s"] = round(float(wall_s), 3)
    out.update(extra)
    return out


def _minor(v: str | None) -> str | None:
    """'2.15.0+cu132' -> '2.15' (None stays None)."""
    if not v:
        return None
    return ".".join(str(v).split("+")[0].split(".")[:2])


def record_versions(rec: Mapping) -> dict[str, str | None]:
    """The library versions a record was computed with: ``{"torch": "2.15.0+cu132", "pyautoattack": ...}``
    (from its provenance; a schema-1 record's key versions as the fallback)."""
    prov = (rec.get("provenance") or {}).get("versions") or {}
    legacy = {}
    for h in (rec.get("provenance") or {}).get("key_history") or []:
        legacy.update(h.get("versions") or {})
    legacy.update((rec.get("spec") or {}).get("versions") or {})
    return {d: prov.get(d) or legacy.get(d) for d in ("torch", "pyautoattack")}


def versions_differ(rec: Mapping, running: Mapping[str, str | None] | None = None) -> dict[str, tuple]:
    """``{library: (record's version, running version)}`` for torch (compared by minor version) and
    pyautoattack where the record was made under another version than the running one; empty if none."""
    running = running if running is not None else versions()
    out = {}
    for lib, have in record_versions(rec).items():
        now = running.get(lib)
        a, b = (_minor(have), _minor(now)) if lib == "torch" else (have, now)
        if have is not None and now is not None and a != b:
            out[lib] = (have, now)
    return out
