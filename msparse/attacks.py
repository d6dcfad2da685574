"""Attacks: a thin adapter over the AutoAttack package (``pyautoattack``), plus BPDA and transfer.

Every perturbation is computed by AutoAttack's own attack objects (APGD-CE, APGD-DLR, APGD-T, FAB-T,
Square), configured exactly as ``AutoAttack(version='custom'|'standard')`` configures them. This module
only orchestrates them the way ``AutoAttack.run_standard_evaluation`` does (attack the points that are
still robust, one attack after the other, a point is robust only if it survives all of them), so that
per-example, per-attack outcomes are available and AutoAttack's sanity checks run once per evaluation.

Attack names (``parse_attack``)::

    none          clean accuracy only
    apgd-ce       APGD with CE loss (paper Table 1; 100 iterations, 1 restart)
    apgd          APGD-CE then APGD-DLR (paper appendix tables)
    apgd-dlr, apgd-t, fab-t, square   single AutoAttack components
    apgd-ce+t     APGD-CE then APGD-T (RobustBench's "external" attack set)
    aa            standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square
    bpda:<name>   <name> with every MeanSparse switched to identity backward (straight-through)
    transfer:<name>  <name> crafted on the base model (all alpha = 0), evaluated on the model
    worst:<a>,<b>,...  per-example worst case over several of the above
    bpda = bpda:apgd-ce+t (RobustBench's adaptive evaluation), transfer = transfer:apgd,
    worst = worst:apgd,bpda,transfer
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "PRESETS", "Attack", "AttackConfig", "parse_attack", "make_autoattack", "run_attack",
    "backward_mode", "base_model", "input_gradient", "zero_gradient_fraction", "autoattack_checks",
    "capture_autoattack_log", "meansparse_modules",
]

#: preset name -> AutoAttack attack names, run in this order.
PRESETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "apgd-ce": ("apgd-ce",),
    "apgd-dlr": ("apgd-dlr",),
    "apgd": ("apgd-ce", "apgd-dlr"),
    "apgd-t": ("apgd-t",),
    "apgd-ce+t": ("apgd-ce", "apgd-t"),
    "fab-t": ("fab-t",),
    "square": ("square",),
    "aa": ("apgd-ce", "apgd-t", "fab-t", "square"),
}
MODES = ("direct", "bpda", "transfer")
SHORTHANDS = {
    "bpda": "bpda:apgd-ce+t",
    "transfer": "transfer:apgd",
    "worst": "worst:apgd,bpda,transfer",
}
_LOGGER_NAME = "auto-attack"


@dataclass(frozen=True)
class Attack:
    """One attack component: an AutoAttack preset run through a gradient path.

    mode: "direct" (the model as it is), "bpda" (MeanSparse backward = identity while crafting),
    "transfer" (crafted on the base model, i.e. every alpha = 0, or on an explicit source model).
    """
    preset: str
    mode: str = "direct"

    @property
    def name(self) -> str:
        return self.preset if self.mode == "direct" else f"{self.mode}:{self.preset}"

    @property
    def attacks(self) -> tuple[str, ...]:
        return PRESETS[self.preset]


@dataclass(frozen=True)
class AttackConfig:
    """Threat model and attack budget (AutoAttack defaults: 100 iterations, 1 restart, 5000 queries)."""
    eps: float
    norm: str = "Linf"
    seed: int = 0
    n_iter: int = 100
    n_restarts: int = 1
    n_queries: int = 5000
    n_target_classes: int = 9

    def as_dict(self) -> dict:
        return {"eps": float(self.eps), "norm": self.norm, "seed": int(self.seed),
                "n_iter": int(self.n_iter), "n_restarts": int(self.n_restarts),
                "n_queries": int(self.n_queries), "n_target_classes": int(self.n_target_classes)}


def _choices() -> str:
    return ", ".join(list(PRESETS) + list(SHORTHANDS) + ["bpda:<preset>", "transfer:<preset>",
                                                         "worst:<a>,<b>,..."])


def parse_attack(spec: str) -> list[Attack]:
    """Attack name -> list of components (more than one only for ``worst:...``).

    Raises ValueError with the list of valid names for anything unknown.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"attack must be a non-empty string; choose from: {_choices()}")
    s = spec.strip().lower()
    s = SHORTHANDS.get(s, s)
    if s.startswith("worst:"):
        parts = [p.strip() for p in s[len("worst:"):].split(",") if p.strip()]
        if not parts:
            raise ValueError("attack 'worst:' needs at least one component, e.g. worst:apgd,bpda")
        out: list[Attack] = []
        for p in parts:
            if p.startswith("worst"):
                raise ValueError("attack 'worst:' cannot be nested")
            for c in parse_attack(p):
                if c not in out:
                    out.append(c)
        return out
    mode, preset = "direct", s
    if ":" in s:
        mode, preset = s.split(":", 1)
        if mode not in ("bpda", "transfer"):
            raise ValueError(f"unknown attack {spec!r}: prefix {mode!r} is not one of bpda, "
                             f"transfer, worst; choose from: {_choices()}")
    if preset not in PRESETS:
        raise ValueError(f"unknown attack {spec!r}; choose from: {_choices()}")
    if preset == "none" and mode != "direct":
        raise ValueError(f"attack {spec!r} makes no sense: 'none' has nothing to craft")
    return [Attack(preset, mode)]


