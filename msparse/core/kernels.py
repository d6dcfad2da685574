"""Fused CPU kernels for MeanSparse: one pass over memory per site (forward, backward, statistics).

Eager PyTorch evaluates the operator ``where(|x − c| < t, c, x)`` as several full passes over the activation
(difference, absolute value, comparison, select) and the statistics pass as a float64 copy plus a reduction.
These kernels do each job in one loop over the tensor:

* :func:`sparsify`   out = c where |x − c| < t (strictly) else x, and optionally the boolean band mask;
* :func:`masked_grad` grad_in = 0 where the mask is set else grad_out (the exact backward);
* :func:`count_band` how many entries fall in the band (the blocked fraction, nothing written);
* :func:`moments`    per-channel Σ(x − k) and Σ(x − k)² around a shift k, accumulated in float64.

Route: a small C++ file (no PyTorch headers, plain ``extern "C"`` functions over raw pointers, OpenMP for the
cores: ``libgomp.so.1`` is the runtime PyTorch's CPU build already loaded, so the kernels share its thread pool)
compiled once with the system C++ compiler (``$CXX``, else ``c++``/``g++``) into a cache folder
(``$MSPARSE_KERNEL_DIR``, else ``$XDG_CACHE_HOME/msparse/kernels`` or ``~/.cache/msparse/kernels``), named by the
hash of its source and flags, and loaded with :mod:`ctypes`. A cold build takes a few seconds, a warm one only
the checks below and the ``dlopen``; nothing happens at import.

Loading a library runs its code, so the name being predictable must not let anyone else choose what runs
(:func:`_kernel_folder`, :func:`_check_library`):

* the cache folder must be a folder of the current user that neither its group nor others can write, and every
  folder above it must belong to the user or root and be unwritable by others unless sticky (like ``/tmp``:
  nobody else can rename our entries there); symlinks are resolved first and the real path is used from then on.
  A folder that fails is not read at all: the kernels are built into the default cache folder if that one
  passes, else into a fresh ``mkdtemp`` folder (mode 0700, removed at exit), with a warning that says why;
* the library and its digest record (``<name>.sha256``, written at build time next to it) must be regular files
  of the user that others cannot write, and the library's sha256 must equal the record: a library without a
  record (a cache from before the records) is rebuilt, one that does not match is rebuilt with a warning;
* a build compiles into a private temporary folder inside the cache folder and renames the library and then its
  record into place; concurrent builders (processes, Dask workers) take an exclusive ``flock`` on
  ``.msparse_kernels.lock`` in the cache folder and look again once they hold it, so one of them compiles and the
  others load its result;
* a library that fails to load, lacks a symbol or reports another ABI version leaves the process on the eager
  route with a warning and the reason in :func:`info`; its record is removed so the next process rebuilds it.

Not ``torch.utils.cpp_extension.load``: with the same source and flags it produces the same object code (per-call
speed equal, measured on the widest site), but it needs ``ninja`` at run time, a warm load took 7.5 ms against
under 1 ms here (it runs ninja to check the build), and its build folder is just as predictable and unchecked.

Arithmetic is IEEE (``-O3``, no fast-math, no FMA contraction), in the same dtype PyTorch's type promotion uses
(float32 for float32/bfloat16 inputs, float64 for float64), so outputs are bit-identical to the eager operator.

When the kernels cannot serve (``MSPARSE_FUSED=0``, no compiler, a failed build, a non-CPU tensor, another dtype,
an unusual memory layout, a graph being traced by ``torch.compile``) every function here returns ``None`` and the
caller runs its eager code; :func:`info` says which route is active and why.

Shapes: a dense tensor is walked in memory order as ``(outer, C, inner)``, C being the channels: ``inner = 1`` for
channels-last memory (NHWC, NLC, or NCHW stored channels_last), ``inner = H·W`` for contiguous NCHW.

Output buffers: a fresh multi-megabyte CPU tensor comes from ``mmap`` and pays a page fault (and the kernel's zeroing)
per 4 KiB page on first write — about 4× the kernel itself for a (128, 64, 32, 32) activation. So an operator (the
``owner`` argument) keeps the storage of its last output, mask and gradient, and writes the next one into it when
nothing else refers to that storage any more (its storage use count is back to the cache's own reference: the
returned tensor, its views, saved-for-backward copies, NumPy arrays all hold one). Reuse changes no value, only
where it is written; ``MSPARSE_REUSE_MB`` (default 1024, 0 = off) bounds the bytes kept over all operators, and
:func:`release_buffers` drops them.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref
from pathlib import Path

import torch

__all__ = ["info", "available", "eager", "channel_view", "sparsify", "masked_grad", "count_band", "moments",
           "release_buffers"]

_SOURCE = r"""
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

