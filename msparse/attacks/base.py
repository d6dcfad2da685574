"""Attack names: what ``attack="..."`` means everywhere (evaluate, sweep, the CLI, the book).

Attack names (:func:`parse_attack`)::

    none          clean accuracy only
    <attack>      any registered attack (:func:`msparse.attacks.registry.list_attacks`): apgd-ce (APGD with CE
                  loss, paper Table 1; 100 iterations, 1 restart), apgd-dlr, apgd-t, fab-t, square (AutoAttack's
                  components), gradest (gradient estimation on the margin loss, :mod:`msparse.attacks.gradest`), ...
    <attack>[k=v,...]  the attack with some of its declared parameters overridden (``gradest[pairs=64]``)
    apgd          APGD-CE then APGD-DLR (paper appendix tables)
    apgd-ce+t     APGD-CE then APGD-T (RobustBench's "external" attack set)
    aa            standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square
    bpda:<name>   <name> with every MeanSparse switched to identity backward (straight-through)
    surrogate:<name>  <name> through the smooth surrogate backward of the band, once per temperature
                  (:mod:`msparse.attacks.surrogate`)
    transfer:<name>  <name> crafted on the base model (all alpha = 0), evaluated on the model
    worst:<a>,<b>,...  per-example worst case over several of the above
    bpda = bpda:apgd-ce+t (RobustBench's adaptive evaluation), transfer = transfer:apgd,
    worst = worst:apgd,bpda,transfer

The attacks themselves are classes of the registry (:mod:`msparse.attacks.registry`, one module each); the
multi-attack names are data (:data:`SEQUENCES`, registry names run in order). A name parses into :class:`Attack`
components (one per ``worst:`` part); :class:`AttackConfig` is the threat model and budget they run with
(:func:`msparse.attacks.autoattack.run_attack` runs them); :func:`attack_params` is what of them enters the record
key besides the name and the budget. ``bpda:``/``surrogate:`` refuse a name none of whose attacks uses a gradient.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Sequence

from ..errors import InputError, UnknownNameError
from .registry import add_name_check, format_value, get_attack, list_attacks, resolve_params

__all__ = ["SEQUENCES", "MODES", "SHORTHANDS", "Attack", "AttackConfig", "parse_attack", "canonical_name",
           "attack_params", "direct_equivalent", "sequence", "needs_grad", "attack_names"]

#: multi-attack names -> registry attack names, run in this order (each attack only on the points still robust);
#: every registered attack is also a name of its own (a sequence of one).
SEQUENCES: dict[str, tuple[str, ...]] = {
    "none": (),
    "apgd": ("apgd-ce", "apgd-dlr"),
    "apgd-ce+t": ("apgd-ce", "apgd-t"),
    "aa": ("apgd-ce", "apgd-t", "fab-t", "square"),
}
MODES = ("direct", "bpda", "surrogate", "transfer")
SHORTHANDS = {
    "bpda": "bpda:apgd-ce+t",
    "transfer": "transfer:apgd",
    "worst": "worst:apgd,bpda,transfer",
}


def sequence(preset: str) -> tuple[str, ...]:
    """The registry attack names a preset (a :data:`SEQUENCES` name or a registered attack) runs, in order."""
    if preset in SEQUENCES:
        return SEQUENCES[preset]
    get_attack(preset)
    return (preset,)


def needs_grad(preset: str) -> bool:
    """Whether any attack of ``preset`` uses a gradient of the attacked model (a backward mode means something)."""
    return any(get_attack(a).needs_grad for a in sequence(preset))


@dataclass(frozen=True)
class Attack:
    """One attack component: a preset (a :data:`SEQUENCES` name or a registered attack) run through a gradient path.

    mode: "direct" (the model as it is), "bpda" (MeanSparse backward = identity while crafting),
    "surrogate" (MeanSparse backward = the sigmoid relaxation of the band, annealed over temperatures),
    "transfer" (crafted on the base model, i.e. every alpha = 0, or on an explicit source model).
    params: overrides of the attack's declared parameters, ``((key, value), ...)`` sorted by key, values that
    differ from the defaults only (a registered attack only; :func:`parse_attack` builds them canonical).
    """
    preset: str
    mode: str = "direct"
    params: tuple = ()

    @property
    def name(self) -> str:
        base = self.preset
        if self.params:
            base += "[" + ",".join(f"{k}={format_value(v)}" for k, v in self.params) + "]"
        return base if self.mode == "direct" else f"{self.mode}:{base}"

    @property
    def attacks(self) -> tuple[str, ...]:
        """The registry attack names this component runs, in order."""
        return sequence(self.preset)

    @property
    def overrides(self) -> dict:
        """The parameter overrides of the component's (single) attack, ``{}`` when none."""
        return dict(self.params)

    def params_of(self, attack: str) -> dict:
        """The overrides that apply to ``attack`` (one of :attr:`attacks`): the component's own for its single
        registered attack, none for the attacks of a sequence."""
        return self.overrides if attack == self.preset else {}


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


def _check_attack_name(name: str) -> None:
    """The rule this module gives the registry: no attack takes a sequence, shorthand or mode name (the name
    would be shadowed) or a field of the record key's attack entry (its parameters would collide with it)."""
    if name in SEQUENCES or name in SHORTHANDS or name in MODES:
        raise InputError(f"attack name {name!r} is already a sequence, shorthand or mode of msparse.attacks.base; "
                         "choose another name")
    if name in {"name", "surrogate_taus"} | {f.name for f in fields(AttackConfig)}:
        raise InputError(f"attack name {name!r} is a field of the record key's attack entry; choose another name")


add_name_check(_check_attack_name)


