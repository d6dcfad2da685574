"""The official CIFAR pickles are read without executing code: a planted batch file is refused, never run."""
import builtins
import os
import pickle
import pickletools
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from msparse.data import official as D
from msparse.data.loading import load_data, load_uint8
from msparse.errors import DataError, MsparseError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_NPZ = SHARED_DATA / "cifar10_partial.npz"
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "_OFFICIAL_CACHE", {})
    monkeypatch.delenv("MSPARSE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)   # ./data is empty, and a relative payload could only write here


# ------------------------------------------------------------------ a faithful Python 2 (cPickle) batch writer

def _py2_pickle(obj, reconstruct_module="numpy.core.multiarray") -> bytes:
    """Pickle ``obj`` the way Python 2 cPickle (protocol 2) wrote the official CIFAR files.

    ``str`` becomes a Python 2 byte string (SHORT_BINSTRING / BINSTRING, latin1), which is what makes
    ``encoding="latin1"`` necessary; a uint8 ndarray becomes ``_reconstruct(ndarray, (0,), 'b')`` + BUILD with
    ``(1, shape, dtype('u1', 0, 1) + its state, False, raw bytes)``, byte for byte as numpy 1.x on Python 2.
    """
    out = bytearray(b"\x80\x02")

    def s(text):  # Python 2 str
        b = text.encode("latin1") if isinstance(text, str) else bytes(text)
        out.extend(b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b)

    def i(v):
        v = int(v)
        if 0 <= v < 256:
            out.extend(b"K" + bytes([v]))
        elif 0 <= v < 65536:
            out.extend(b"M" + struct.pack("<H", v))
        else:
            out.extend(b"J" + struct.pack("<i", v))

    def w(o):
        if isinstance(o, bool) or o is None:
            out.extend({None: b"N", True: b"\x88", False: b"\x89"}[o])
        elif isinstance(o, int):
            i(o)
        elif isinstance(o, (str, bytes)):
            s(o)
        elif isinstance(o, list):
            out.extend(b"](")
            for v in o:
                w(v)
            out.extend(b"e")
        elif isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                w(k)
                w(v)
            out.extend(b"u")
        elif isinstance(o, np.ndarray):
            assert o.dtype == np.uint8 and o.flags.c_contiguous
            out.extend(f"c{reconstruct_module}\n_reconstruct\ncnumpy\nndarray\n".encode())
            out.extend(b"K\x00\x85")           # (0,)
            s("b")
            out.extend(b"\x87R(K\x01")         # REDUCE; state (1, shape, ...
            for d in o.shape:
                i(d)
            out.extend({1: b"\x85", 2: b"\x86", 3: b"\x87"}[o.ndim])
            out.extend(b"cnumpy\ndtype\n")
            s("u1")
            out.extend(b"K\x00K\x01\x87R(K\x03")
            s("|")
            out.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")   # dtype state, BUILD
            out.extend(b"\x89")                # not Fortran order
            s(o.tobytes())
            out.extend(b"tb")                  # array state, BUILD
        else:
            raise TypeError(type(o))

    w(obj)
    out.extend(b".")
    return bytes(out)


def _batch(x_hwc, labels, first_index, label="testing batch 1 of 1"):
    """The official batch dict: data is (N, 3072) uint8, the R, G and B 32x32 planes of each image in turn."""
    data = np.ascontiguousarray(np.asarray(x_hwc, np.uint8).transpose(0, 3, 1, 2).reshape(len(x_hwc), 3072))
    names = [f"image_{first_index + k:05d}.png" for k in range(len(x_hwc))]
    return {"batch_label": label, "labels": [int(v) for v in labels], "data": data, "filenames": names}


def _write_official_dir(root, batches: dict, reconstruct_module="numpy.core.multiarray"):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name, batch in batches.items():
        (d / name).write_bytes(_py2_pickle(batch, reconstruct_module))
    return d


def _small_batches(n=4):
    rng = np.random.default_rng(0)
    out = {}
    for b, name in enumerate(BATCHES):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        out[name] = _batch(x, [(b * n + k) % 10 for k in range(n)], b * n, f"batch {name}")
    return out


def _globals(blob: bytes) -> set:
    """module.name of every GLOBAL opcode (the Python 2 files use no STACK_GLOBAL)."""
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(blob) if op.name == "GLOBAL"}


# ------------------------------------------------------------------ planted files are refused, nothing runs

