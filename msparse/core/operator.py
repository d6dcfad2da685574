"""The MeanSparse operator: mean-centred feature sparsification of one site.

For each channel c with statistics (mean μ_c, population variance σ_c²), a scalar α ≥ 0 and a centre
reference r_c (μ_c by default):

    out = r_c   where |x − r_c| < α·σ_c   (strict: the entry is "blocked")
    out = x     elsewhere

α = 0 returns the input object itself (the exact identity). The threshold is computed as
``alpha * sqrt(var)`` on float32 buffers, exactly like the official code, so outputs match it bit for bit.

Two routes compute the same bits. On CPU the fused kernels of :mod:`msparse.core.kernels` make one pass over
memory per site: forward reads x and writes the output (plus a one-byte band mask when the exact gradient will
be needed), the exact backward reads the mask and the incoming gradient and writes the outgoing one, the identity
backward passes the gradient through untouched. Everywhere else (CUDA, other dtypes or layouts, a model being
traced by ``torch.compile``, ``MSPARSE_FUSED=0``, no C++ compiler, and any backward mode other than
:data:`FUSED_BACKWARDS`) the eager PyTorch code runs. :func:`kernel_info` says which route is active and why.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InputError, StateError, UnknownNameError
from . import kernels

LAYOUTS = {
    # layout: (number of dims, channel dim)
    "nchw": (4, 1),  # convolutional feature maps
    "nhwc": (4, 3),  # channels-last tensors (ConvNeXt MLP hidden, timm Swin blocks)
    "nlc": (3, 2),  # token sequences (Swin MLP and residual stream)
}
CENTRES = ("mean", "zero", "global")
BACKWARDS = ("exact", "identity")
FUSED_BACKWARDS = ("exact", "identity")  # backward modes the fused CPU kernels serve; others run eagerly


def kernel_info() -> dict:
    """The CPU operator's route: ``{"fused": bool, "route": str, "reason": str, "build_seconds", "library"}``
    (builds or loads the kernels on first call, about 2 s cold, under a millisecond from the cache)."""
    return kernels.info()


def check_alpha(alpha) -> float:
    """Return ``alpha`` as a float, or raise :class:`~msparse.errors.InputError` unless it is a finite number ≥ 0."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise InputError(f"alpha must be a number >= 0, got {alpha!r}") from None
    if not math.isfinite(value) or value < 0:
        raise InputError(f"alpha must be a finite number >= 0, got {alpha!r}")
    return value


def _check_choice(kind: str, value: str, choices) -> str:
    if value not in choices:
        raise UnknownNameError(f"unknown {kind} {value!r}; choose one of {', '.join(map(repr, choices))}")
    return value