def attack_names() -> list[str]:
    """Every plain attack name :func:`parse_attack` accepts: the sequences, the registered attacks, the shorthands
    (the command line lists these; each also works behind ``bpda:``/``surrogate:``/``transfer:`` and in
    ``worst:`` lists)."""
    return list(SEQUENCES) + [a for a in list_attacks() if a not in SEQUENCES] + list(SHORTHANDS)


def _choices() -> str:
    return ", ".join(attack_names() + ["<attack>[k=v,...]", "bpda:<name>", "surrogate:<name>", "transfer:<name>",
                                       "worst:<a>,<b>,..."])


def _split_top(s: str) -> list[str]:
    """``s`` split on the commas outside brackets (``worst:a[k=1,j=2],b`` -> ``a[k=1,j=2]``, ``b``)."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


_WITH_PARAMS = re.compile(r"^([^\[\]]+)\[(.*)\]$")


def _parse_params(spec: str, preset: str, body: str) -> tuple:
    """``k=v,...`` of ``preset[k=v,...]`` -> the canonical overrides (sorted, defaults dropped)."""
    if preset in SEQUENCES:
        raise InputError(f"attack {spec!r}: only a registered attack takes parameters; {preset!r} is a sequence of "
                         f"{', '.join(SEQUENCES[preset]) or 'nothing'} (give each its own name in worst:...)")
    cls = get_attack(preset)
    raw: dict = {}
    for item in (p.strip() for p in body.split(",")):
        if not item:
            continue
        k, eq, v = item.partition("=")
        k, v = k.strip(), v.strip()
        if not eq or not k or not v:
            raise InputError(f"attack {spec!r}: parameters are written k=v (e.g. {preset}[k=v,...]), got {item!r}")
        if k in raw:
            raise InputError(f"attack {spec!r}: parameter {k!r} is given twice")
        raw[k] = v
    resolved = resolve_params(cls, raw)
    return tuple(sorted((k, v) for k, v in resolved.items() if k in raw and v != cls.params[k]))


def parse_attack(spec: str) -> list[Attack]:
    """Attack name -> list of components (more than one only for ``worst:...``).

    Raises :class:`~msparse.errors.UnknownNameError` (a ``ValueError``) with the list of valid names for
    anything unknown, :class:`~msparse.errors.InputError` for a malformed ``worst:`` list or parameter list (an
    undeclared parameter names the declared ones).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"attack must be a non-empty string; choose from: {_choices()}")
    s = spec.strip().lower()
    s = SHORTHANDS.get(s, s)
    if s.startswith("worst:"):
        parts = [p.strip() for p in _split_top(s[len("worst:"):]) if p.strip()]
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
    if ":" in s.split("[", 1)[0]:
        mode, preset = s.split(":", 1)
        if mode not in MODES[1:]:
            raise UnknownNameError(f"unknown attack {spec!r}: prefix {mode!r} is not one of bpda, "
                                   f"surrogate, transfer, worst; choose from: {_choices()}")
    params: tuple = ()
    m = _WITH_PARAMS.match(preset)
    if m:
        preset = m.group(1).strip()
    if preset not in SEQUENCES and preset not in list_attacks():
        raise UnknownNameError(f"unknown attack {spec!r}; choose from: {_choices()}")
    if m:
        params = _parse_params(spec, preset, m.group(2))
    elif "[" in preset or "]" in preset:
        raise InputError(f"attack {spec!r}: parameters are written {preset.split('[')[0]}[k=v,...]")
    if preset == "none" and mode != "direct":
        raise InputError(f"attack {spec!r} makes no sense: 'none' has nothing to craft")
    if mode in ("bpda", "surrogate") and not needs_grad(preset):
        raise InputError(f"attack {spec!r} makes no sense: {preset!r} uses no gradient, so a backward mode "
                         f"changes nothing; use {Attack(preset, 'direct', params).name!r}")
    return [Attack(preset, mode, params)]


def attack_params(components: Sequence[Attack]) -> dict:
    """The fixed parameters of the components that have any, for the record key: ``surrogate_taus`` for a
    ``surrogate:`` component, and ``{attack: {resolved declared parameters}}`` for every attack that declares
    parameters (``gradest``); a list of them when components run one attack with different overrides. Empty for
    AutoAttack's own attacks, so their keys never change."""
    out: dict = {}
    if any(c.mode == "surrogate" for c in components):
        from .surrogate import TAUS
        out["surrogate_taus"] = list(TAUS)
    seen: dict[str, list[dict]] = {}
    for c in components:
        for a in c.attacks:
            cls = get_attack(a)
            if not cls.params:
                continue
            resolved = resolve_params(cls, c.params_of(a))
            if resolved not in seen.setdefault(a, []):
                seen[a].append(resolved)
    for a, values in seen.items():
        out[a] = values[0] if len(values) == 1 else values
    return out


def direct_equivalent(components: Sequence[Attack]) -> list[Attack]:
    """The components as the direct attacks they compute on a model with no active MeanSparse site.

    With every α = 0, BPDA (identity backward at the sites) is the direct gradient, and a transfer attack
    crafted on the α = 0 base is crafted on the model itself: ``bpda:apgd-ce+t`` → ``apgd-ce+t``,
    ``transfer:apgd`` → ``apgd``, ``worst:apgd,bpda:apgd`` → ``apgd``. Order is kept, duplicates dropped.
    """
    out: list[Attack] = []
    for c in components:
        d = Attack(c.preset, "direct", c.params)
        if d not in out:
            out.append(d)
    return out


def canonical_name(components: Sequence[Attack]) -> str:
    """The canonical attack name of a list of components (inverse of :func:`parse_attack`)."""
    if len(components) == 1:
        return components[0].name
    return "worst:" + ",".join(c.name for c in components)