inline float bf16_to_float(uint16_t v) {
    uint32_t bits = uint32_t(v) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

template <class F>
void parallel_rows(int64_t rows, int64_t row_len, int threads, F body) {
    // split [0, rows) into contiguous chunks, one per thread of the OpenMP pool PyTorch itself uses (libgomp.so.1
    // is loaded once per process), so no thread is created and none competes with PyTorch's; small jobs stay serial
    int64_t n = threads < 1 ? 1 : threads;
    if (rows * row_len < (int64_t(1) << 16)) n = 1;
    if (n > rows) n = rows;
    if (n <= 1) { body(int64_t(0), rows, 0); return; }
#ifdef _OPENMP
#pragma omp parallel num_threads(int(n))
    {
        const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t step = (rows + nt - 1) / nt, a = t * step, b = a + step < rows ? a + step : rows;
        if (a < b) body(a, b, int(t));
    }
#else
    body(int64_t(0), rows, 0);
#endif
}

// Runs of n entries. The comparison type A is PyTorch's promotion of x with the float32 centre; L loads T -> A;
// M: whether the band mask is written (a separate instantiation, branch-free). sparsify_row: channels innermost
// (one centre/threshold per entry); sparsify_channel: one channel for the whole run.
template <class T, class A, bool M, class L>
inline void sparsify_row(const T* __restrict__ x, T* __restrict__ out, uint8_t* __restrict__ mask,
                         const float* __restrict__ centre, const float* __restrict__ thr,
                         const T* __restrict__ fill, int64_t n, L load) {
    for (int64_t i = 0; i < n; ++i) {
        const T v = x[i], f = fill[i];  // both loaded unconditionally, so the select vectorizes
        const bool in = std::fabs(load(v) - A(centre[i])) < A(thr[i]);
        out[i] = in ? f : v;
        if (M) mask[i] = in;
    }
}

template <class T, class A, bool M, class L>
inline void sparsify_channel(const T* __restrict__ x, T* __restrict__ out, uint8_t* __restrict__ mask,
                             const A centre, const A thr, const T fill, int64_t n, L load) {
    for (int64_t i = 0; i < n; ++i) {
        const T v = x[i];
        const bool in = std::fabs(load(v) - centre) < thr;
        out[i] = in ? fill : v;
        if (M) mask[i] = in;
    }
}

template <class T, class A, bool M, class L>
void sparsify_loop(const T* x, T* out, uint8_t* mask, const float* centre, const float* thr, const T* fill,
                   int64_t outer, int64_t C, int64_t inner, int threads, L load) {
    if (inner == 1) {  // channels innermost: rows of C
        parallel_rows(outer, C, threads, [=](int64_t a, int64_t b, int) {
            for (int64_t r = a; r < b; ++r)
                sparsify_row<T, A, M>(x + r * C, out + r * C, M ? mask + r * C : nullptr, centre, thr, fill, C, load);
        });
    } else {  // channels in the middle: rows of `inner` entries of one channel
        parallel_rows(outer * C, inner, threads, [=](int64_t a, int64_t b, int) {
            for (int64_t r = a; r < b; ++r) {
                const int64_t c = r % C;
                sparsify_channel<T, A, M>(x + r * inner, out + r * inner, M ? mask + r * inner : nullptr,
                                          A(centre[c]), A(thr[c]), fill[c], inner, load);
            }
        });
    }
}

template <class T, class A, class L>
void sparsify_impl(const T* x, T* out, uint8_t* mask, const float* centre, const float* thr, const T* fill,
                   int64_t outer, int64_t C, int64_t inner, int threads, L load) {
    if (mask) sparsify_loop<T, A, true>(x, out, mask, centre, thr, fill, outer, C, inner, threads, load);
    else sparsify_loop<T, A, false>(x, out, mask, centre, thr, fill, outer, C, inner, threads, load);
}

template <class T, class A, class L>
int64_t count_impl(const T* x, const float* centre, const float* thr, int64_t outer, int64_t C, int64_t inner,
                   int threads, L load) {
    std::vector<int64_t> part(threads < 1 ? 1 : threads, 0);
    if (inner == 1) {
        parallel_rows(outer, C, threads, [&](int64_t a, int64_t b, int t) {
            int64_t k = 0;
            for (int64_t r = a; r < b; ++r)
                for (int64_t c = 0; c < C; ++c) k += std::fabs(load(x[r * C + c]) - A(centre[c])) < A(thr[c]);
            part[t] = k;
        });
    } else {
        parallel_rows(outer * C, inner, threads, [&](int64_t a, int64_t b, int t) {
            int64_t k = 0;
            for (int64_t r = a; r < b; ++r) {
                const A cc = A(centre[r % C]), tt = A(thr[r % C]);
                const T* xr = x + r * inner;
                for (int64_t i = 0; i < inner; ++i) k += std::fabs(load(xr[i]) - cc) < tt;
            }
            part[t] = k;
        });
    }
    int64_t total = 0;
    for (int64_t k : part) total += k;
    return total;
}

template <class T>
void masked_grad_impl(const T* g, const uint8_t* mask, T* out, int64_t n, int threads) {
    const int64_t block = 4096;
    int64_t rows = (n + block - 1) / block;
    parallel_rows(rows, block, threads, [&](int64_t a, int64_t b, int) {
        int64_t lo = a * block, hi = b * block < n ? b * block : n;
        for (int64_t i = lo; i < hi; ++i) { const T v = g[i]; out[i] = mask[i] ? T(0) : v; }
    });
}

// float32 input; sums of d = x - shift[c] and d^2 per channel in float64, 8 independent lanes per row
void moments_impl(const float* x, const double* shift, double* s1, double* s2, int64_t outer, int64_t C,
                  int64_t inner, int threads) {
    int n = threads < 1 ? 1 : threads;
    std::vector<double> p1(size_t(n) * C, 0.0), p2(size_t(n) * C, 0.0);
    if (inner == 1) {
        parallel_rows(outer, C, threads, [&](int64_t a, int64_t b, int t) {
            double* q1 = p1.data() + size_t(t) * C; double* q2 = p2.data() + size_t(t) * C;
            for (int64_t r = a; r < b; ++r) {
                const float* xr = x + r * C;
                for (int64_t c = 0; c < C; ++c) { double d = double(xr[c]) - shift[c]; q1[c] += d; q2[c] += d * d; }
            }
        });
    } else {
        parallel_rows(outer * C, inner, threads, [&](int64_t a, int64_t b, int t) {
            double* q1 = p1.data() + size_t(t) * C; double* q2 = p2.data() + size_t(t) * C;
            for (int64_t r = a; r < b; ++r) {
                int64_t c = r % C;
                const double k = shift[c];
                const float* xr = x + r * inner;
                double l1[8] = {0}, l2[8] = {0};
                int64_t i = 0;
                for (; i + 8 <= inner; i += 8)
                    for (int j = 0; j < 8; ++j) { double d = double(xr[i + j]) - k; l1[j] += d; l2[j] += d * d; }
                for (; i < inner; ++i) { double d = double(xr[i]) - k; l1[0] += d; l2[0] += d * d; }
                double a1 = 0, a2 = 0;
                for (int j = 0; j < 8; ++j) { a1 += l1[j]; a2 += l2[j]; }
                q1[c] += a1; q2[c] += a2;
            }
        });
    }
    for (int64_t c = 0; c < C; ++c) {
        double a1 = 0, a2 = 0;
        for (int t = 0; t < n; ++t) { a1 += p1[size_t(t) * C + c]; a2 += p2[size_t(t) * C + c]; }
        s1[c] = a1; s2[c] = a2;
    }
}

auto id32 = [](float v) { return v; };
auto id64 = [](double v) { return v; };
auto bf16 = [](uint16_t v) { return bf16_to_float(v); };

}  // namespace

