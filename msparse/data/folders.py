"""CIFAR-100 and ImageNet from folders the user supplies: CIFAR-100's official files through torchvision (which
checks each file's MD5 before unpickling), RobustBench's 5000-image ImageNet validation subset through RobustBench.
Nothing is downloaded unless ``download=True`` is passed (CIFAR-100 only)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError, InputError
from .info import DataInfo, index_ranges

__all__ = ["CIFAR100_URL", "load_cifar100", "load_imagenet"]

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"


def load_cifar100(sp, n, data_dir, start, download) -> tuple[np.ndarray, np.ndarray, DataInfo]:
    """Rows ``start .. start+n-1`` of CIFAR-100 ``sp``: uint8 (N, 32, 32, 3), int64 (N,) and their :class:`DataInfo`."""
    from .._compat import import_torchvision

    torchvision = import_torchvision()

    root = Path(data_dir) if data_dir is not None else Path(os.environ.get("MSPARSE_DATA_DIR", "data"))
    folder = root / "cifar-100-python"
    if not (folder / ("test" if sp == "test" else "train")).is_file() and not download:
        raise DataError(
            f"CIFAR-100 not found: expected {folder / sp}. Download {CIFAR100_URL} and extract it into "
            f"{root} (so that {folder} holds train, test and meta), then pass data_dir={str(root)!r}; "
            f"with internet, download=True does this through torchvision.")
    try:
        dset = torchvision.datasets.CIFAR100(root=str(root), train=(sp == "train"), download=download)
    except RuntimeError as e:
        raise DataError(f"CIFAR-100 files under {folder} are incomplete or corrupted ({e}); re-download "
                        f"{CIFAR100_URL} and extract it into {root}") from e
    x, y = dset.data, np.asarray(dset.targets, dtype=np.int64)
    stop = len(x) if n is None else start + int(n)
    if stop > len(x):
        raise InputError(f"CIFAR-100 {sp} has {len(x)} images; asked for rows {start}..{stop - 1}")
    x, y = x[start:stop], y[start:stop]
    info = DataInfo("cifar100", sp, "official", f"official files at {folder}", len(x),
                    index_ranges(range(start, stop)), True, str(folder))
    return x, y, info


def load_imagenet(sp, n, data_dir, start, preprocessing, model_name):
    """Rows ``start ..`` of RobustBench's ImageNet subset: float32 (N, 3, H, W) in [0, 1], int64 (N,) and their
    :class:`DataInfo`."""
    if sp != "test":
        raise InputError("imagenet: only the RobustBench validation subset (split='test') is supported")
    if data_dir is None or not (Path(data_dir) / "val").is_dir():
        raise DataError(
            "ImageNet not found: pass data_dir=DIR where DIR/val/<wnid>/<image>.JPEG holds the ILSVRC-2012 "
            "validation images (from https://image-net.org, registration required) in the class-folder "
            "layout RobustBench expects (see robustbench/helper_files/imagenet_test_image_ids.txt).")
    from .._compat import import_robustbench

    import_robustbench()
    from robustbench.data import get_preprocessing, load_imagenet, PREPROCESSINGS
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    if model_name is not None and preprocessing is None:
        prep = get_preprocessing(BenchmarkDataset.imagenet, ThreatModel.Linf, model_name, None)
    else:
        prep = PREPROCESSINGS[preprocessing or "Res256Crop224"] if not callable(preprocessing) else preprocessing
    total = 5000 if n is None else start + int(n)
    if total > 5000:
        raise InputError("imagenet: RobustBench's evaluation subset has 5000 images")
    x, y = load_imagenet(total, str(data_dir), prep)
    x, y = x[start:], y[start:]
    info = DataInfo("imagenet", "test", "imagenet-folder",
                    f"ImageNet val folder at {data_dir} (RobustBench 5000-image subset)", len(x),
                    index_ranges(range(start, total)), True, str(data_dir),
                    {"preprocessing": preprocessing or (model_name and "model default") or "Res256Crop224"})
    return x, y.long(), info
