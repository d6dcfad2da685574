"""The statistics pass: per-channel mean and variance of every MeanSparse site.

Two modes:
  ``"exact"``    streaming population mean/variance over all N·H·W (or N·L) elements of each channel,
                 independent of the batch size and equal to a float64 computation to ~1e-7 relative: each batch's
                 per-channel moments are merged in float64 with Chan et al.'s parallel formula. The default.
  ``"official"`` the official code's estimate: the average of per-batch means and of *unbiased* per-batch
                 variances, every batch weighted equally (reproduces the released checkpoints).

The pass runs in eval mode, without gradients, with every α held at 0 (so every site sees the
un-sparsified model, as in the official code); α values and the training flag are restored afterwards.
Statistics are written only when the whole pass succeeded.

Per-batch moments (:func:`batch_moments`): on CPU float32 tensors the fused kernel of :mod:`msparse.core.kernels`
reads the activation once and accumulates Σ(x − k) and Σ(x − k)² in float64 around a per-channel shift k (the
running mean, or the batch's first entry for the first batch), so cancellation costs nothing; elsewhere
(CUDA, other dtypes or layouts, ``MSPARSE_FUSED=0``) ``torch.var_mean`` of the batch converted to float64, the
reference (a conversion pass and a float64 reduction). Both routes agree to ~1e-13 relative in float64, so the
float32 statistics they store (whose bits the results store hashes into record keys) almost always match bit for
bit; bench/bench_core.py and tests/test_stats.py compare them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch
from torch import nn

from .._device import model_device
from ..errors import InputError, InputTypeError, StateError
from . import kernels
from .operator import LAYOUTS, MeanSparse
from .placement import operators

MODES = ("exact", "official")


def batch_moments(x: torch.Tensor, layout: str, shift: torch.Tensor | None = None):
    """Per-channel ``(n, mean, m2)`` of one batch: elements per channel, mean and Σ(x − mean)², float64 [C].

    ``shift`` (float64 [C], optional): a value near each channel's mean (the fused kernel sums around it; any
    value works, a closer one loses fewer digits to cancellation). Without one the batch's first entry is used.
    """
    ndim, cdim = LAYOUTS[layout]
    x = x.detach()
    n = x.numel() // x.shape[cdim]
    if shift is None:
        first = [0] * ndim
        first[cdim] = slice(None)
        shift = x[tuple(first)]
    sums = kernels.moments(x, cdim, shift.to(torch.float64))
    if sums is not None:
        s1, s2 = sums
        shift = shift.to(device=s1.device, dtype=torch.float64)
        return n, shift + s1 / n, (s2 - s1 * (s1 / n)).clamp_min_(0)
    dims = tuple(d for d in range(ndim) if d != cdim)
    var, mean = torch.var_mean(x.double(), dim=dims, correction=0)
    return n, mean, var * n


class _Exact:
    def __init__(self, op: MeanSparse):
        self.op, self.count, self.n_images = op, 0, 0
        self.mean = torch.zeros(op.channels, dtype=torch.float64, device=op.mean.device)
        self.m2 = torch.zeros_like(self.mean)

    def update(self, x):
        self.op._check_input(x)
        n, mean, m2 = batch_moments(x, self.op.layout, self.mean if self.count else None)
        mean, m2 = mean.to(self.mean.device), m2.to(self.mean.device)
        total = self.count + n   # Chan et al.: merge (count, mean, m2) with the batch's (n, mean, m2)
        delta = mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += m2 + delta.square() * (self.count * n / total)
        self.count = total
        self.n_images += x.shape[0]

    def result(self):
        return self.mean, self.m2 / self.count


class _Official:
    def __init__(self, op: MeanSparse):
        self.op, self.batches, self.n_images = op, 0, 0
        self.sum_mean = torch.zeros(op.channels, dtype=torch.float64, device=op.mean.device)
        self.sum_var = torch.zeros_like(self.sum_mean)

    def update(self, x):
        self.op._check_input(x)
        n, mean, m2 = batch_moments(x, self.op.layout)
        self.sum_mean += mean.to(self.sum_mean.device)
        self.sum_var += (m2 / (n - 1) if n > 1 else torch.full_like(m2, float("nan"))).to(self.sum_var.device)  # unbiased, per batch
        self.batches += 1
        self.n_images += x.shape[0]

    def result(self):
        return self.sum_mean / self.batches, self.sum_var / self.batches


def _batches(data, batch_size: int) -> Iterable[torch.Tensor]:
    """Yield input batches from a tensor, an (x, y) pair of tensors, or an iterable of batches."""
    if isinstance(data, (tuple, list)) and data and isinstance(data[0], torch.Tensor) and len(data) == 2 \
            and data[0].ndim >= 2 and data[1].ndim == 1:
        data = data[0]
    if isinstance(data, torch.Tensor):
        if data.ndim < 2 or data.shape[0] == 0:
            raise InputError(f"calibration data must be a non-empty batch of inputs, got shape {tuple(data.shape)}")
        yield from data.split(batch_size)
        return
    for item in data:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor):
            raise InputTypeError(f"calibration batches must be tensors or (x, y) tuples, got {type(item).__name__}")
        yield x


def calibrate(model: nn.Module, data, mode: str = "exact", *, batch_size: int = 512, device=None,
              progress: bool = False) -> dict:
    """Compute the statistics of every MeanSparse site of ``model`` from ``data``.

    Args:
        model: a model sparsified with :func:`msparse.sparsify`.
        data: inputs (N, C, H, W) in the model's input range, an ``(x, y)`` pair, or an iterable of
            batches (tensors or ``(x, y, ...)`` tuples, e.g. a DataLoader). Use un-augmented training data.
        mode: ``"exact"`` or ``"official"`` (see the module docstring).
        batch_size: batch size when ``data`` is a tensor.
        device: where to run; default: the model's device.
    Returns:
        a summary ``{"mode", "n_samples", "n_batches", "n_sites", "seconds"}``.
    """
    if mode not in MODES:
        raise InputError(f"unknown statistics mode {mode!r}; choose 'exact' or 'official'")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    ops = operators(model, required=True)
    device = torch.device(device) if device is not None else model_device(model)
    collector_cls = _Exact if mode == "exact" else _Official
    collectors = [collector_cls(op) for op in ops]
    saved_alpha = [float(op.alpha) for op in ops]
    was_training = model.training
    n_batches, n_samples, start = 0, 0, time.perf_counter()
    iterator = _batches(data, batch_size)
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(iterator, desc=f"statistics ({mode})", unit="batch")
    try:
        for op, c in zip(ops, collectors):
            op.set_alpha(0.0)
            op._collector = c
        model.eval()
        with torch.no_grad():
            for x in iterator:
                model(x.to(device))
                n_batches += 1
                n_samples += x.shape[0]
    finally:
        for op, a in zip(ops, saved_alpha):
            op._collector = None
            op.set_alpha(a)
        model.train(was_training)
    if n_batches == 0:
        raise InputError("calibration data is empty: pass at least one batch of inputs")
    for op, c in zip(ops, collectors):
        if c.n_images == 0:
            raise StateError(f"site {op.site.name if op.site else op!r} was never reached by the forward pass")
    finals = []   # all or nothing: every site's statistics are checked before any site is written
    for op, c in zip(ops, collectors):
        mean, var = (t.float() for t in c.result())
        if not (torch.isfinite(mean).all() and torch.isfinite(var).all()):
            raise StateError(f"statistics of site {op.site.name if op.site else op!r} are not finite in float32 "
                             "(the activations overflow there); no site was updated. Check the inputs' range "
                             "and the model's dtype")
        finals.append((op, mean, var, c.n_images))
    for op, mean, var, n in finals:
        op.load_statistics(mean, var, n)
    return {"mode": mode, "n_samples": n_samples, "n_batches": n_batches, "n_sites": len(ops),
            "seconds": time.perf_counter() - start}


def stats_snapshot(model: nn.Module) -> dict:
    """A copy of every site's statistics ``{site name: (mean, var, n_samples)}`` (put back with
    :func:`restore_stats`), e.g. to compare statistics recipes on one model without recalibrating it."""
    return {op.site.name: (op.mean.detach().clone(), op.var.detach().clone(), int(op.n_samples))
            for op in operators(model)}


def restore_stats(model: nn.Module, snap) -> None:
    """Put back statistics saved by :func:`stats_snapshot` (a site saved with no samples counts as one)."""
    for op in operators(model):
        m, v, n = snap[op.site.name]
        op.load_statistics(m, v, max(n, 1))