extern "C" {
void ms_sparsify_f32(const float* x, float* out, uint8_t* m, const float* c, const float* t, const float* f,
                     int64_t o, int64_t C, int64_t i, int n) { sparsify_impl<float, float>(x, out, m, c, t, f, o, C, i, n, id32); }
void ms_sparsify_f64(const double* x, double* out, uint8_t* m, const float* c, const float* t, const double* f,
                     int64_t o, int64_t C, int64_t i, int n) { sparsify_impl<double, double>(x, out, m, c, t, f, o, C, i, n, id64); }
void ms_sparsify_bf16(const uint16_t* x, uint16_t* out, uint8_t* m, const float* c, const float* t, const uint16_t* f,
                      int64_t o, int64_t C, int64_t i, int n) { sparsify_impl<uint16_t, float>(x, out, m, c, t, f, o, C, i, n, bf16); }
int64_t ms_count_f32(const float* x, const float* c, const float* t, int64_t o, int64_t C, int64_t i, int n) {
    return count_impl<float, float>(x, c, t, o, C, i, n, id32); }
int64_t ms_count_f64(const double* x, const float* c, const float* t, int64_t o, int64_t C, int64_t i, int n) {
    return count_impl<double, double>(x, c, t, o, C, i, n, id64); }
int64_t ms_count_bf16(const uint16_t* x, const float* c, const float* t, int64_t o, int64_t C, int64_t i, int n) {
    return count_impl<uint16_t, float>(x, c, t, o, C, i, n, bf16); }
void ms_masked_grad_32(const uint32_t* g, const uint8_t* m, uint32_t* out, int64_t n, int t) { masked_grad_impl(g, m, out, n, t); }
void ms_masked_grad_64(const uint64_t* g, const uint8_t* m, uint64_t* out, int64_t n, int t) { masked_grad_impl(g, m, out, n, t); }
void ms_masked_grad_16(const uint16_t* g, const uint8_t* m, uint16_t* out, int64_t n, int t) { masked_grad_impl(g, m, out, n, t); }
void ms_moments_f32(const float* x, const double* k, double* s1, double* s2, int64_t o, int64_t C, int64_t i, int n) {
    moments_impl(x, k, s1, s2, o, C, i, n); }
int ms_abi_version() { return 1; }
}
"""
_FLAGS = ["-O3", "-std=c++17", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math"]
_OPENMP = ["-fopenmp"]   # dropped (serial kernels) when the compiler cannot link OpenMP

_lock = threading.Lock()
_state: dict = {"lib": None, "tried": False, "route": "eager", "reason": "not built yet (built on first use)",
                "build_seconds": None, "library": None}

_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_SIGNATURES = {
    **{f"ms_sparsify_{s}": ([_P] * 6 + [_I64] * 3 + [_INT], None) for s in ("f32", "f64", "bf16")},
    **{f"ms_count_{s}": ([_P] * 3 + [_I64] * 3 + [_INT], _I64) for s in ("f32", "f64", "bf16")},
    **{f"ms_masked_grad_{b}": ([_P] * 3 + [_I64, _INT], None) for b in ("16", "32", "64")},
    "ms_moments_f32": ([_P] * 4 + [_I64] * 3 + [_INT], None),
    "ms_abi_version": ([], _INT),
}
_SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16"}
_WIDTH = {torch.float32: "32", torch.float64: "64", torch.bfloat16: "16", torch.float16: "16"}


def _default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "msparse" / "kernels"


def _cache_dir() -> Path:
    """The configured cache folder: ``$MSPARSE_KERNEL_DIR``, else the default (used only if it passes the checks)."""
    if os.environ.get("MSPARSE_KERNEL_DIR"):
        return Path(os.environ["MSPARSE_KERNEL_DIR"])
    return _default_dir()


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _library_name(cxx: str) -> str:
    """The library's file name: a hash of the source, the flags, the compiler and the platform."""
    digest = hashlib.sha256((_SOURCE + " ".join(_FLAGS + _OPENMP) + cxx + sys.platform + os.uname().machine).encode())
    return f"msparse_kernels_{digest.hexdigest()[:16]}.so"


