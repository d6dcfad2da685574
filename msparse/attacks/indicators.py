"""Indicators of attack failure (Pintor et al., "Indicators of Attack Failure: Debugging and Improving
Optimization of Adversarial Examples", NeurIPS 2022) for one image batch and one attack run, each as data:
a name, a value, a threshold, whether it fires, and a one-sentence reading of what firing means.

Why this matters here: MeanSparse (arXiv 2406.05927, Sec. 3) replaces every feature inside a band around its
channel mean by the mean, so the exact backward has zero gradient in the band -- the textbook setting for
gradient masking. :mod:`msparse.attacks.diagnostics` measures the zero-gradient rate at the clean images; this
module checks the attack itself.

What runs the attack. The attack is secml-torch's native L∞ PGD (``secmlt.adv.evasion.pgd.PGD`` with
``backend="native"``, CE loss), observed by secml-torch's trackers:

* ``LossTracker`` and ``PredictionTracker`` (attack-level: the per-image CE and prediction at every iterate);
* ``GradientNormTracker`` attached through ``secmlt.trackers.ModelTracker`` (a forward hook on the model plus a
  hook on its input tensor): the norm of the gradient of the attack loss with respect to the model input, at
  every iterate. It is not attached to the attack itself because secml-torch 1.5's fixed-ε loop hands its
  trackers the gradient of the *previous* iteration (zeros at iteration 0, the last one never): read there, a
  smooth model would look masked at iteration 0.

secml-torch calls ``model(x)`` and backpropagates with autograd, so the attack goes through whatever backward
the MeanSparse sites have when it runs: the caller picks it with
:func:`msparse.core.placement.backward_mode` (``"exact"``: the direct attack; ``"identity"``: BPDA).

What secml-torch does not have, written here: the indicators themselves (secml-torch 1.5 records trajectories
but ships no failure rule), the check that the logits have a gradient at all, the random-neighbourhood loss
probe of *unstable predictions*, and the bookkeeping of restarts and transfer.

The indicators, each over the images the model classifies correctly (the ones the attack has to break);
``THRESHOLDS`` holds the firing rule (value > threshold), ``READINGS`` the reading:

* ``unavailable_gradients`` -- share of images whose input gradient is exactly zero or not finite at some
  iterate (Pintor's zero-gradient check, taken along the path); 1 when the logits have no autograd graph.
* ``silent_success`` -- share of images that some iterate misclassified while the returned point does not
  (PGD returns the highest-loss iterate, which need not be adversarial).
* ``incomplete_optimization`` -- share of images the attack did not break whose best-so-far loss, rescaled to
  [0, 1], still moved by more than 0.05 over the last min(10, steps) iterations (Pintor's rule).
* ``unstable_predictions`` -- mean relative change of the CE loss at the clean image under uniform noise in
  [-ε/2, ε/2] (Pintor's probe), capped at 1. The 0.1 threshold is msparse's choice; Pintor report the value.
* ``unconstrained_attack_failure`` -- share of images the same PGD fails to break with ε = 1 (the whole
  [0, 1] box): an attack that works cannot fail there.
* ``non_converging_restarts`` -- share of images on which random-start PGD restarts disagree (some break the
  image, others do not): the single-run number depends on the start. Computed when ``restarts >= 2``.
* ``transfer_failure`` -- with a ``surrogate``: share of images whose PGD point against the surrogate fools the
  surrogate but not the model. Computed only when a surrogate is given (for MeanSparse: the same network at
  α = 0, :func:`msparse.core.placement.base_model`).

Thresholds other than the unstable-prediction one are Pintor's "any image" rule (threshold 0).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._compat import import_torchvision
from ..core.placement import backward_mode, base_model, operators
from ..errors import InputError, InputTypeError, UnknownNameError

__all__ = ["Indicator", "IndicatorRun", "THRESHOLDS", "READINGS", "MODES", "attack_indicators",
           "indicator_table"]

#: backward mode of the MeanSparse sites for each attack name of the table
MODES = {"direct": "exact", "bpda": "identity"}

#: an indicator fires when its value is above its threshold
THRESHOLDS: dict[str, float] = {
    "unavailable_gradients": 0.0,
    "silent_success": 0.0,
    "incomplete_optimization": 0.0,
    "unstable_predictions": 0.1,
    "unconstrained_attack_failure": 0.0,
    "non_converging_restarts": 0.0,
    "transfer_failure": 0.0,
}

#: what it means when the indicator fires
READINGS: dict[str, str] = {
    "unavailable_gradients": "the attack got a zero or non-finite input gradient on some images, so its steps "
                             "there are blind: use BPDA or a gradient-free attack before trusting the robustness.",
    "silent_success": "the attack passed through an adversarial point but returned a non-adversarial one, so the "
                      "reported robust accuracy is too high: keep any misclassified iterate.",
    "incomplete_optimization": "on images it did not break the attack's loss was still rising at the end, so more "
                               "iterations (or a larger step) may break them.",
    "unstable_predictions": "the loss changes a lot under tiny random noise, so the gradient is a poor guide to the "
                            "loss nearby: average gradients over noise (EOT) or smooth the loss.",
    "unconstrained_attack_failure": "even with the whole image box allowed the attack failed on some images, which "
                                    "a working gradient attack never does: the attack, not the model, is failing.",
    "non_converging_restarts": "random restarts disagree on some images, so one run depends on its start: report "
                               "the worst case over several restarts.",
    "transfer_failure": "points that fool the surrogate do not fool the model, so a transfer attack alone "
                        "underestimates the risk (or the model genuinely differs): check with white-box attacks.",
}

_SOURCE = {
    "unavailable_gradients": "secml-torch PGD + ModelTracker(GradientNormTracker); graph check: msparse",
    "silent_success": "secml-torch PGD + PredictionTracker",
    "incomplete_optimization": "secml-torch PGD + LossTracker",
    "unstable_predictions": "msparse (random-noise loss probe)",
    "unconstrained_attack_failure": "secml-torch PGD (ε = 1) + PredictionTracker",
    "non_converging_restarts": "secml-torch PGD (random start) x restarts",
    "transfer_failure": "secml-torch PGD on the surrogate; msparse scoring",
}


@dataclass(frozen=True)
class Indicator:
    """One indicator of attack failure: ``value`` (NaN when it could not be computed), its ``threshold``,
    ``fires`` (value > threshold), the ``reading`` when it fires, and what computed it (``source``)."""

    name: str
    value: float
    threshold: float
    fires: bool
    reading: str
    source: str
    n: int   # images the value is taken over

    @property
    def rule(self) -> str:
        return f"value > {self.threshold:g}"


@dataclass(frozen=True)
class IndicatorRun:
    """The indicators of one attack run on one batch, with the run's context: images, images the model
    classifies correctly (the attacked ones), and the PGD robust accuracy over all images."""

    indicators: tuple[Indicator, ...]
    n: int
    n_attacked: int
    pgd_accuracy: float
    clean_accuracy: float

    def __getitem__(self, name: str) -> Indicator:
        for ind in self.indicators:
            if ind.name == name:
                return ind
        raise UnknownNameError(f"no indicator {name!r}; computed: {[i.name for i in self.indicators]}")

    def fired(self) -> list[str]:
        return [i.name for i in self.indicators if i.fires]

    def frame(self):
        """A pandas DataFrame, one row per indicator (name, value, threshold, fires, reading, source, n)."""
        import pandas as pd

        return pd.DataFrame([{**asdict(i), "rule": i.rule} for i in self.indicators])


def _make(name: str, value: float, n: int) -> Indicator:
    thr = THRESHOLDS[name]
    return Indicator(name, float(value), thr, bool(not math.isnan(value) and value > thr), READINGS[name],
                     _SOURCE[name], int(n))


def _share(flags: torch.Tensor, mask: torch.Tensor) -> float:
    k = int(mask.sum())
    return float(flags[mask].float().mean()) if k else math.nan


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def _pgd(model, x, y, eps, steps, step_size, random_start, trackers=None, model_trackers=None):
    """secml-torch's native L∞ PGD on one batch: the returned points, and the trackers (filled, [N, steps])."""
    import_torchvision()   # secml-torch imports it: a mismatched pair is named, not a bare RuntimeError
    from secmlt.adv.evasion.pgd import PGD
    from secmlt.trackers import ModelTracker
    from torch.utils.data import DataLoader, TensorDataset

    attack = PGD(perturbation_model="linf", epsilon=eps, num_steps=steps, step_size=step_size,
                 random_start=random_start, lb=0.0, ub=1.0, backend="native", trackers=trackers)
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    if model_trackers:
        wrapped = ModelTracker(model, trackers=model_trackers)
        try:
            wrapped.init_tracking(x_orig=x, y=y)
            try:
                out = attack(wrapped, loader)
            finally:
                wrapped.end_tracking()
        finally:
            wrapped.detach()
    else:
        out = attack(model, loader)
    x_adv = torch.cat([b for b, _ in out]).to(x.device)
    return x_adv


