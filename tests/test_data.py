"""msparse.data: the shipped exact subset, official files, the JPEG copy, provenance, clear errors."""
import hashlib
import json
import io
import pickle
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from msparse.data import batches as B, jpeg, loading, offline, official
from msparse.data.batches import ImageBatches
from msparse.data.loading import load_data, load_uint8
from msparse.errors import ChecksumError, DataError

# The first ten labels of the official CIFAR-10 test batch (test_batch, official order).
OFFICIAL_TEST_LABELS_0_9 = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
SHARED_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_partial.npz"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*a, **k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def fresh_caches(monkeypatch):
    monkeypatch.setattr(offline, "_OFFLINE_CACHE", {})
    monkeypatch.setattr(official, "_OFFICIAL_CACHE", {})
    monkeypatch.setattr(jpeg, "_JPEG_CACHE", {})


@pytest.fixture
def no_official(monkeypatch, tmp_path):
    """Run from an empty directory so that ./data holds no official files."""
    monkeypatch.delenv("MSPARSE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


def test_offline_test_subset_is_robustbench_standard_1000(no_network, no_official):
    x, y, info = load_data("cifar10", "test", return_info=True)
    assert x.shape == (1000, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (1000,) and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y[:10].tolist() == OFFICIAL_TEST_LABELS_0_9
    assert torch.bincount(y, minlength=10).min() > 50
    # pixels are integers / 255 (no resampling, no lossy step)
    assert torch.equal((x * 255).round() / 255, x)
    assert info.kind == "offline" and info.exact and info.n == 1000 and info.indices == "0..999"
    assert "exact official pixels" in info.source and "test 0..999" in info.source


def test_offline_train_subset_and_slicing(no_official):
    x, y, info = load_data("cifar10", "train", n=100, start=2900, return_info=True)
    assert x.shape == (100, 3, 32, 32) and info.indices == "2900..2999"
    xa, _ = load_data("cifar10", "train")
    assert len(xa) == offline.offline_manifest()["splits"]["train"]["n"] >= 2000
    assert torch.equal(xa[2900:3000], x)


@pytest.mark.skipif(not SHARED_NPZ.exists(), reason="reference npz not available")
def test_offline_pixels_equal_the_exact_reference(no_official):
    ref = np.load(SHARED_NPZ)
    x, y, _ = load_uint8("cifar10", "test")
    assert np.array_equal(x, ref["x_test_head"][:1000]) and np.array_equal(y, ref["y_test"][:1000])
    x, y, _ = load_uint8("cifar10", "train")
    assert np.array_equal(x, ref["x_train_part"][:len(x)]) and np.array_equal(y, ref["y_train"][:len(x)])


def test_manifest_checksums_match_files():
    man = offline.offline_manifest()
    for entry in man["splits"].values():
        data = (offline.OFFLINE_DIR / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]


def test_shipped_data_is_small():
    total = sum(p.stat().st_size for p in offline.OFFLINE_DIR.iterdir())
    assert total <= 10 * 2**20


def test_corrupted_offline_file_is_a_clear_error(tmp_path, monkeypatch, fresh_caches, no_official):
    copy = tmp_path / "offline"
    shutil.copytree(offline.OFFLINE_DIR, copy)
    f = copy / offline.offline_manifest()["splits"]["test"]["file"]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    monkeypatch.setattr(offline, "OFFLINE_DIR", copy)
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        load_data("cifar10", "test", n=10)


def test_asking_more_than_the_offline_subset_says_what_to_download(no_official):
    with pytest.raises(DataError) as e:
        load_data("cifar10", "test", n=5000)
    msg = str(e.value)
    assert "cifar-10-python.tar.gz" in msg and "cifar-10-batches-py" in msg and "1000" in msg


def test_named_directory_without_files_is_an_error_not_a_silent_fallback(tmp_path):
    with pytest.raises(DataError) as e:
        load_data("cifar10", "test", n=10, data_dir=tmp_path)
    assert str(tmp_path) in str(e.value) and "cifar-10-python.tar.gz" in str(e.value)


def _write_fake_official(root, n_per_batch=4):
    """Official pickle layout with known pixel values: image k has value (k * 7) % 256 in row-major CHW."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    k = 0
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = np.stack([np.full(3072, (j * 7) % 256, np.uint8) for j in range(k, k + n_per_batch)])
        data[:, 1024:2048] = 1  # green plane
        with open(d / name, "wb") as fh:
            pickle.dump({"data": data, "labels": list(range(k % 10, k % 10 + n_per_batch))}, fh)
        k += n_per_batch
    return d


def test_official_files_are_used_and_reported(tmp_path, fresh_caches, no_network):
    d = _write_fake_official(tmp_path)
    x, y, info = load_data("cifar10", "train", data_dir=tmp_path, return_info=True)
    assert info.kind == "official" and info.source == f"official files at {d}" and info.n == 20
    assert x.shape == (20, 3, 32, 32)
    assert torch.all(x[:, 1] == 1 / 255)                  # channel order: R, G, B planes
    assert x[3, 0, 0, 0].item() == pytest.approx(21 / 255)
    xt, yt = load_data("cifar10", "test", data_dir=d)     # the batches directory itself works too
    assert xt.shape == (4, 3, 32, 32) and yt.tolist() == [0, 1, 2, 3]


def test_official_files_via_environment_variable(tmp_path, monkeypatch, fresh_caches):
    _write_fake_official(tmp_path)
    monkeypatch.setenv("MSPARSE_DATA_DIR", str(tmp_path))
    _, _, info = load_data("cifar10", "test", return_info=True)
    assert info.kind == "official"


def test_truncated_official_file_is_a_clear_error(tmp_path, fresh_caches):
    d = _write_fake_official(tmp_path)
    (d / "test_batch").write_bytes(b"\x80\x04trunc")
    with pytest.raises(DataError, match="re-download"):
        load_data("cifar10", "test", data_dir=tmp_path)


def _write_fake_jpeg(path, n=6):
    from PIL import Image
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    blobs = []
    for im in imgs:
        b = io.BytesIO()
        Image.fromarray(im).save(b, format="JPEG", quality=75)
        blobs.append(np.frombuffer(b.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(path, jpeg=np.concatenate(blobs), offsets=offsets, labels=np.arange(n, dtype=np.uint8) % 10)
    return imgs


def test_jpeg_copy_is_decoded_and_labelled_as_lossy(tmp_path, fresh_caches):
    imgs = _write_fake_jpeg(tmp_path / "cifar10_jpeg_train.npz")
    x, y, info = load_uint8("cifar10", "train", data_dir=tmp_path, source="jpeg")
    assert x.shape == (6, 32, 32, 3) and x.dtype == np.uint8 and y.tolist() == [0, 1, 2, 3, 4, 5]
    assert info.kind == "jpeg" and not info.exact and "JPEG copy" in info.source
    assert np.abs(x.astype(int) - imgs).mean() > 0          # lossy, but close-ish
    x2, _, _ = load_uint8("cifar10", "train", data_dir=tmp_path / "cifar10_jpeg_train.npz", source="jpeg")
    assert np.array_equal(x, x2)


def test_missing_jpeg_copy(tmp_path):
    with pytest.raises(DataError, match="cifar10_jpeg_train.npz"):
        load_data("cifar10", "train", data_dir=tmp_path, source="jpeg")


def test_cifar100_and_imagenet_missing_data_messages(tmp_path):
    with pytest.raises(DataError) as e:
        load_data("cifar100", "test", data_dir=tmp_path)
    assert "cifar-100-python.tar.gz" in str(e.value) and str(tmp_path) in str(e.value)
    with pytest.raises(DataError) as e:
        load_data("imagenet", "test", data_dir=tmp_path)
    assert "val" in str(e.value) and "image-net.org" in str(e.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_data("mnist")
    with pytest.raises(ValueError, match="unknown split"):
        load_data("cifar10", "validation")
    with pytest.raises(ValueError, match="unknown source"):
        load_data("cifar10", "test", source="internet")


def test_image_batches_are_deterministic_per_epoch_and_augment_correctly():
    x, y, _ = load_uint8("cifar10", "test", n=64)
    b = ImageBatches(x, y, 16, seed=3)
    b.set_epoch(0)
    e0 = [t.clone() for t, _ in b]
    b.set_epoch(0)
    assert all(torch.equal(p, q) for p, q in zip(e0, [t for t, _ in b]))
    b.set_epoch(1)
    assert not torch.equal(e0[0], next(iter(b))[0])
    xb = e0[0]
    assert xb.shape == (16, 3, 32, 32) and 0 <= xb.min() and xb.max() <= 1
    plain = ImageBatches(x, y, 64, shuffle=False, augment=False)
    xp, yp = next(iter(plain))
    assert torch.equal(xp, loading.to_float(x)) and torch.equal(yp, torch.from_numpy(y))


def test_augmentation_is_a_padded_crop_with_optional_flip():
    x = torch.arange(2 * 32 * 32 * 3, dtype=torch.int64).remainder(251).to(torch.uint8).reshape(2, 32, 32, 3)
    g = torch.Generator().manual_seed(0)
    out = ImageBatches._augment(x.permute(0, 3, 1, 2).contiguous(), g)
    src = x.permute(0, 3, 1, 2)
    for i in range(2):
        padded = torch.nn.functional.pad(src[i], (4, 4, 4, 4))
        found = any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1))
                    for dy in range(9) for dx in range(9) for c in [padded[:, dy:dy + 32, dx:dx + 32]])
        assert found


def test_batches_for_the_statistics_pass_keep_order_and_the_last_partial_batch(no_official):
    it, info = B.batches("cifar10", "train", batch_size=512, n=1100)
    sizes = [len(xb) for xb, _ in it]
    assert sizes == [512, 512, 76] and info.n == 1100
    x, _ = load_data("cifar10", "train", n=1100)
    assert torch.equal(torch.cat([xb for xb, _ in it]), x)


def test_image_folder_loader(tmp_path):
    from PIL import Image
    with pytest.raises(DataError, match="image-net.org"):
        B.image_folder_loader(tmp_path / "train")
    for c in ("n01", "n02"):
        (tmp_path / "train" / c).mkdir(parents=True)
        Image.fromarray(np.full((300, 260, 3), 128, np.uint8)).save(tmp_path / "train" / c / "a.JPEG")
    xb, yb = next(iter(B.image_folder_loader(tmp_path / "train", batch_size=2, num_workers=0)))
    assert xb.shape == (2, 3, 224, 224) and yb.tolist() == [0, 1]


def test_an_edited_label_in_the_manifest_is_refused(no_official, fresh_caches, monkeypatch):
    """The labels are pinned by sha256 in the code: a manifest whose label was changed is refused."""
    real = offline.offline_manifest()
    edited = json.loads(json.dumps(real))
    edited["splits"]["test"]["labels"][0] = (edited["splits"]["test"]["labels"][0] + 1) % 10
    monkeypatch.setattr(offline, "offline_manifest", lambda: edited)
    with pytest.raises(ChecksumError, match="labels of the shipped test subset"):
        load_data("cifar10", "test", n=10)


def test_the_pinned_labels_are_the_official_ones():
    """Against the exact official labels in ../shared/data (when present)."""
    ref = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_partial.npz"
    if not ref.is_file():
        pytest.skip(f"no {ref}")
    d = np.load(ref)
    for split, n, key in (("test", 1000, "y_test"), ("train", 3000, "y_train")):
        assert hashlib.sha256(d[key][:n].astype(np.int64).tobytes()).hexdigest() == offline.OFFLINE_LABELS_SHA256[split]