def _record_path(library: Path) -> Path:
    """Where the sha256 of ``library`` is recorded when it is built (next to it, same stem)."""
    return library.with_suffix(".sha256")


def _uid() -> int:
    """The user whose folders and files may hold the code this process loads (the effective uid)."""
    return os.geteuid()


def _writers(mode: int) -> str:
    who = [w for bit, w in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "others")) if mode & bit]
    return f"writable by {' and '.join(who)} (mode {stat.S_IMODE(mode):o})"


def _unsafe_folder(folder: Path) -> str | None:
    """Why code must not be loaded from ``folder`` (an absolute path, symlinks resolved), or ``None`` if it may.

    The folder must belong to the current user and be writable by nobody else; each folder above it must belong
    to the user or root and be unwritable by others unless its sticky bit is set (then nobody else can rename or
    delete the entries the user made there, as in ``/tmp``)."""
    uid = _uid()
    try:
        st = os.lstat(folder)
    except OSError as err:
        return f"{folder} cannot be inspected ({err.strerror or err})"
    if not stat.S_ISDIR(st.st_mode):
        return f"{folder} is not a folder"
    if st.st_uid != uid:
        return f"{folder} belongs to uid {st.st_uid}, not to this user (uid {uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{folder} is {_writers(st.st_mode)}"
    for parent in folder.parents:
        try:
            st = os.lstat(parent)
        except OSError as err:
            return f"{parent} (above {folder}) cannot be inspected ({err.strerror or err})"
        if st.st_uid not in (uid, 0):
            return f"{parent} (above {folder}) belongs to uid {st.st_uid}, neither this user (uid {uid}) nor root"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            return f"{parent} (above {folder}) is {_writers(st.st_mode)} without the sticky bit"
    return None