class _StraightThrough(torch.autograd.Function):
    """Forward: the sparsified tensor. Backward: the identity (BPDA / straight-through estimator)."""

    @staticmethod
    def forward(ctx, x, blocked, centre):
        return torch.where(blocked, centre, x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


class _FusedBand(torch.autograd.Function):
    """The operator through the fused kernels. Forward: the sparsified tensor (and, for the exact backward, the
    band mask, one byte per entry). Backward: 0 where the mask is set, else the gradient (``exact``, the autograd
    of ``torch.where``), or the gradient itself (``identity``)."""

    @staticmethod
    def forward(ctx, x, cdim, centre, threshold, exact, owner):
        fused = kernels.sparsify(x, cdim, centre, threshold, want_mask=exact, owner=owner)
        if fused is None:   # the kernels declined this tensor after all: the eager computation, same bits
            with torch.no_grad():
                shape = [1] * x.ndim
                shape[cdim] = -1
                mask = (x - centre.view(shape)).abs_() < threshold.view(shape)
                out = torch.where(mask, centre.view(shape).to(x.dtype), x)
        else:
            out, mask = fused
        ctx.exact, ctx.owner = exact, owner
        if exact:
            ctx.save_for_backward(mask)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        if not ctx.exact:
            return grad, None, None, None, None, None
        (mask,) = ctx.saved_tensors
        g = kernels.masked_grad(grad, mask, owner=ctx.owner)
        if g is None:
            g = torch.where(mask, torch.zeros((), dtype=grad.dtype), grad)
        return g, None, None, None, None, None


class MeanSparse(nn.Module):
    """Mean-centred sparsification of ``channels`` channels in a declared ``layout``.

    Args:
        channels: number of channels C.
        layout: ``"nchw"`` (N, C, H, W), ``"nhwc"`` (N, H, W, C) or ``"nlc"`` (N, L, C).
        centre: band centre and replacement value: ``"mean"`` (per-channel μ_c, MeanSparse),
            ``"zero"`` (hard thresholding) or ``"global"`` (one mean over all channels; paper Table 5).
        backward: ``"exact"`` (autograd of the forward: zero gradient inside the band, the official
            behaviour) or ``"identity"`` (straight-through, as in RobustBench's BPDA evaluation).

    Buffers (saved in the state dict): ``mean`` [C], ``var`` [C] (population variance), ``alpha`` (0-d),
    ``n_samples`` (0-d, how many inputs the statistics pass saw; 0 = not calibrated).
    """

    def __init__(self, channels: int, layout: str = "nchw", centre: str = "mean", backward: str = "exact"):
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise InputError(f"channels must be a positive integer, got {channels!r}")
        self.channels = channels
        self.layout = _check_choice("layout", layout, LAYOUTS)
        self.centre = _check_choice("centre", centre, CENTRES)
        self.backward = _check_choice("backward mode", backward, BACKWARDS)
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.zeros(channels))
        self.register_buffer("alpha", torch.zeros(()))
        self.register_buffer("n_samples", torch.zeros((), dtype=torch.int64))
        self._alpha = 0.0  # cache of the ``alpha`` buffer (the one source of truth), see _alpha_value
        self._alpha_stamp = None
        self._calibrated = False
        self._collector = None  # set by msparse.core.calibration.calibrate during the statistics pass
        self.site = None  # msparse.core.placement.Site, set by sparsify

    # -- state ---------------------------------------------------------------------------------
    @property
    def calibrated(self) -> bool:
        return self._calibrated

    @property
    def centre(self) -> str:
        """The band centre and replacement value (one of :data:`CENTRES`; checked on every assignment)."""
        return self._centre

    @centre.setter
    def centre(self, value: str) -> None:
        self._centre = _check_choice("centre", value, CENTRES)

    @property
    def backward(self) -> str:
        """The backward mode (one of :data:`BACKWARDS`; checked on every assignment)."""
        return self._backward

    @backward.setter
    def backward(self, value: str) -> None:
        self._backward = _check_choice("backward mode", value, BACKWARDS)

    def _alpha_value(self) -> float:
        """α as a Python float. The ``alpha`` buffer is the one source of truth (set_alpha, a loaded state
        dict and a direct ``op.alpha.fill_(...)`` all write it); the float is re-read only when the buffer
        was replaced or written in place (its version counter moved), so forward needs no device sync."""
        a = self.alpha
        if a.device.type == "meta":
            return 0.0
        try:
            stamp = (id(a), a._version)
        except RuntimeError:   # an inference-mode tensor keeps no version counter: read it every time
            return float(a)
        if stamp != self._alpha_stamp:
            self._alpha = float(a)
            self._alpha_stamp = stamp
        return self._alpha

    def set_alpha(self, alpha) -> None:
        """Set α (a finite number ≥ 0)."""
        value = check_alpha(alpha)
        self.alpha.fill_(value)   # the float32 value actually used is read back by _alpha_value

    def set_backward(self, mode: str) -> None:
        self.backward = _check_choice("backward mode", mode, BACKWARDS)

    @torch.no_grad()
    def load_statistics(self, mean: torch.Tensor, var: torch.Tensor, n_samples: int) -> None:
        """Store statistics: ``mean`` and ``var`` of shape [C], ``n_samples`` ≥ 1."""
        mean = torch.as_tensor(mean)
        var = torch.as_tensor(var)
        if mean.shape != (self.channels,) or var.shape != (self.channels,):
            raise InputError(
                f"statistics of shape {tuple(mean.shape)} / {tuple(var.shape)} do not fit a site with "
                f"{self.channels} channels")
        if not (torch.isfinite(mean).all() and torch.isfinite(var).all()) or (var < 0).any():
            raise InputError("statistics must be finite, with variances >= 0")
        if int(n_samples) < 1:
            raise InputError(f"n_samples must be >= 1, got {n_samples}")
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.n_samples.fill_(int(n_samples))
        self._calibrated = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._calibrated = self.n_samples.device.type != "meta" and int(self.n_samples) > 0

    def extra_repr(self) -> str:
        return (f"{self.channels}, layout={self.layout!r}, alpha={self._alpha_value():g}, centre={self.centre!r}, "
                f"backward={self.backward!r}, calibrated={self._calibrated}")

    # -- forward -------------------------------------------------------------------------------
    def _view_shape(self):
        ndim, cdim = LAYOUTS[self.layout]
        shape = [1] * ndim
        shape[cdim] = self.channels
        return shape

    def _check_input(self, x: torch.Tensor) -> None:
        ndim, cdim = LAYOUTS[self.layout]
        if x.ndim != ndim or x.shape[cdim] != self.channels:
            where = f" at site {self.site.name!r}" if self.site is not None else ""
            raise InputError(
                f"MeanSparse{where} expects layout {self.layout!r} with {self.channels} channels in dim "
                f"{cdim} of a {ndim}-d tensor, got shape {tuple(x.shape)}")

    def _centre_vector(self) -> torch.Tensor:
        if self.centre == "mean":
            return self.mean
        if self.centre == "zero":
            return torch.zeros_like(self.mean)
        return self.mean.mean().expand(self.channels)  # equal counts per channel: the global mean

    def _band_vectors(self, x: torch.Tensor):
        """``(centre [C], threshold [C])`` for input ``x`` after checking its layout and the statistics; the
        threshold is ``alpha * sqrt(var)`` on the buffers, as in the official code."""
        self._check_input(x)
        if not self._calibrated:
            where = f" at site {self.site.name!r}" if self.site is not None else ""
            raise StateError(
                f"MeanSparse{where} has alpha={self._alpha_value():g} but no statistics: run "
                "msparse.calibrate(model, data) before setting alpha > 0")
        return self._centre_vector(), self.alpha * torch.sqrt(self.var)

    def band(self, x: torch.Tensor):
        """Return ``(blocked, centre)``: the boolean mask of entries inside the band, and the centre
        broadcast to ``x``'s layout (the eager reference computation)."""
        centre, threshold = self._band_vectors(x)
        shape = self._view_shape()
        centre, threshold = centre.view(shape), threshold.view(shape)
        with torch.no_grad():  # the mask carries no gradient: no graph, and abs in place
            distance = x - centre
            distance.abs_()
            return distance < threshold, centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._collector is not None:
            self._collector.update(x)
        if self._alpha_value() == 0.0:
            return x
        if self._backward in FUSED_BACKWARDS and kernels.available():
            cdim = LAYOUTS[self.layout][1]
            if kernels.channel_view(x, cdim) is not None:
                centre, threshold = self._band_vectors(x)
                if torch.is_grad_enabled() and x.requires_grad:
                    return _FusedBand.apply(x, cdim, centre, threshold, self._backward == "exact", self)
                fused = kernels.sparsify(x, cdim, centre, threshold, want_mask=False, owner=self)
                if fused is not None:
                    return fused[0]
        blocked, centre = self.band(x)
        centre = centre.to(x.dtype)
        if self._backward == "identity" and torch.is_grad_enabled() and x.requires_grad:
            return _StraightThrough.apply(x, blocked, centre)
        return torch.where(blocked, centre, x)

    @torch.no_grad()
    def blocked_fraction(self, x: torch.Tensor) -> float:
        """Fraction of the entries of ``x`` that fall inside the band (0 when α = 0)."""
        if self._alpha_value() == 0.0:
            self._check_input(x)
            return 0.0
        if x.numel() <= 2 ** 24 and kernels.available():
            centre, threshold = self._band_vectors(x)
            count = kernels.count_band(x, LAYOUTS[self.layout][1], centre, threshold)
            if count is not None:   # float32 count / numel, the value ``blocked.float().mean()`` gives (exact < 2**24)
                return float(torch.tensor(count, dtype=torch.float32).div_(x.numel()))
        blocked, _ = self.band(x)
        return float(blocked.float().mean())