def _incomplete(losses: torch.Tensor, window: int = 10, tol: float = 0.05) -> torch.Tensor:
    """Per image [N]: does the best-so-far loss (rescaled to [0, 1] over the run) still move by more than
    ``tol`` over the last ``window`` iterations? (Pintor et al.'s incomplete-optimisation rule, for a loss
    the attack maximises.)"""
    lo = losses.min(1, keepdim=True).values
    span = losses.max(1, keepdim=True).values - lo
    r = torch.where(span > 0, (losses - lo) / span.clamp_min(1e-30), torch.zeros_like(losses))
    best = r.cummax(1).values
    tail = best[:, -min(window, best.shape[1]):]
    return (tail.max(1).values - tail.min(1).values) > tol


def _unstable(model, x, y, eps, draws, generator) -> float:
    """Mean relative change of the per-image CE at ``x`` under uniform noise in [-ε/2, ε/2] (``draws`` draws,
    the images kept in [0, 1]), capped at 1."""
    with torch.no_grad():
        ref = F.cross_entropy(model(x), y, reduction="none")
        den = ref.abs().where(ref != 0, torch.ones_like(ref))
        rel = []
        for _ in range(draws):
            noise = (torch.rand(x.shape, generator=generator, device="cpu").to(x.device) - 0.5) * eps
            loss = F.cross_entropy(model((x + noise).clamp(0, 1)), y, reduction="none")
            rel.append((loss - ref).abs() / den)
    return min(float(torch.stack(rel).mean()), 1.0)