def _unsafe_file(path: Path) -> str | None:
    """Why the file ``path`` must not be trusted (not a regular file of this user, or writable by others), or
    ``None``; raises ``FileNotFoundError`` when it does not exist."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if st.st_uid != _uid():
        return f"{path} belongs to uid {st.st_uid}, not to this user (uid {_uid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is {_writers(st.st_mode)}"
    return None


def _kernel_folder() -> tuple[Path | None, list[str]]:
    """``(folder, refusals)``: the real path of the folder to load the kernels from and build them into, and why
    each folder tried before it was refused (empty when the configured one passed :func:`_unsafe_folder`).

    Tried in order: the configured folder, the default one (when ``$MSPARSE_KERNEL_DIR`` named another), and a
    fresh ``mkdtemp`` folder (mode 0700, removed at exit). A missing folder is created with mode 0700 first.
    ``folder`` is ``None`` when even the temporary one fails the checks."""
    refusals = []
    candidates = [_cache_dir(), _default_dir()]
    for candidate in dict.fromkeys(Path(os.path.realpath(c)) for c in candidates):
        try:
            if not os.path.lexists(candidate):
                candidate.parent.mkdir(parents=True, exist_ok=True)
                candidate.mkdir(mode=0o700, exist_ok=True)
        except OSError as err:
            problem = f"{candidate} cannot be created ({err.strerror or err})"
        else:
            problem = _unsafe_folder(candidate)
        if problem is None:
            return candidate, refusals
        refusals.append(problem)
    try:
        private = Path(os.path.realpath(tempfile.mkdtemp(prefix="msparse-kernels-")))
    except OSError as err:
        refusals.append(f"no temporary folder can be made ({err.strerror or err})")
        return None, refusals
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    problem = _unsafe_folder(private)
    if problem is not None:
        refusals.append(problem)
        return None, refusals
    return private, refusals


def _check_library(path: Path) -> tuple[bool, str | None]:
    """``(ok, problem)`` for the library at ``path`` in a checked folder: ``(True, None)`` when it and its digest
    record are files of this user that nobody else can write and its sha256 equals the record; ``(False, None)``
    when there is nothing to load (no library, or no record: built by an older msparse); else ``(False, why)``."""
    from .._io import sha256_file

    record = _record_path(path)
    try:
        problem = _unsafe_file(path) or _unsafe_file(record)
        if problem is not None:
            return False, problem
        expected = record.read_bytes().decode("ascii", "replace").strip()
        actual = sha256_file(path)
    except FileNotFoundError:
        return False, None
    except OSError as err:
        return False, f"{path} cannot be read ({err.strerror or err})"
    if actual != expected:
        return False, f"the sha256 of {path} ({actual[:16]}…) is not the one recorded when it was built in {record}"
    return True, None


@contextlib.contextmanager
def _build_lock(folder: Path):
    """Hold an exclusive ``flock`` on ``folder/.msparse_kernels.lock`` (builders in other processes wait here).
    Where the file system refuses locks, builds still cannot collide: each compiles in its own temporary folder
    and renames the finished files into place."""
    import fcntl

    fd = None
    try:
        fd = os.open(folder / ".msparse_kernels.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        pass
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)   # releases the lock


def _compile(cxx: str, path: Path) -> str | None:
    """Compile the kernels to ``path`` and record their sha256 next to it, atomically: both files are made in a
    private temporary folder (0700) inside the cache folder, made unwritable by others whatever the umask, and
    renamed into place, the library first. Returns why the build failed, or ``None``."""
    from .._io import sha256_file

    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as tmp:
        src = Path(tmp) / "kernels.cpp"
        src.write_text(_SOURCE)
        out = Path(tmp) / path.name
        for extra in (_OPENMP, []):
            proc = subprocess.run([cxx, *_FLAGS, *extra, str(src), "-o", str(out)], capture_output=True, text=True,
                                  timeout=300)
            if proc.returncode == 0:
                break
        if proc.returncode != 0:
            return f"build failed ({cxx}): {proc.stderr.strip()[-300:]}"
        record = Path(tmp) / _record_path(path).name
        record.write_text(sha256_file(out) + "\n", encoding="ascii")
        os.chmod(out, 0o755)
        os.chmod(record, 0o644)
        os.replace(out, path)
        os.replace(record, _record_path(path))
    return None


def _load(path: Path):
    """``(library, None)`` with every signature set, or ``(None, why)``: it failed to load, lacks a symbol or
    reports another ABI version."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        return None, f"{path} cannot be loaded ({err})"
    missing = [name for name in _SIGNATURES if not hasattr(lib, name)]
    if missing:
        return None, f"{path} lacks the kernel symbol{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    if lib.ms_abi_version() != 1:
        return None, f"{path} reports ABI version {lib.ms_abi_version()}, not 1"
    return lib, None