class _Payload:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker):
    return {
        "os.system": (_Payload(os.system, (f"touch '{marker}'",)), ("posix.system", "nt.system", "os.system")),
        "builtins.exec": (_Payload(builtins.exec, (f"open({str(marker)!r}, 'w').close()",)), ("builtins.exec",)),
        "subprocess": (_Payload(subprocess.call, (["touch", str(marker)],)), ("subprocess.call",)),
    }


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "subprocess"])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_planted_test_batch_is_refused_and_its_payload_never_runs(tmp_path, kind, protocol):
    marker = tmp_path / "PWNED"
    payload, names = _payloads(marker)[kind]
    blob = pickle.dumps({"data": payload, "labels": [0]}, protocol=protocol)
    # control: the payload is live -- a plain pickle.load of this file does run it
    pickle.loads(blob, encoding="latin1")
    assert marker.exists()
    marker.unlink()

    d = _write_official_dir(tmp_path / "data", _small_batches())
    (d / "test_batch").write_bytes(blob)
    with pytest.raises(DataError) as e:
        load_data("cifar10", "test", data_dir=tmp_path / "data", source="official")
    msg = str(e.value)
    assert not marker.exists()
    assert isinstance(e.value, MsparseError)
    assert str(d / "test_batch") in msg
    assert any(n in msg for n in names), msg
    assert "not an official CIFAR batch file" in msg and "delete it" in msg and D.CIFAR10_URL in msg
    assert D._OFFICIAL_CACHE == {}


