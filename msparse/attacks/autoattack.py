"""Running attacks: the orchestration of registry attacks per example, plus BPDA, the surrogate backward and transfer.

Every perturbation is computed by a registered attack (:mod:`msparse.attacks.registry`; AutoAttack's components
come from ``pyautoattack``, configured as ``AutoAttack(version='standard')`` configures them). This module only
orchestrates them the way ``AutoAttack.run_standard_evaluation`` does (attack the points that are still robust,
one attack after the other, a point is robust only if it survives all of them), so that per-example,
per-attack outcomes are available and AutoAttack's sanity checks run once per evaluation. Attack names and
budgets are :mod:`msparse.attacks.base`'s.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn as nn
from pyautoattack import checks

from ..core.placement import backward_mode, base_model
from ..errors import UnknownNameError
from .base import Attack, AttackConfig
from .registry import AttackMethod, get_attack
from .surrogate import TAUS, surrogate_backward

__all__ = ["build_attacks", "run_attack", "predict", "Outcome", "autoattack_checks", "square_check",
           "capture_autoattack_log"]

_LOGGER_NAME = "auto-attack"


class _ListHandler(logging.Handler):
    def __init__(self, sink: list):
        super().__init__(level=logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


@contextlib.contextmanager
def capture_autoattack_log() -> Iterator[list[str]]:
    """Collect AutoAttack's warnings (zero gradients, randomised/dynamic defence, Square success...)
    in a list instead of printing them."""
    logger = logging.getLogger(_LOGGER_NAME)
    sink: list[str] = []
    h = _ListHandler(sink)
    old_prop = logger.propagate
    logger.addHandler(h)
    logger.propagate = False
    try:
        yield sink
    finally:
        logger.removeHandler(h)
        logger.propagate = old_prop


def build_attacks(model: nn.Module, attack: Attack, cfg: AttackConfig, device,
                  n_classes: int | None = None) -> list[AttackMethod]:
    """The registry attacks of one component, built for ``model`` and ``cfg`` in the order they run (the
    component's parameter overrides go to its own attack). Raises before anything runs on a norm an attack does
    not implement or an undeclared parameter."""
    return [get_attack(a)(model, cfg, device=device, n_classes=n_classes, params=attack.params_of(a))
            for a in attack.attacks]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Predicted labels [N] (``logits.max(1)[1]``, exactly as AutoAttack computes them)."""
    if batch_size is None or batch_size >= len(x):
        return model(x).max(dim=1)[1]
    return torch.cat([model(x[i:i + batch_size]).max(dim=1)[1] for i in range(0, len(x), batch_size)])


def _sequence(methods, model, x, y, robust, batch_size):
    """Run registry attacks one after the other on the points still robust.

    Returns (robust [N] bool, broken_by [N] int (-1 = never broken), x_adv [N, ...]).
    """
    robust = robust.clone()
    broken_by = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
    x_adv = x.clone()
    for j, method in enumerate(methods):
        idx = robust.nonzero().flatten()
        if idx.numel() == 0:
            break
        for s in range(0, idx.numel(), batch_size):
            bidx = idx[s:s + batch_size]
            xb, yb = x[bidx].clone(), y[bidx].clone()
            adv = method(xb, yb)
            with torch.no_grad():
                out = model(adv).max(dim=1)[1]
            fooled = ~yb.eq(out)
            hit = bidx[fooled]
            robust[hit] = False
            broken_by[hit] = j
            x_adv[hit] = adv[fooled].detach().to(x_adv.dtype)
    return robust, broken_by, x_adv


@dataclass
class Outcome:
    """Per-example result of one component on one batch.

    robust [N] bool (clean-correct on the model and not fooled); broken_by [N] int: index into
    ``attacks`` of the first attack that fooled the point (-1: never fooled or not attacked).
    """
    attack: Attack
    robust: torch.Tensor
    broken_by: torch.Tensor
    x_adv: torch.Tensor | None = None
    messages: list[str] = field(default_factory=list)


def run_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack,
               cfg: AttackConfig, *, clean: torch.Tensor | None = None, batch_size: int = 128,
               device=None, source: nn.Module | None = None, n_classes: int | None = None,
               keep_adv: bool = False, only: torch.Tensor | None = None) -> Outcome:
    """Run one component on a batch x [N, C, H, W] (in [0, 1]), y [N] on ``device``.

    ``clean`` [N] bool: clean correctness on ``model`` (computed if None). For ``transfer`` the
    adversarial images are crafted on ``source`` (default: ``model`` with every alpha = 0) and the
    point is robust iff ``model`` is clean-correct and classifies the crafted image correctly.
    ``only`` [N] bool: attack these images and no other (a cascade stage; ``clean`` must already exclude the
    rest): a transfer attack then crafts on them only, where a full run crafts on every image the source
    classifies correctly. The caller's global RNG state is left untouched (AutoAttack reseeds torch per attack).
    """
    device = torch.device(device) if device is not None else x.device
    x, y = x.to(device), y.to(device)
    if clean is None:
        clean = predict(model, x).eq(y)
    clean = clean.to(device)
    fork = [device.index or 0] if device.type == "cuda" else []
    with capture_autoattack_log() as log, torch.random.fork_rng(devices=fork):
        if attack.mode == "direct":
            methods = build_attacks(model, attack, cfg, device, n_classes)
            robust, broken_by, x_adv = _sequence(methods, model, x, y, clean, batch_size)
        elif attack.mode == "bpda":
            with backward_mode(model, "identity"):
                methods = build_attacks(model, attack, cfg, device, n_classes)
                robust, broken_by, x_adv = _sequence(methods, model, x, y, clean, batch_size)
        elif attack.mode == "surrogate":   # one stage per temperature, each on the points still robust
            robust, broken_by = clean.clone(), torch.full((len(x),), -1, dtype=torch.long, device=x.device)
            x_adv = x.clone()
            for tau in TAUS:
                with surrogate_backward(model, tau):
                    methods = build_attacks(model, attack, cfg, device, n_classes)
                    robust_t, broken_t, adv_t = _sequence(methods, model, x, y, robust, batch_size)
                hit = broken_t >= 0
                broken_by[hit], x_adv[hit] = broken_t[hit], adv_t[hit]
                robust = robust_t
        elif attack.mode == "transfer":
            ctx = base_model(model) if source is None else contextlib.nullcontext(source)
            with ctx as src:
                src_clean = predict(src, x).eq(y)
                if only is not None:
                    src_clean = src_clean & only.to(device)
                methods = build_attacks(src, attack, cfg, device, n_classes)
                _, broken_by, x_adv = _sequence(methods, src, x, y, src_clean, batch_size)
            robust = clean & predict(model, x_adv, batch_size).eq(y)
            # -1 where the target holds (or is wrong on clean images), else the source attack whose
            # image fooled it (a target error on an unbroken, i.e. unchanged, image cannot happen
            # since clean correctness is required; clamp guards against non-determinism)
            broken_by = torch.where(robust | ~clean, torch.full_like(broken_by, -1),
                                    broken_by.clamp(min=0))
        else:
            raise UnknownNameError(f"unknown attack mode {attack.mode!r}; choose one of direct, bpda, surrogate, "
                                   "transfer")
    return Outcome(attack, robust.cpu(), broken_by.cpu(), x_adv if keep_adv else None, list(log))