def _warn(message: str) -> None:
    warnings.warn(f"msparse: {message}", RuntimeWarning, stacklevel=4)


def _build() -> None:
    """Find (checked) or compile the library, load it; record the route and the reason (module docstring)."""
    _state["tried"] = True
    if os.environ.get("MSPARSE_FUSED", "").strip().lower() in ("0", "false", "no", "off", "eager"):
        _state["reason"] = "disabled by MSPARSE_FUSED=0"
        return
    if not sys.platform.startswith(("linux", "darwin")):
        _state["reason"] = f"unsupported platform {sys.platform!r}"
        return
    cxx = _compiler()
    if cxx is None:
        _state["reason"] = "no C++ compiler found ($CXX, c++, g++, clang++)"
        return
    start = time.perf_counter()
    folder, refusals = _kernel_folder()
    if refusals:
        where = f"built them in {folder} instead" if folder else "using the eager route"
        _warn(f"not loading the fused kernels from the cache folder: {refusals[0]}; {where}. Make the folder your "
              "own and not writable by others (chmod go-w), or set MSPARSE_KERNEL_DIR to a folder that is"
              + (f" (also refused: {'; '.join(refusals[1:])})" if len(refusals) > 1 else ""))
    if folder is None:
        _state["reason"] = f"no safe folder for the kernels: {'; '.join(refusals)}"
        return
    path = folder / _library_name(cxx)
    try:
        ok, _ = _check_library(path)
        if not ok:
            with _build_lock(folder):
                ok, problem = _check_library(path)   # another process may have built it while we waited
                if problem is not None:
                    _warn(f"not loading the cached kernel library ({problem}); rebuilding it")
                if not ok:
                    failure = _compile(cxx, path)
                    if failure is not None:
                        _state["reason"] = failure
                        return
                    ok, problem = _check_library(path)
                    if not ok:
                        _state["reason"] = f"the library just built does not pass its checks: {problem}"
                        return
    except (OSError, subprocess.SubprocessError) as err:
        _state["reason"] = f"could not build the kernels in {folder}: {err}"
        return
    lib, problem = _load(path)
    if lib is None:
        with contextlib.suppress(OSError):
            os.unlink(_record_path(path))   # the next process rebuilds it
        _state["reason"] = f"eager route: {problem} (the next process rebuilds it)"
        _warn(f"the fused kernels are off in this process: {_state['reason']}")
        return
    reason = "ok" if not refusals else f"ok (built in {folder}: {refusals[0]})"
    _state.update(lib=lib, route="fused C++ kernels (CPU)", reason=reason, library=str(path),
                  build_seconds=time.perf_counter() - start)


def _lib():
    if not _state["tried"]:
        with _lock:
            if not _state["tried"]:
                _build()
    return _state["lib"]


def info() -> dict:
    """Which route the CPU operator takes: ``{"fused", "route", "reason", "build_seconds", "library"}``.
    Builds (or loads) the kernels if that was not tried yet. CUDA tensors always take the eager route.
    ``reason`` is ``"ok"`` when the kernels came from the configured cache folder, ``"ok (built in FOLDER: why the
    configured one was refused)"`` when they were built elsewhere, else why the eager route is taken (no compiler,
    a failed build, no safe folder, a library that failed to load or lacks a symbol)."""
    _lib()
    return {"fused": _state["lib"] is not None, "route": _state["route"], "reason": _state["reason"],
            "build_seconds": _state["build_seconds"], "library": _state["library"]}


