"""The fused kernels' cache (msparse.core.kernels): no code is loaded from a folder or a file someone else can
write, a library that does not match the sha256 recorded at build time is rebuilt instead of loaded, a library
that cannot serve leaves the eager route with the reason, and concurrent builders compile once.

Planted libraries carry a constructor that creates a marker file: the marker existing means the library was loaded
(its code ran), so "never loaded" is checked by the marker never appearing."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from msparse import MeanSparse
from msparse._io import sha256_file
from msparse.core import kernels

pytestmark = pytest.mark.skipif(kernels._compiler() is None or not sys.platform.startswith(("linux", "darwin")),
                                reason="no C++ compiler: the kernels are never built here")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def own_cache(tmp_path_factory):
    """A default cache folder ($XDG_CACHE_HOME) of this user, shared by the module: where refused folders send the
    build (one compile for the whole module)."""
    return tmp_path_factory.mktemp("xdg")


@pytest.fixture
def fresh(monkeypatch, own_cache):
    """The kernels forgotten (the next use looks for them again), ``$XDG_CACHE_HOME`` private to the module; the
    session's loaded route is restored afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(own_cache))
    monkeypatch.delenv("MSPARSE_FUSED", raising=False)
    monkeypatch.delenv("MSPARSE_KERNEL_DIR", raising=False)
    saved = dict(kernels._state)
    kernels._reset()
    yield
    kernels._state.update(saved)


def plant(folder: Path, record: str = "match", symbols: bool = False) -> tuple[Path, Path]:
    """A library at the name the kernels would have in ``folder`` whose constructor creates a marker file, with a
    digest record (``"match"``: its true sha256; ``"wrong"``: another one; ``"none"``: no record). Returns
    ``(library, marker)``."""
    marker = folder.parent / f"{folder.name}-MARKER"
    src = folder.parent / f"{folder.name}-planted.cpp"
    src.write_text(textwrap.dedent("""\
        #include <cstdio>
        __attribute__((constructor)) static void planted() {
            std::FILE* f = std::fopen(MARKER, "w");
            if (f) std::fclose(f);
        }
        """))
    library = folder / kernels._library_name(kernels._compiler())
    subprocess.run([kernels._compiler(), "-shared", "-fPIC", f'-DMARKER="{marker}"', str(src), "-o", str(library)],
                   check=True, capture_output=True)
    if record != "none":
        digest = sha256_file(library) if record == "match" else "0" * 64
        kernels._record_path(library).write_text(digest + "\n")
    return library, marker


def make_foreign(path: Path, monkeypatch) -> None:
    """Give ``path`` another owner: a real ``chown`` where allowed (tests run as root here), else a simulated one
    (``os.lstat`` reports another uid for that path only)."""
    other = os.geteuid() + 4242
    try:
        os.chown(path, other, other, follow_symlinks=False)
        return
    except PermissionError:
        pass
    real, target = os.lstat, os.path.realpath(path)
    inode = real(target).st_ino              # that file only: a file replacing it is this user's again

    def lstat(p, *args, **kwargs):
        st = real(p, *args, **kwargs)
        if os.fspath(p) == target and st.st_ino == inode:
            st = os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, other, other, st.st_size,
                                 int(st.st_atime), int(st.st_mtime), int(st.st_ctime)))
        return st

    monkeypatch.setattr(os, "lstat", lstat)


def assert_fused_like_eager():
    op = MeanSparse(3)
    op.load_statistics(torch.tensor([0.0, 1.0, -1.0]), torch.tensor([1.0, 4.0, 0.25]), 10)
    op.set_alpha(0.5)
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    out = op(x)
    with kernels.eager():
        assert torch.equal(out, op(x))


UNSAFE_FOLDERS = ["world-writable", "group-writable", "owned by another user", "under a folder others can write",
                  "a symlink to a world-writable folder"]


@pytest.mark.parametrize("case", UNSAFE_FOLDERS)
def test_a_library_planted_in_a_folder_others_can_write_is_never_loaded(case, fresh, tmp_path, own_cache,
                                                                         monkeypatch):
    shared = tmp_path / "shared"
    folder = shared / "kernels"
    folder.mkdir(parents=True, mode=0o700)
    library, marker = plant(folder)          # a matching digest record too: the folder alone must decide
    planted_sha = sha256_file(library)
    configured = folder
    if case == "world-writable":
        folder.chmod(0o777)
    elif case == "group-writable":
        folder.chmod(0o770)
    elif case == "owned by another user":
        folder.chmod(0o755)
        make_foreign(folder, monkeypatch)
    elif case == "under a folder others can write":
        shared.chmod(0o777)                  # no sticky bit: others could rename `kernels` and put their own there
    else:
        folder.chmod(0o777)
        configured = tmp_path / "link"
        configured.symlink_to(folder)
    monkeypatch.setenv("MSPARSE_KERNEL_DIR", str(configured))

    with pytest.warns(RuntimeWarning, match=r"not loading the fused kernels from .*kernels.*; built them in "):
        info = kernels.info()
    assert not marker.exists()
    assert info["fused"] and info["reason"].startswith("ok (built in ")
    own = Path(os.path.realpath(own_cache)) / "msparse" / "kernels"
    assert Path(info["library"]).parent == own                    # built in the user's own cache instead
    assert sha256_file(library) == planted_sha                    # the planted file was not even touched
    assert_fused_like_eager()