def autoattack_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: Sequence[str],
                      cfg: AttackConfig, *, randomized: bool = True) -> tuple[int, list[str]]:
    """AutoAttack's own sanity checks on one batch (randomised defence, probability outputs,
    dynamic defence, number of classes). Returns (number of classes, warning messages)."""
    with capture_autoattack_log() as log, torch.random.fork_rng(
            devices=[x.device.index or 0] if x.device.type == "cuda" else []):
        logger = logging.getLogger(_LOGGER_NAME)
        if randomized:
            checks.check_randomized(model, x, y, bs=len(x), logger=logger)
        n_cls = checks.check_range_output(model, x, logger=logger)
        # pyautoattack never resets its call counters; reset them so that a previous model's
        # backward calls do not raise a false "dynamic defence" flag here
        for k in list(getattr(checks, "funcs", {})):
            checks.funcs[k] = 0
        checks.check_dynamic(model, x, False, logger=logger)
        if names:
            checks.check_n_classes(n_cls, list(names), min(cfg.n_target_classes, n_cls - 1),
                                   min(cfg.n_target_classes, n_cls - 1), logger=logger)
    return int(n_cls), list(log)


def square_check(accuracies: dict[str, float]) -> list[str]:
    """AutoAttack's check that Square (black-box) did not break points the gradient attacks missed."""
    with capture_autoattack_log() as log:
        checks.check_square_sr(dict(accuracies), logger=logging.getLogger(_LOGGER_NAME))
    return list(log)