def available() -> bool:
    """True when the fused kernels are built and enabled (``MSPARSE_FUSED`` is read at the first use)."""
    return _lib() is not None


@contextlib.contextmanager
def eager():
    """Inside the block every caller takes its eager route (the reference in tests and benchmarks)."""
    _lib()
    saved = dict(_state)
    _state.update(lib=None, route="eager", reason="forced by msparse.core.kernels.eager()")
    try:
        yield
    finally:
        _state.update(saved)


def _reset() -> None:
    """Forget the loaded route so the next use re-reads ``MSPARSE_FUSED`` (tests and benchmarks)."""
    with _lock:
        _state.update(lib=None, tried=False, route="eager", reason="not built yet (built on first use)",
                      build_seconds=None, library=None)


def channel_view(x: torch.Tensor, cdim: int):
    """``(outer, C, inner)`` if the kernels can walk ``x`` (CPU, dense, channels in the middle of its memory order,
    not being traced), else ``None``."""
    if x.device.type != "cpu" or x.is_sparse or torch.compiler.is_compiling() or x.numel() == 0:
        return None
    if type(x) is not torch.Tensor and not isinstance(x, torch.nn.Parameter):
        return None   # tensor subclasses (fake, functional) take the eager route
    shape = x.shape
    if x.is_contiguous():
        outer = 1
        for s in shape[:cdim]:
            outer *= s
        inner = 1
        for s in shape[cdim + 1:]:
            inner *= s
        return outer, shape[cdim], inner
    if x.ndim == 4 and cdim == 1 and x.is_contiguous(memory_format=torch.channels_last):
        return shape[0] * shape[2] * shape[3], shape[1], 1
    return None


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _serve(x: torch.Tensor, cdim: int, centre: torch.Tensor, threshold: torch.Tensor):
    """``(library, channel view of x)`` when the kernels can serve this tensor and these float32 [C] vectors, else
    ``None`` (no compiled library, a dtype without a kernel, a layout the kernels do not walk)."""
    lib = _lib()
    if lib is None or x.dtype not in _SUFFIX:
        return None
    view = channel_view(x, cdim)
    if view is None or centre.dtype != torch.float32 or threshold.dtype != torch.float32:
        return None
    return lib, view


# -- output buffers kept per owner (see the module docstring) -------------------------------------------------------
_buffers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # owner -> {slot: (key, private tensor, bytes)}
_buffers_lock = threading.RLock()   # re-entrant: a collected owner's finalizer may run inside a locked section
_held = [0]   # bytes kept over all owners
_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)   # absent: every output is freshly allocated


def _reuse_limit() -> int:
    raw = os.environ.get("MSPARSE_REUSE_MB", "1024")
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb >= 0:
        from ..errors import InputError
        raise InputError(f"MSPARSE_REUSE_MB must be a number of megabytes >= 0 (0 turns buffer reuse off), got {raw!r}")
    return int(mb * 2 ** 20)


def _forget(slots: dict) -> None:
    """An owner's buffers are gone (the owner was collected, or :func:`release_buffers`): stop counting them."""
    with _buffers_lock:
        _held[0] -= sum(entry[2] for entry in slots.values())
        slots.clear()


def _unshared(t: torch.Tensor) -> bool:
    """True when ``t`` (the cache's private tensor) is the only tensor left on its storage: the use count is 2, its
    own reference plus the temporary storage object this check creates."""
    storage = t.untyped_storage()
    return not storage.is_shared() and _storage_use_count(storage._cdata) == 2


def _empty(x: torch.Tensor, dtype: torch.dtype, owner, slot: str) -> torch.Tensor:
    """An uninitialised tensor with ``x``'s shape and strides in ``dtype``: the ``owner``'s buffer for ``slot`` from
    an earlier call when no other tensor refers to it any more, else a fresh one (kept for next time, within
    ``MSPARSE_REUSE_MB`` over all owners). ``owner=None``: always fresh."""
    if owner is None or _storage_use_count is None:
        return torch.empty_like(x, dtype=dtype)
    key = (tuple(x.shape), x.stride(), dtype, torch.is_inference_mode_enabled())
    with _buffers_lock:
        slots = _buffers.get(owner)
        kept = slots.pop(slot, None) if slots is not None else None
        if kept is not None:
            _held[0] -= kept[2]
    if kept is not None and kept[0] == key and _unshared(kept[1]):
        out = kept[1]
    else:
        del kept
        out = torch.empty_like(x, dtype=dtype)
    size = out.untyped_storage().nbytes()
    private = torch.empty(0, dtype=dtype).set_(out.untyped_storage(), out.storage_offset(), out.shape, out.stride())
    with _buffers_lock:
        if _held[0] + size <= _reuse_limit():
            slots = _buffers.get(owner)
            if slots is None:
                slots = _buffers[owner] = {}
                weakref.finalize(owner, _forget, slots)
            old = slots.get(slot)
            slots[slot] = (key, private, size)
            _held[0] += size - (old[2] if old else 0)
    return out