def canonical_name(components: Sequence[Attack]) -> str:
    """The canonical attack name of a list of components (inverse of :func:`parse_attack`)."""
    if len(components) == 1:
        return components[0].name
    return "worst:" + ",".join(c.name for c in components)


# --------------------------------------------------------------------------------------------------
# MeanSparse helpers
# --------------------------------------------------------------------------------------------------

def meansparse_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every MeanSparse in ``model``, in site (forward) order."""
    from .operator import MeanSparse
    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, MeanSparse)]
    return sorted(mods, key=lambda nm: nm[1].site.index if nm[1].site is not None else math.inf)


@contextlib.contextmanager
def backward_mode(model: nn.Module, mode: str = "identity") -> Iterator[nn.Module]:
    """Temporarily set every MeanSparse backward to ``mode`` ("exact" or "identity"); restores each
    module's own mode afterwards, also when the body raises."""
    if mode not in ("exact", "identity"):
        raise ValueError(f"backward mode must be 'exact' or 'identity', got {mode!r}")
    mods = [m for _, m in meansparse_modules(model)]
    saved = [(m, m.backward) for m in mods]
    try:
        for m in mods:
            m.set_backward(mode)
        yield model
    finally:
        for m, b in saved:
            m.set_backward(b)


@contextlib.contextmanager
def base_model(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily set every MeanSparse alpha to 0 (the exact base model); restores each alpha after,
    also when the body raises."""
    mods = [m for _, m in meansparse_modules(model)]
    saved = [(m, m.alpha.detach().clone()) for m in mods]
    try:
        for m in mods:
            m.set_alpha(0.0)
        yield model
    finally:
        for m, a in saved:
            m.set_alpha(float(a))


# --------------------------------------------------------------------------------------------------
# AutoAttack plumbing
# --------------------------------------------------------------------------------------------------

def _import_autoattack():
    try:
        import pyautoattack
        from pyautoattack import checks
    except ImportError as e:   # pragma: no cover - dependency missing
        raise ImportError("msparse needs the AutoAttack package: pip install pyautoattack") from e
    return pyautoattack.AutoAttack, checks


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


def _set_apgd_iters(apgd, n_iter: int) -> None:
    # mirrors APGDAttack.__init__'s derived checkpoints
    apgd.n_iter = n_iter
    apgd.n_iter_orig = n_iter
    apgd.n_iter_2 = max(int(0.22 * n_iter), 1)
    apgd.n_iter_min = max(int(0.06 * n_iter), 1)
    apgd.size_decr = max(int(0.03 * n_iter), 1)


def make_autoattack(model: nn.Module, attack: Attack, cfg: AttackConfig, device,
                    n_classes: int | None = None):
    """An ``AutoAttack`` configured for one component (standard version for ``aa``, custom otherwise).

    Custom presets use ``cfg.n_restarts`` restarts for APGD-CE/DLR and one restart for APGD-T/FAB-T,
    as the standard version does. ``n_iter``/``n_queries`` override the AutoAttack defaults when
    they differ from 100/5000 (used for quick tests).
    """
    AutoAttack, _ = _import_autoattack()
    kw = dict(device=str(device), eps=float(cfg.eps), norm=cfg.norm, seed=int(cfg.seed))
    if attack.preset == "aa":
        aa = AutoAttack(model, version="standard", **kw)
        # standard: 1 restart and 9 target classes; other values are recorded in the key
        aa.apgd.n_restarts = int(cfg.n_restarts)
        aa.apgd_targeted.n_target_classes = int(cfg.n_target_classes)
        aa.fab.n_target_classes = int(cfg.n_target_classes)
    else:
        aa = AutoAttack(model, attacks=list(attack.attacks) or ["apgd-ce"], version="custom", **kw)
        aa.apgd.n_restarts = int(cfg.n_restarts)
        aa.apgd_targeted.n_restarts = 1
        aa.fab.n_restarts = 1
        aa.fab.n_target_classes = int(cfg.n_target_classes)
        aa.apgd_targeted.n_target_classes = int(cfg.n_target_classes)
        aa.square.n_queries = int(cfg.n_queries)
    if cfg.n_iter != 100:
        _set_apgd_iters(aa.apgd, int(cfg.n_iter))
        _set_apgd_iters(aa.apgd_targeted, int(cfg.n_iter))
        aa.fab.n_iter = int(cfg.n_iter)
    if cfg.n_queries != 5000:
        aa.square.n_queries = int(cfg.n_queries)
    if n_classes is not None:   # never ask for more target classes than exist
        aa.apgd_targeted.n_target_classes = min(aa.apgd_targeted.n_target_classes, n_classes - 1)
        aa.fab.n_target_classes = min(aa.fab.n_target_classes, n_classes - 1)
    aa.verbose = False
    return aa


def _perturb(aa, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # the same dispatch as AutoAttack.run_standard_evaluation
    if name == "apgd-ce":
        aa.apgd.loss = "ce"
        aa.apgd.seed = aa.get_seed()
        return aa.apgd.perturb(x, y)
    if name == "apgd-dlr":
        aa.apgd.loss = "dlr"
        aa.apgd.seed = aa.get_seed()
        return aa.apgd.perturb(x, y)
    if name == "apgd-t":
        aa.apgd_targeted.seed = aa.get_seed()
        return aa.apgd_targeted.perturb(x, y)
    if name == "fab":
        aa.fab.targeted = False
        aa.fab.seed = aa.get_seed()
        return aa.fab.perturb(x, y)
    if name == "fab-t":
        aa.fab.targeted = True
        aa.fab.n_restarts = 1
        aa.fab.seed = aa.get_seed()
        return aa.fab.perturb(x, y)
    if name == "square":
        aa.square.seed = aa.get_seed()
        return aa.square.perturb(x, y)
    raise ValueError(f"unknown AutoAttack attack {name!r}")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Predicted labels [N] (``logits.max(1)[1]``, exactly as AutoAttack computes them)."""
    if batch_size is None or batch_size >= len(x):
        return model(x).max(dim=1)[1]
    return torch.cat([model(x[i:i + batch_size]).max(dim=1)[1] for i in range(0, len(x), batch_size)])


def _sequence(aa, model, x, y, names, robust, batch_size):
    """Run AutoAttack attacks one after the other on the points still robust.

    Returns (robust [N] bool, broken_by [N] int (-1 = never broken), x_adv [N, ...]).
    """
    robust = robust.clone()
    broken_by = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
    x_adv = x.clone()
    for j, name in enumerate(names):
        idx = robust.nonzero().flatten()
        if idx.numel() == 0:
            break
        for s in range(0, idx.numel(), batch_size):
            bidx = idx[s:s + batch_size]
            xb, yb = x[bidx].clone(), y[bidx].clone()
            adv = _perturb(aa, name, xb, yb)
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
               keep_adv: bool = False) -> Outcome:
    """Run one component on a batch x [N, C, H, W] (in [0, 1]), y [N] on ``device``.

    ``clean`` [N] bool: clean correctness on ``model`` (computed if None). For ``transfer`` the
    adversarial images are crafted on ``source`` (default: ``model`` with every alpha = 0) and the
    point is robust iff ``model`` is clean-correct and classifies the crafted image correctly.
    The caller's global RNG state is left untouched (AutoAttack reseeds torch per attack).
    """
    device = torch.device(device) if device is not None else x.device
    x, y = x.to(device), y.to(device)
    if clean is None:
        clean = predict(model, x).eq(y)
    clean = clean.to(device)
    names = attack.attacks
    fork = [device.index or 0] if device.type == "cuda" else []
    with capture_autoattack_log() as log, torch.random.fork_rng(devices=fork):
        if attack.mode == "direct":
            aa = make_autoattack(model, attack, cfg, device, n_classes)
            robust, broken_by, x_adv = _sequence(aa, model, x, y, names, clean, batch_size)
        elif attack.mode == "bpda":
            with backward_mode(model, "identity"):
                aa = make_autoattack(model, attack, cfg, device, n_classes)
                robust, broken_by, x_adv = _sequence(aa, model, x, y, names, clean, batch_size)
        elif attack.mode == "transfer":
            ctx = base_model(model) if source is None else contextlib.nullcontext(source)
            with ctx as src:
                src_clean = predict(src, x).eq(y)
                aa = make_autoattack(src, attack, cfg, device, n_classes)
                _, broken_by, x_adv = _sequence(aa, src, x, y, names, src_clean, batch_size)
            robust = clean & predict(model, x_adv, batch_size).eq(y)
            # -1 where the target holds (or is wrong on clean images), else the source attack whose
            # image fooled it (a target error on an unbroken, i.e. unchanged, image cannot happen
            # since clean correctness is required; clamp guards against non-determinism)
            broken_by = torch.where(robust | ~clean, torch.full_like(broken_by, -1),
                                    broken_by.clamp(min=0))
        else:
            raise ValueError(f"unknown attack mode {attack.mode!r}")
    return Outcome(attack, robust.cpu(), broken_by.cpu(), x_adv if keep_adv else None, list(log))