def _has_graph(model, x) -> bool:
    xx = x[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        return bool(model(xx).requires_grad)


def attack_indicators(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255,
                      steps: int = 20, step_size: float | None = None, restarts: int = 2,
                      unconstrained: bool = True, noise_draws: int = 16, surrogate: nn.Module | None = None,
                      seed: int = 0) -> IndicatorRun:
    """The indicators of attack failure of an L∞ PGD-CE run (ε ``eps``, ``steps`` iterations, step
    ``step_size``, default 2.5 ε / steps) against ``model`` on the images ``x`` [N, C, H, W] in [0, 1] with
    labels ``y`` [N]. The MeanSparse sites keep the backward they have (set it with
    :func:`msparse.core.placement.backward_mode`). ``restarts`` random-start runs feed
    ``non_converging_restarts`` (skipped below 2), ``unconstrained`` adds the ε = 1 run, ``noise_draws`` the
    unstable-prediction probe (skipped at 0), ``surrogate`` the transfer run. Seeded by ``seed``; the model is
    put in eval mode for the call."""
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or x.ndim < 2 or y.ndim != 1 \
            or len(x) != len(y) or len(x) == 0:
        raise InputError("x must be a non-empty image batch [N, ...] and y its labels [N] "
                         f"(got {tuple(getattr(x, 'shape', ()))} and {tuple(getattr(y, 'shape', ()))})")
    if not eps > 0:
        raise InputError(f"eps must be > 0, got {eps!r}")
    for name, v, least in (("steps", steps, 1), ("restarts", restarts, 0), ("noise_draws", noise_draws, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise InputError(f"{name} must be a whole number >= {least}, got {v!r}")
    step = float(step_size) if step_size is not None else 2.5 * eps / steps
    if not step > 0:
        raise InputError(f"step_size must be > 0, got {step_size!r}")

    import_torchvision()
    from secmlt.trackers import GradientNormTracker, LossTracker, PredictionTracker

    x, y = x.detach(), y.detach().long()
    models = [m for m in (model, surrogate) if m is not None]
    was = [m.training for m in models]
    devices = [x.device.index or 0] if x.is_cuda else []
    try:
        for m in models:
            m.eval()
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            return _run(model, x, y, eps, steps, step, restarts, unconstrained, noise_draws, surrogate, gen,
                        LossTracker, PredictionTracker, GradientNormTracker)
    finally:
        for m, w in reversed(list(zip(models, was))):
            m.train(w)


def _run(model, x, y, eps, steps, step, restarts, unconstrained, noise_draws, surrogate, gen,
         LossTracker, PredictionTracker, GradientNormTracker) -> IndicatorRun:
    n = len(x)
    correct = _predict(model, x) == y
    n_att = int(correct.sum())
    cpu_y = y.cpu()
    att = correct.cpu()
    out: list[Indicator] = []

    if not _has_graph(model, x):   # no autograd graph: no gradient attack can run
        out.append(_make("unavailable_gradients", 1.0 if n_att else math.nan, n_att))
        return IndicatorRun(tuple(out), n, n_att, math.nan, n_att / n)

    loss_t, pred_t, grad_t = LossTracker(), PredictionTracker(), GradientNormTracker()
    x_adv = _pgd(model, x, y, eps, steps, step, False, [loss_t, pred_t], [grad_t])
    final_ok = (_predict(model, x_adv) == y).cpu()
    broken = att & ~final_ok
    losses, preds, gnorm = loss_t.get().float(), pred_t.get(), grad_t.get().float()

    zero = ((gnorm == 0) | ~torch.isfinite(gnorm)).any(1)
    out.append(_make("unavailable_gradients", _share(zero, att), n_att))
    passed = (preds != cpu_y[:, None]).any(1)
    out.append(_make("silent_success", _share(passed & final_ok, att), n_att))
    out.append(_make("incomplete_optimization", _share(_incomplete(losses) & final_ok, att), n_att))

    if noise_draws:
        value = _unstable(model, x[correct], y[correct], eps, noise_draws, gen) if n_att else math.nan
        out.append(_make("unstable_predictions", value, n_att))

    if unconstrained:
        pred_u = PredictionTracker()
        xu = _pgd(model, x, y, 1.0, steps, 2.5 / steps, False, [pred_u])
        hit = (_predict(model, xu) != y).cpu() | (pred_u.get() != cpu_y[:, None]).any(1)
        out.append(_make("unconstrained_attack_failure", _share(~hit, att), n_att))

    if restarts >= 2:
        wins = torch.stack([(_predict(model, _pgd(model, x, y, eps, steps, step, True)) != y).cpu()
                            for _ in range(restarts)])
        disagree = wins.any(0) & ~wins.all(0)
        out.append(_make("non_converging_restarts", _share(disagree, att), n_att))

    if surrogate is not None:
        xt = _pgd(surrogate, x, y, eps, steps, step, False)
        fools_s = (_predict(surrogate, xt) != y).cpu()
        fools_m = (_predict(model, xt) != y).cpu()
        out.append(_make("transfer_failure", _share(fools_s & ~fools_m, att), n_att))

    return IndicatorRun(tuple(out), n, n_att, float((final_ok & att).float().mean()), n_att / n)


class _AtAlphaZero(nn.Module):
    """``model`` with every MeanSparse α at 0 during each forward (the transfer surrogate of a sparsified
    model); the sites' backward is the model's own (at α = 0 the band is empty, so it passes gradients)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = model
        self.train(model.training)

    def forward(self, x):
        with base_model(self.inner):
            return self.inner(x)


def indicator_table(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alphas=(0.0, 0.25),
                    modes=("direct", "bpda"), **kw):
    """One :func:`attack_indicators` run per α in ``alphas`` (set at every site) and attack in ``modes``
    (``"direct"``: exact backward, ``"bpda"``: identity backward, see :data:`MODES`), as a long pandas
    DataFrame: alpha, mode, indicator, value, threshold, fires, n_attacked, clean_acc, pgd_acc, reading. For
    α > 0 the transfer indicator uses the same network at α = 0 as the surrogate. ``kw`` goes to
    :func:`attack_indicators`. The model's α values are restored afterwards.

    Pivot for a compact view: ``t.pivot(index="indicator", columns=["alpha", "mode"], values="value")``."""
    import pandas as pd

    from ..core.placement import set_alpha

    for mode in modes:
        if mode not in MODES:
            raise UnknownNameError(f"unknown attack mode {mode!r}; choose from {sorted(MODES)}")
    ops = operators(model, required=True)
    saved = [float(op.alpha) for op in ops]
    rows = []
    try:
        for alpha in alphas:
            set_alpha(model, alpha)
            surrogate = _AtAlphaZero(model) if float(alpha) > 0 else None
            for mode in modes:
                with backward_mode(model, MODES[mode]):
                    run = attack_indicators(model, x, y, surrogate=surrogate, **kw)
                for ind in run.indicators:
                    rows.append({"alpha": float(alpha), "mode": mode, "indicator": ind.name, "value": ind.value,
                                 "threshold": ind.threshold, "fires": ind.fires, "n_attacked": run.n_attacked,
                                 "clean_acc": run.clean_accuracy, "pgd_acc": run.pgd_accuracy,
                                 "reading": ind.reading})
    finally:
        for op, a in zip(ops, saved):
            op.set_alpha(a)
    return pd.DataFrame(rows)