def test_planted_file_found_through_the_environment_variable_and_dot_data(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    blob = pickle.dumps(_Payload(os.system, (f"touch '{marker}'",)), protocol=2)
    d = _write_official_dir(tmp_path / "data", _small_batches())
    (d / "data_batch_3").write_bytes(blob)
    for env in (None, str(tmp_path / "data")):       # ./data (cwd is tmp_path), then $MSPARSE_DATA_DIR
        if env:
            monkeypatch.setenv("MSPARSE_DATA_DIR", env)
        with pytest.raises(DataError, match="system"):
            load_data("cifar10", "train")             # source="auto" must not fall back silently either
        assert not marker.exists()


@pytest.mark.parametrize("blob, refused", [
    # protocol 0 INST opcode: calls os.system('...') through find_class too
    (b"(S'touch PWNED'\nios\nsystem\n.", "os.system"),
    # a numpy global that is not the array reconstruction: exec's a string (a known numpy gadget)
    (b"\x80\x02cnumpy.testing._private.utils\nrunstring\nU\x04pass\x85R.", "numpy.testing._private.utils.runstring"),
    (b"\x80\x02cnumpy\nload\nU\x01x\x85R.", "numpy.load"),
    # a Python 3 protocol-2 pickle of bytes needs _codecs.encode, which official (Python 2) files never do
    (pickle.dumps({"data": b"\x00" * 8}, protocol=2), "_codecs.encode"),
])
def test_only_the_array_globals_are_resolved(tmp_path, blob, refused):
    f = tmp_path / "test_batch"
    f.write_bytes(blob)
    with pytest.raises(DataError) as e:
        D._load_cifar_pickle(f, "REMEDY")
    assert refused in str(e.value) and "REMEDY" in str(e.value)
    assert not (tmp_path / "PWNED").exists()


def test_cifar100_planted_files_never_run(tmp_path):
    """CIFAR-100 is read by torchvision, which checks each file's MD5 against the official one first."""
    marker = tmp_path / "PWNED"
    blob = pickle.dumps(_Payload(os.system, (f"touch '{marker}'",)), protocol=2)
    folder = tmp_path / "data" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test", "meta"):
        (folder / name).write_bytes(blob)
    with pytest.raises(DataError, match="corrupted"):
        load_data("cifar100", "test", data_dir=tmp_path / "data")
    assert not marker.exists()


# ------------------------------------------------------------------ official-format files still load as before

def test_faithful_batch_references_only_the_allowed_globals():
    blob = _py2_pickle(_small_batches()["test_batch"])
    assert _globals(blob) == {"numpy.core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype"}
    assert {f"{m}.{n}" for m, n in D._CIFAR_PICKLE_GLOBALS} == {
        "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype"}


@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_safe_reader_returns_what_pickle_load_latin1_returns(tmp_path, module):
    batch = _small_batches()["test_batch"]
    f = tmp_path / "test_batch"
    f.write_bytes(_py2_pickle(batch, module))
    with open(f, "rb") as fh:
        plain = pickle.load(fh, encoding="latin1")
    safe = D._load_cifar_pickle(f, "REMEDY")
    assert type(safe) is dict and list(safe) == list(plain) == ["batch_label", "labels", "data", "filenames"]
    assert safe["batch_label"] == plain["batch_label"] == batch["batch_label"]   # latin1 -> str keys and values
    assert safe["labels"] == plain["labels"] == batch["labels"]
    assert safe["filenames"] == plain["filenames"] == batch["filenames"]
    assert safe["data"].dtype == np.uint8 and safe["data"].shape == (4, 3072)
    assert np.array_equal(safe["data"], plain["data"]) and np.array_equal(safe["data"], batch["data"])


def test_faithful_batches_load_through_the_public_loader(tmp_path):
    batches = _small_batches()
    d = _write_official_dir(tmp_path / "data", batches)
    x, y, info = load_uint8("cifar10", "test", data_dir=tmp_path / "data", source="official")
    assert info.kind == "official" and info.exact and info.path == str(d) and info.n == 4
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    want = batches["test_batch"]["data"].reshape(4, 3, 32, 32).transpose(0, 2, 3, 1)
    assert np.array_equal(x, want) and y.tolist() == batches["test_batch"]["labels"]
    xt, yt = load_data("cifar10", "train", data_dir=d, source="official")   # the batches folder itself
    assert xt.shape == (20, 3, 32, 32) and yt.tolist() == [k % 10 for k in range(20)]
    assert (xt[:4] * 255).round().byte().permute(0, 2, 3, 1).numpy().tolist() == \
        batches["data_batch_1"]["data"].reshape(4, 3, 32, 32).transpose(0, 2, 3, 1).tolist()


@pytest.mark.skipif(not SHARED_NPZ.exists(), reason=f"exact CIFAR-10 pixels not available ({SHARED_NPZ})")
def test_official_pixels_in_official_format_load_exactly(tmp_path):
    """The exact official test images 0..1016 and training images 0..3999, written in the official format."""
    ref = np.load(SHARED_NPZ)
    xt, yt = ref["x_test_head"], ref["y_test"][:len(ref["x_test_head"])]
    part = ref["idx_train_part"] < 4000
    xtr, ytr = ref["x_train_part"][part], ref["y_train"][ref["idx_train_part"][part]]
    batches = {"test_batch": _batch(xt, yt, 0)}
    for b, name in enumerate(BATCHES[:5]):
        lo, hi = 800 * b, 800 * (b + 1)
        batches[name] = _batch(xtr[lo:hi], ytr[lo:hi], lo, f"training batch {b + 1} of 5")
    _write_official_dir(tmp_path / "data", batches)
    x, y, info = load_uint8("cifar10", "test", data_dir=tmp_path / "data", source="official")
    assert info.kind == "official" and np.array_equal(x, xt) and np.array_equal(y, yt)
    x, y, _ = load_uint8("cifar10", "train", data_dir=tmp_path / "data", source="official")
    assert np.array_equal(x, xtr) and np.array_equal(y, ytr)
    # the same pixels and labels as the shipped offline subset
    xo, yo, _ = load_uint8("cifar10", "test", source="offline")
    assert np.array_equal(xo, xt[:len(xo)]) and np.array_equal(yo, yt[:len(yo)])


def _shared_official_dirs():
    out = []
    for name, files in (("cifar-10-batches-py", BATCHES + ["batches.meta"]),
                        ("cifar-100-python", ["train", "test", "meta"])):
        d = SHARED_DATA / name
        present = [d / f for f in files if (d / f).is_file()]
        if present:
            out.append(present)
    return [f for fs in out for f in fs]


@pytest.mark.skipif(not _shared_official_dirs(),
                    reason=f"no official CIFAR batch file under {SHARED_DATA} (its README lists only npz copies "
                           f"of the pixels; those are covered by test_official_pixels_in_official_format_load_exactly)")
def test_official_files_in_shared_data_load():
    for f in _shared_official_dirs():
        safe = D._load_cifar_pickle(f, "REMEDY")      # first: plain pickle.load only once it is known safe
        with open(f, "rb") as fh:
            plain = pickle.load(fh, encoding="latin1")
        assert list(safe) == list(plain)
        for k in plain:
            if isinstance(plain[k], np.ndarray):
                assert np.array_equal(safe[k], plain[k]) and safe[k].dtype == plain[k].dtype
            else:
                assert safe[k] == plain[k]