def autoattack_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: Sequence[str],
                      cfg: AttackConfig, *, randomized: bool = True) -> tuple[int, list[str]]:
    """AutoAttack's own sanity checks on one batch (randomised defence, probability outputs,
    dynamic defence, number of classes). Returns (number of classes, warning messages)."""
    _, checks = _import_autoattack()
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
    _, checks = _import_autoattack()
    with capture_autoattack_log() as log:
        checks.check_square_sr(dict(accuracies), logger=logging.getLogger(_LOGGER_NAME))
    return list(log)


# --------------------------------------------------------------------------------------------------
# gradient diagnostics
# --------------------------------------------------------------------------------------------------

def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   loss: str = "ce") -> torch.Tensor:
    """Gradient [N, C, H, W] of the per-example loss ("ce" or "dlr") with respect to the input,
    through the model's current backward path."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if loss == "ce":
            val = F.cross_entropy(logits, y, reduction="sum")
        elif loss == "dlr":
            srt, _ = logits.sort(dim=1)
            u = torch.arange(len(x), device=x.device)
            top_other = torch.where(srt[:, -1] == logits[u, y], srt[:, -2], srt[:, -1])
            val = (-(logits[u, y] - top_other) / (srt[:, -1] - srt[:, -3] + 1e-12)).sum()
        else:
            raise ValueError(f"loss must be 'ce' or 'dlr', got {loss!r}")
        (g,) = torch.autograd.grad(val, [x])
    return g.detach()


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                           loss: str = "ce") -> float:
    """Fraction of examples whose input gradient is exactly zero (AutoAttack's zero-gradient flag,
    computed for CE as well; AutoAttack itself checks only DLR)."""
    g = input_gradient(model, x, y, loss)
    return float((g.flatten(1).abs().sum(1) == 0).float().mean().item()) if len(x) else math.nan