def release_buffers() -> None:
    """Drop every kept output buffer (their memory returns once no returned tensor refers to it)."""
    for slots in list(_buffers.values()):
        _forget(slots)
    with _buffers_lock:
        _buffers.clear()


def sparsify(x: torch.Tensor, cdim: int, centre: torch.Tensor, threshold: torch.Tensor, want_mask: bool,
             owner=None):
    """``(out, mask)``: out = centre where |x − centre| < threshold else x (centre, threshold: float32 [C]);
    ``mask`` (bool, x's shape and strides) only when ``want_mask``. ``None`` if the kernels cannot serve.
    ``owner`` (the calling operator): reuse its earlier buffers when free (module docstring)."""
    served = _serve(x, cdim, centre, threshold)
    if served is None:
        return None
    lib, view = served
    out = _empty(x, x.dtype, owner, "out")
    if out.stride() != x.stride():
        return None
    mask = _empty(x, torch.bool, owner, "mask") if want_mask else None
    if mask is not None and mask.stride() != x.stride():
        return None
    centre, threshold = centre.contiguous(), threshold.contiguous()
    fill = centre.to(x.dtype)  # the replacement value in x's dtype, rounded by PyTorch as the eager path does
    getattr(lib, f"ms_sparsify_{_SUFFIX[x.dtype]}")(
        x.data_ptr(), out.data_ptr(), mask.data_ptr() if mask is not None else None, centre.data_ptr(),
        threshold.data_ptr(), fill.data_ptr(), *view, _threads())
    return out, mask


def count_band(x: torch.Tensor, cdim: int, centre: torch.Tensor, threshold: torch.Tensor):
    """Number of entries with |x − centre| < threshold, or ``None`` if the kernels cannot serve."""
    served = _serve(x, cdim, centre, threshold)
    if served is None:
        return None
    lib, view = served
    centre, threshold = centre.contiguous(), threshold.contiguous()
    return int(getattr(lib, f"ms_count_{_SUFFIX[x.dtype]}")(
        x.data_ptr(), centre.data_ptr(), threshold.data_ptr(), *view, _threads()))


def masked_grad(grad: torch.Tensor, mask: torch.Tensor, owner=None):
    """grad_in = 0 where ``mask`` else ``grad``; ``None`` if the kernels cannot serve (then use ``torch.where``).
    ``owner``: as in :func:`sparsify`."""
    lib = _lib()
    if lib is None or grad.dtype not in _WIDTH or grad.device.type != "cpu" or torch.compiler.is_compiling():
        return None
    if grad.shape != mask.shape or grad.stride() != mask.stride() or type(grad) is not torch.Tensor:
        return None   # the mask is dense (made by sparsify), so equal strides make grad dense in the same order
    out = _empty(grad, grad.dtype, owner, "grad")
    if out.stride() != grad.stride():
        return None
    getattr(lib, f"ms_masked_grad_{_WIDTH[grad.dtype]}")(grad.data_ptr(), mask.data_ptr(), out.data_ptr(),
                                                         grad.numel(), _threads())
    return out


def moments(x: torch.Tensor, cdim: int, shift: torch.Tensor):
    """``(Σ(x − shift), Σ(x − shift)²)`` per channel (float64 [C] each) of a float32 tensor, accumulated in
    float64; ``None`` if the kernels cannot serve. ``shift``: float64 [C], ideally near each channel's mean."""
    lib = _lib()
    if lib is None or x.dtype != torch.float32:
        return None
    view = channel_view(x, cdim)
    if view is None:
        return None
    shift = shift.to(torch.float64).contiguous()
    s1 = torch.empty(view[1], dtype=torch.float64)
    s2 = torch.empty(view[1], dtype=torch.float64)
    lib.ms_moments_f32(x.data_ptr(), shift.data_ptr(), s1.data_ptr(), s2.data_ptr(), *view, _threads())
    return s1, s2
