"""Attack names: what ``attack="..."`` means everywhere (evaluate, sweep, the CLI, the book).

Attack names (:func:`parse_attack`)::

    none          clean accuracy only
    apgd-ce       APGD with CE loss (paper Table 1; 100 iterations, 1 restart)
    apgd          APGD-CE then APGD-DLR (paper appendix tables)
    apgd-dlr, apgd-t, fab-t, square   single AutoAttack components
    apgd-ce+t     APGD-CE then APGD-T (RobustBench's "external" attack set)
    aa            standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square
    gradest       gradient estimation on the margin loss (antithetic Gaussian sampling, sign steps;
                  :mod:`msparse.attacks.gradest`; gradient-free, so only the direct mode)
    bpda:<name>   <name> with every MeanSparse switched to identity backward (straight-through)
    surrogate:<name>  <name> through the smooth surrogate backward of the band, once per temperature
                  (:mod:`msparse.attacks.surrogate`)
    transfer:<name>  <name> crafted on the base model (all alpha = 0), evaluated on the model
    worst:<a>,<b>,...  per-example worst case over several of the above
    bpda = bpda:apgd-ce+t (RobustBench's adaptive evaluation), transfer = transfer:apgd,
    worst = worst:apgd,bpda,transfer

A name parses into :class:`Attack` components (one per ``worst:`` part); :class:`AttackConfig` is the threat
model and budget they run with (:mod:`msparse.attacks.autoattack` runs them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import InputError, UnknownNameError

__all__ = ["PRESETS", "MODES", "SHORTHANDS", "Attack", "AttackConfig", "parse_attack", "canonical_name",
           "attack_params", "GRADIENT_FREE"]

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
    "gradest": ("gradest",),
}
MODES = ("direct", "bpda", "surrogate", "transfer")
#: presets that use no gradient of the attacked model (a backward mode means nothing for them)
GRADIENT_FREE = ("square", "gradest")
SHORTHANDS = {
    "bpda": "bpda:apgd-ce+t",
    "transfer": "transfer:apgd",
    "worst": "worst:apgd,bpda,transfer",
}


@dataclass(frozen=True)
class Attack:
    """One attack component: an AutoAttack preset run through a gradient path.

    mode: "direct" (the model as it is), "bpda" (MeanSparse backward = identity while crafting),
    "surrogate" (MeanSparse backward = the sigmoid relaxation of the band, annealed over temperatures),
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
    return ", ".join(list(PRESETS) + list(SHORTHANDS) + ["bpda:<preset>", "surrogate:<preset>",
                                                         "transfer:<preset>", "worst:<a>,<b>,..."])


def parse_attack(spec: str) -> list[Attack]:
    """Attack name -> list of components (more than one only for ``worst:...``).

    Raises :class:`~msparse.errors.UnknownNameError` (a ``ValueError``) with the list of valid names for
    anything unknown, :class:`~msparse.errors.InputError` for a malformed ``worst:`` list.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"attack must be a non-empty string; choose from: {_choices()}")
    s = spec.strip().lower()
    s = SHORTHANDS.get(s, s)
    if s.startswith("worst:"):
        parts = [p.strip() for p in s[len("worst:"):].split(",") if p.strip()]
        if not parts:
            raise InputError("attack 'worst:' needs at least one component, e.g. worst:apgd,bpda")
        out: list[Attack] = []
        for p in parts:
            if p.startswith("worst"):
                raise InputError("attack 'worst:' cannot be nested")
            for c in parse_attack(p):
                if c not in out:
                    out.append(c)
        return out
    mode, preset = "direct", s
    if ":" in s:
        mode, preset = s.split(":", 1)
        if mode not in MODES[1:]:
            raise UnknownNameError(f"unknown attack {spec!r}: prefix {mode!r} is not one of bpda, "
                                   f"surrogate, transfer, worst; choose from: {_choices()}")
    if preset not in PRESETS:
        raise UnknownNameError(f"unknown attack {spec!r}; choose from: {_choices()}")
    if preset == "none" and mode != "direct":
        raise InputError(f"attack {spec!r} makes no sense: 'none' has nothing to craft")
    if mode in ("bpda", "surrogate") and preset in GRADIENT_FREE:
        raise InputError(f"attack {spec!r} makes no sense: {preset!r} uses no gradient, so a backward mode "
                         f"changes nothing; use {preset!r}")
    return [Attack(preset, mode)]


def attack_params(components: Sequence[Attack]) -> dict:
    """The fixed parameters of the components that have any (surrogate temperatures, gradient-estimation
    sampling), for the record key: empty for AutoAttack's own attacks, so their keys never change."""
    out: dict = {}
    if any(c.mode == "surrogate" for c in components):
        from .surrogate import TAUS
        out["surrogate_taus"] = list(TAUS)
    if any("gradest" in c.attacks for c in components):
        from .gradest import PARAMS
        out["gradest"] = dict(PARAMS)
    return out


def direct_equivalent(components: Sequence[Attack]) -> list[Attack]:
    """The components as the direct attacks they compute on a model with no active MeanSparse site.

    With every α = 0, BPDA (identity backward at the sites) is the direct gradient, and a transfer attack
    crafted on the α = 0 base is crafted on the model itself: ``bpda:apgd-ce+t`` → ``apgd-ce+t``,
    ``transfer:apgd`` → ``apgd``, ``worst:apgd,bpda:apgd`` → ``apgd``. Order is kept, duplicates dropped.
    """
    out: list[Attack] = []
    for c in components:
        d = Attack(c.preset, "direct")
        if d not in out:
            out.append(d)
    return out


def canonical_name(components: Sequence[Attack]) -> str:
    """The canonical attack name of a list of components (inverse of :func:`parse_attack`)."""
    if len(components) == 1:
        return components[0].name
    return "worst:" + ",".join(c.name for c in components)
