"""Batches for training and for the statistics pass: :class:`ImageBatches` (in-memory uint8 images yielding float
batches, augmented with a pad-4 random crop and a horizontal flip, deterministic per (seed, epoch)), :func:`batches`
(CIFAR-10 through :func:`~msparse.data.loading.load_uint8` as such batches) and :func:`image_folder_loader` (an
ImageNet-style class-folder tree as a ``torch.utils.data.DataLoader``)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from ..errors import DataError, InputError, UnknownNameError
from .info import DataInfo
from .loading import load_uint8

__all__ = ["ImageBatches", "batches", "image_folder_loader"]


class ImageBatches:
    """In-memory uint8 images -> float batches, optionally augmented (pad-4 random crop + h-flip).

    ``x``: uint8 (N, H, W, 3) numpy/tensor; ``y``: int (N,).  Iterating yields ``(xb, yb)``,
    xb float32 (B, 3, H, W) in [0, 1].  Order and augmentation depend only on ``(seed, epoch)``
    (call :meth:`set_epoch`), so an interrupted run resumes with identical batches.
    """

    def __init__(self, x, y, batch_size: int = 128, *, shuffle: bool = True, augment: bool = True,
                 drop_last: bool = True, seed: int = 0, device=None, channels_last: bool = False):
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise InputError(f"ImageBatches expects uint8 (N, H, W, 3) images, got {tuple(x.shape)} {x.dtype}")
        self.x = x.permute(0, 3, 1, 2).contiguous()  # uint8 NCHW
        self.y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y).long()
        if len(self.x) != len(self.y):
            raise InputError(f"{len(self.x)} images but {len(self.y)} labels")
        self.batch_size, self.shuffle, self.augment = int(batch_size), shuffle, augment
        self.drop_last, self.seed, self.epoch = drop_last, int(seed), 0
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.channels_last = channels_last

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        n = len(self.x)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            xb = self.x[idx]
            if self.augment:
                xb = self._augment(xb, g)
            xb = xb.to(self.device, non_blocking=True).float().div_(255.0)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self.y[idx].to(self.device, non_blocking=True)

    @staticmethod
    def _augment(xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, c, h, w = xb.shape
        padded = torch.zeros((b, c, h + 8, w + 8), dtype=xb.dtype)
        padded[:, :, 4:4 + h, 4:4 + w] = xb
        dy = torch.randint(0, 9, (b,), generator=g)
        dx = torch.randint(0, 9, (b,), generator=g)
        flip = torch.rand(b, generator=g) < 0.5
        rows = (dy[:, None] + torch.arange(h)[None, :])  # (b, h)
        cols = (dx[:, None] + torch.arange(w)[None, :])  # (b, w)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        bi = torch.arange(b)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (b, h, w, c)
        return out.permute(0, 3, 1, 2).contiguous()


def batches(dataset: str = "cifar10", split: str = "train", batch_size: int = 512, n: Optional[int] = None,
            data_dir=None, *, source: str = "auto", start: int = 0, augment: bool = False,
            shuffle: bool = False, seed: int = 0, device=None) -> tuple[ImageBatches, DataInfo]:
    """CIFAR-10 as an iterable of ``(x, y)`` batches without materialising float32 copies of the set.

    Defaults suit the statistics pass (stored order, no augmentation, last partial batch kept).
    Returns ``(ImageBatches, DataInfo)``.
    """
    x, y, info = load_uint8(dataset, split, n, data_dir, source=source, start=start)
    return ImageBatches(x, y, batch_size, shuffle=shuffle, augment=augment, drop_last=False, seed=seed,
                        device=device), info


def image_folder_loader(folder, batch_size: int = 64, preprocessing="BicubicRes256Crop224", *,
                        shuffle: bool = False, num_workers: int = 2):
    """``torch.utils.data.DataLoader`` over an ImageNet-style class-folder tree (e.g. ``.../train``).

    ``preprocessing``: a RobustBench preprocessing name ("BicubicRes256Crop224", "Res256Crop224", ...) or a
    callable.  Yields ``(x, y)`` with x float32 (B, 3, 224, 224) in [0, 1].  Files are listed sorted,
    class folder by class folder (as the official code's ImageNet training loader lists them, which its statistics
    pass reads unshuffled).
    """
    from .._compat import import_torchvision

    torchvision = import_torchvision()
    folder = Path(folder)
    if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
        raise DataError(f"image folder not found or empty: {folder}; it must hold one sub-folder per class "
                        f"(ImageNet: the ILSVRC-2012 train or val images from https://image-net.org, "
                        f"registration required)")
    if callable(preprocessing):
        tf = preprocessing
    else:
        from .._compat import import_robustbench

        import_robustbench()
        from robustbench.data import PREPROCESSINGS
        if preprocessing not in PREPROCESSINGS:
            raise UnknownNameError(f"unknown preprocessing {preprocessing!r}; choose one of "
                                   f"{', '.join(str(k) for k in PREPROCESSINGS)}")
        tf = PREPROCESSINGS[preprocessing]
    dset = torchvision.datasets.ImageFolder(str(folder), transform=tf)
    return torch.utils.data.DataLoader(dset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers)
