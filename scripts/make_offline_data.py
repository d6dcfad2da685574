"""Build msparse/assets/cifar10_offline/ from ../shared/data/cifar10_partial.npz.

Exact official CIFAR-10 pixels: test images 0..999 (RobustBench's standard subset) and training images
0..N_TRAIN-1, stored as lossless WebP image grids (50 images per row) + a manifest with sha256 of every
file and of the decoded pixel bytes, official indices and labels.

    python scripts/make_offline_data.py [--src ../shared/data/cifar10_partial.npz] [--n-train 3000]
"""
import argparse
import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

COLS = 50
OUT = Path(__file__).resolve().parent.parent / "msparse" / "assets" / "cifar10_offline"


def grid(x: np.ndarray) -> np.ndarray:
    n = len(x)
    rows = -(-n // COLS)
    pad = np.zeros((rows * COLS - n, 32, 32, 3), np.uint8)
    x = np.concatenate([x, pad])
    return x.reshape(rows, COLS, 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(rows * 32, COLS * 32, 3)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=str(Path(__file__).resolve().parents[2] / "shared/data/cifar10_partial.npz"))
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--n-train", type=int, default=3000)
    a = ap.parse_args()
    d = np.load(a.src)
    idx = d["idx_train_part"]
    if not np.array_equal(idx[:a.n_train], np.arange(a.n_train)):
        raise SystemExit(f"training indices 0..{a.n_train - 1} are not all present in {a.src}")
    splits = {
        "test": (d["x_test_head"][:a.n_test], d["y_test"][:a.n_test]),
        "train": (d["x_train_part"][:a.n_train], d["y_train"][:a.n_train]),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    man = {"dataset": "cifar10",
           "description": "exact official CIFAR-10 pixels (byte-identical to cifar-10-batches-py), "
                          "lossless WebP grids of 50 images per row, official order",
           "provenance": "built by scripts/make_offline_data.py from cifar10_partial.npz (see ../shared/data/README.md)",
           "splits": {}}
    for name, (x, y) in splits.items():
        buf = io.BytesIO()
        Image.fromarray(grid(x)).save(buf, format="WEBP", lossless=True, quality=100, method=6, exact=True)
        data = buf.getvalue()
        back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        if not np.array_equal(back, grid(x)):
            raise SystemExit("WebP round trip is not lossless with this Pillow")
        fname = f"{name}_0-{len(x) - 1}.webp"
        (OUT / fname).write_bytes(data)
        man["splits"][name] = {
            "file": fname, "sha256": hashlib.sha256(data).hexdigest(),
            "pixels_sha256": hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest(),
            "n": int(len(x)), "cols": COLS, "indices": list(range(len(x))),
            "labels": [int(v) for v in y],
        }
        print(f"{fname}: {len(data) / 1e6:.2f} MB, {len(x)} images")
    (OUT / "manifest.json").write_text(json.dumps(man, indent=None, separators=(",", ":")) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