def test_a_refused_folder_with_no_safe_default_builds_in_a_private_temporary_folder(fresh, tmp_path, monkeypatch):
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    library, marker = plant(folder)
    monkeypatch.setenv("MSPARSE_KERNEL_DIR", str(folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))             # the default is under the same unsafe folder
    with pytest.warns(RuntimeWarning, match="also refused"):
        info = kernels.info()
    private = Path(info["library"]).parent
    assert not marker.exists() and info["fused"]
    assert private.name.startswith("msparse-kernels-") and (private.stat().st_mode & 0o777) == 0o700
    assert_fused_like_eager()


@pytest.mark.parametrize("case", ["wrong digest", "no record", "library writable by others",
                                  "record writable by others", "library owned by another user"])
def test_a_library_that_fails_its_file_checks_is_rebuilt_not_loaded(case, fresh, tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    library, marker = plant(folder, record={"wrong digest": "wrong", "no record": "none"}.get(case, "match"))
    if case == "library writable by others":
        library.chmod(0o777)
    elif case == "record writable by others":
        kernels._record_path(library).chmod(0o666)
    elif case == "library owned by another user":
        make_foreign(library, monkeypatch)
    monkeypatch.setenv("MSPARSE_KERNEL_DIR", str(folder))

    if case == "no record":                  # a cache from before the records: rebuilt without a fuss
        info = kernels.info()
    else:
        expected = {"wrong digest": "is not the one recorded when it was built", "library owned by another user":
                    "belongs to uid"}.get(case, "writable by .*others")
        with pytest.warns(RuntimeWarning, match=f"not loading .*{expected}.*; rebuilding it"):
            info = kernels.info()
    assert not marker.exists()
    assert info["fused"] and info["reason"] == "ok" and info["library"] == str(library)
    assert kernels._check_library(library) == (True, None)       # rebuilt, this user's, recorded
    assert (library.stat().st_mode & 0o022) == 0 and (kernels._record_path(library).stat().st_mode & 0o022) == 0
    assert_fused_like_eager()


@pytest.mark.parametrize("case", ["no kernel symbols", "not a library"])
def test_a_library_that_cannot_serve_falls_back_to_eager_with_the_reason(case, fresh, tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    library, marker = plant(folder)          # in the user's own folder, with a matching record: it passes the checks
    if case == "not a library":
        library.write_bytes(b"not a shared object\n")
        kernels._record_path(library).write_text(sha256_file(library))
    monkeypatch.setenv("MSPARSE_KERNEL_DIR", str(folder))

    expected = "lacks the kernel symbols ms_sparsify_f32" if case == "no kernel symbols" else "cannot be loaded"
    with pytest.warns(RuntimeWarning, match=f"fused kernels are off in this process: .*{expected}"):
        info = kernels.info()
    assert not info["fused"] and info["route"] == "eager" and expected in info["reason"]
    assert marker.exists() == (case == "no kernel symbols")       # it was loaded: the marker library really works
    assert not kernels._record_path(library).exists()            # so the next process rebuilds it

    op = MeanSparse(2)
    op.load_statistics(torch.zeros(2), torch.ones(2), 1)
    op.set_alpha(0.5)
    assert op(torch.tensor([0.1, 2.0]).view(1, 2, 1, 1)).flatten().tolist() == [0.0, 2.0]   # eager, no traceback
    if case != "no kernel symbols":
        return
    code = "from msparse.core import kernels; i = kernels.info(); print(i['fused'], i['reason'], i['library'])"
    env = {**os.environ, "MSPARSE_KERNEL_DIR": str(folder)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["True", "ok", str(library)]    # the next process rebuilt it


@pytest.mark.slow
def test_concurrent_builders_compile_once_into_a_private_folder(tmp_path):
    log = tmp_path / "compiles.log"
    cxx = tmp_path / "cxx"                   # the real compiler, slowed down, logging each call
    cxx.write_text(f"#!/bin/sh\necho x >> '{log}'\nsleep 2\nexec '{kernels._compiler()}' \"$@\"\n")
    cxx.chmod(0o755)
    folder = tmp_path / "new" / "kernels"    # does not exist yet
    env = {**os.environ, "MSPARSE_KERNEL_DIR": str(folder), "CXX": str(cxx), "MSPARSE_FUSED": "1"}
    code = "from msparse.core import kernels; i = kernels.info(); print(i['fused'], i['library'])"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True, cwd=REPO)
             for _ in range(3)]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    library = folder / kernels._library_name(str(cxx))
    assert outs == [["True", str(library)]] * 3
    assert log.read_text().count("x") == 1                       # one compiled, the others waited and loaded it
    assert (folder.stat().st_mode & 0o777) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == sorted([".msparse_kernels.lock", library.name,
                                                               kernels._record_path(library).name])
    assert kernels._record_path(library).read_text().strip() == sha256_file(library)
