"""The attack registry: one class per attack, registered by name, the single front door every layer goes through.

An attack is a subclass of :class:`AttackMethod` in one module of this package, registered with
:func:`register_attack` (the timm ``_registry`` / torchattacks pattern)::

    @register_attack
    class PGDMargin(AttackMethod):
        name = "pgd-margin"                         # the name used in attack strings ("bpda:pgd-margin", ...)
        params = {"loss": "margin", "step": 0.25}   # declared fixed parameters (enter the record key)
        summary = "PGD on the margin loss"

        @classmethod
        def cost(cls, cfg, params):                 # fwd+bwd passes per attacked image (a forward = 1/3)
            return float(cfg.n_iter)

        def perturb(self, x, y):                    # x_adv, same shape, in [0, 1], within cfg.eps of x
            ...

That is all: :func:`msparse.attacks.base.parse_attack` accepts the name (and ``name[k=v,...]`` overrides of the
declared parameters), :func:`msparse.attacks.autoattack.run_attack` runs it directly, through BPDA, the surrogate
backward or transfer, the record key gets ``{name: {resolved params}}`` when it declares any
(:func:`msparse.attacks.base.attack_params`), :func:`msparse.experiments.plan.passes` prices it from
:meth:`AttackMethod.cost`, and ``tests/test_attack_registry.py`` runs the contract tests on it.

The built-in attacks live one per module of :mod:`msparse.attacks` (``apgd_ce``, ``apgd_dlr``, ``apgd_t``,
``fab_t``, ``square``, ``gradest``, ...): :func:`get_attack` and :func:`list_attacks` import every public module of
the package once (so a new file is found without being listed anywhere); a module must therefore import without
any optional library it uses (import that inside :meth:`AttackMethod.perturb`). Attacks defined elsewhere register
when their module is imported.
"""
from __future__ import annotations

import importlib
import math
import pkgutil
import re
from typing import TYPE_CHECKING, Callable, ClassVar, Mapping

import torch

from ..errors import InputError, InputTypeError, UnknownNameError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["AttackMethod", "register_attack", "unregister_attack", "get_attack", "list_attacks", "resolve_params",
           "format_value", "add_name_check"]

_REGISTRY: dict[str, type["AttackMethod"]] = {}
#: callables ``name -> None`` that raise for a name an attack cannot take (:func:`add_name_check`)
_NAME_CHECKS: list[Callable[[str], None]] = []
_LOADED = False
#: modules of this package that hold no attack (never imported by the discovery)
_NOT_ATTACKS = frozenset({"autoattack", "base", "binarization", "diagnostics", "indicators", "pgd", "registry",
                          "surrogate"})
_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")
_NORMS = ("Linf", "L2", "L1")
_PARAM_TYPES = (bool, int, float, str)


class AttackMethod:
    """One attack: what it is (class attributes) and how it perturbs a batch (:meth:`perturb`).

    Class attributes: ``name`` (registry name used in attack strings), ``needs_grad`` (False: gradient-free, so
    ``bpda:``/``surrogate:`` refuse it), ``params`` (declared fixed parameters with their defaults; non-empty
    ones enter the record key, any other parameter is an :class:`~msparse.errors.InputError`), ``norms`` (the
    threat models it implements), ``library`` (which implementation computes the perturbation), ``summary``,
    ``loss_label`` (the loss it maximises, a label).

    An instance is built per model and budget; on an instance ``self.params`` is the *resolved* mapping (the
    declared defaults updated with the overrides), ``self.model``, ``self.cfg``, ``self.device``,
    ``self.n_classes`` are what it was built with.
    """
    name: ClassVar[str]
    needs_grad: ClassVar[bool] = True
    params: ClassVar[Mapping[str, object]] = {}
    norms: ClassVar[tuple[str, ...]] = ("Linf", "L2")
    library: ClassVar[str] = "pyautoattack"
    summary: ClassVar[str] = ""
    #: the loss it maximises, as the evidence pooling labels runs (:data:`msparse.evaluation.evidence.LOSSES`);
    #: empty: the attack's name
    loss_label: ClassVar[str] = ""

    @classmethod
    def cost(cls, cfg: "AttackConfig", params: Mapping) -> float:
        """Forward+backward passes per *attacked* image (a forward alone counts 1/3), for
        :func:`msparse.experiments.plan.passes`. Default: ``cfg.n_iter`` (one gradient step per iteration)."""
        return float(cfg.n_iter)

    @classmethod
    def loss_of(cls, params: Mapping) -> str:
        """The loss a run with these (resolved) parameters maximises, as evidence pooling counts runs: an attack
        whose ``params`` declare a ``loss`` is labelled ``"<loss> (<name>)"``, else :attr:`loss_label` or the name."""
        if "loss" in cls.params:
            return f"{params.get('loss', cls.params['loss'])} ({cls.name})"
        return cls.loss_label or cls.name

    @classmethod
    def check_norm(cls, cfg: "AttackConfig") -> None:
        """Raise :class:`~msparse.errors.InputError` unless ``cfg.norm`` is one of :attr:`norms`."""
        if cfg.norm not in cls.norms:
            kinds = " or ".join({"Linf": "L∞"}.get(n, n) for n in cls.norms)
            raise InputError(f"attack {cls.name!r} is an {kinds} attack; got norm {cfg.norm!r} (use "
                             f"{' or '.join(cls.norms)})")

    def __init__(self, model: "nn.Module", cfg: "AttackConfig", *, device, n_classes: int | None = None,
                 params: Mapping | None = None):
        type(self).check_norm(cfg)
        self.model = model
        self.cfg = cfg
        self.device = torch.device(device)
        self.n_classes = None if n_classes is None else int(n_classes)
        self.params = resolve_params(type(self), params)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial images for x [N, C, H, W] in [0, 1], labels y [N]: :meth:`perturb` on ``self.device``
        inside a forked RNG (the caller's global RNG state is left untouched)."""
        type(self).check_norm(self.cfg)
        x, y = x.to(self.device), y.to(self.device)
        fork = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork):
            adv = self.perturb(x, y)
        if adv.shape != x.shape:
            raise InputError(f"attack {self.name!r} returned shape {tuple(adv.shape)} for images of shape "
                             f"{tuple(x.shape)}; perturb must return one image per input")
        return adv

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x_adv (same shape as x, in [0, 1], within ``cfg.eps`` of x in ``cfg.norm``). Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement perturb(x, y)")


def _check_value(cls_name: str, key: str, value) -> None:
    if not isinstance(value, _PARAM_TYPES) or (isinstance(value, float) and not math.isfinite(value)):
        raise InputTypeError(f"attack {cls_name!r}: declared parameter {key!r} = {value!r} must be a bool, int, finite "
                             "float or str (the record key stores it as JSON)")


def register_attack(cls: type[AttackMethod]) -> type[AttackMethod]:
    """Class decorator: add ``cls`` to the registry under ``cls.name``. A name already registered, a name that is
    not lower-case ``[a-z][a-z0-9_.-]*`` or that a rule of :func:`add_name_check` refuses (a sequence, shorthand
    or mode of :mod:`msparse.attacks.base`), parameter values other than bool/int/float/str and unknown norms are
    errors."""
    if not (isinstance(cls, type) and issubclass(cls, AttackMethod)):
        raise InputTypeError(f"register_attack takes an AttackMethod subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"{cls.__name__}.name must be a lower-case name matching [a-z][a-z0-9_.-]*, got {name!r}")
    for check in _NAME_CHECKS:
        check(name)
    if name in _REGISTRY:
        raise InputError(f"attack {name!r} is already registered (by {_REGISTRY[name].__module__}."
                         f"{_REGISTRY[name].__qualname__}); choose another name")
    for k, v in dict(cls.params).items():
        if not isinstance(k, str) or not re.match(r"^[a-z_][a-z0-9_]*$", k):
            raise InputError(f"attack {name!r}: parameter names must be lower-case identifiers, got {k!r}")
        _check_value(name, k, v)
        if isinstance(v, str) and re.search(r"[\s,\[\]=:]", v):
            raise InputError(f"attack {name!r}: the default of {k!r} ({v!r}) cannot hold spaces or any of ,[]=:")
    bad = [n for n in cls.norms if n not in _NORMS]
    if not cls.norms or bad:
        raise InputError(f"attack {name!r}: norms must be a non-empty subset of {_NORMS}, got {cls.norms!r}")
    _REGISTRY[name] = cls
    return cls


def add_name_check(check: Callable[[str], None]) -> None:
    """Add a rule on attack names: ``check(name)`` raises for a name no attack may take. It runs on every name
    already registered and on every later :func:`register_attack` (:mod:`msparse.attacks.base` adds its sequence,
    shorthand and mode names and the fields of the record key's attack entry; the names' layer sits above this
    one, so it hands the rule down instead of this module importing it)."""
    for name in list(_REGISTRY):
        check(name)
    _NAME_CHECKS.append(check)


def unregister_attack(name: str) -> None:
    """Remove ``name`` from the registry (tests and notebooks that register a throw-away attack)."""
    if name not in _REGISTRY:
        raise UnknownNameError(f"attack {name!r} is not registered; registered: {', '.join(list_attacks())}")
    del _REGISTRY[name]


def _load_builtins() -> None:
    """Import every public module of :mod:`msparse.attacks` once, so that each registers its attack(s)."""
    global _LOADED
    if _LOADED:
        return
    from . import __path__ as pkg_path

    for mod in sorted(m.name for m in pkgutil.iter_modules(pkg_path)):
        if mod.startswith("_") or mod in _NOT_ATTACKS:
            continue
        importlib.import_module(f"{__package__}.{mod}")   # a module that fails to import fails every call
    _LOADED = True


def get_attack(name: str) -> type[AttackMethod]:
    """The registered class of attack ``name``; :class:`~msparse.errors.UnknownNameError` listing the known names."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownNameError(f"unknown attack {name!r}; registered attacks: {', '.join(list_attacks())}") from None


def list_attacks() -> list[str]:
    """The registered attack names, in registration order (the built-ins by module name)."""
    _load_builtins()
    return list(_REGISTRY)


def format_value(value) -> str:
    """A parameter value as it appears in a canonical attack name (``true``/``false``, ``repr`` of numbers)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _coerce(cls: type[AttackMethod], key: str, value, default):
    """``value`` (a string from an attack name, or a Python value) converted to the type of ``default``."""
    kind = type(default)
    if isinstance(value, str) and kind is not str:
        s = value.strip().lower()
        try:
            if kind is bool:
                if s not in ("true", "false", "1", "0"):
                    raise ValueError(s)
                return s in ("true", "1")
            if kind is int:
                return int(s)
            out = float(s)
            if not math.isfinite(out):
                raise ValueError(s)
            return out
        except ValueError:
            article = "an" if kind is int else "a"
            raise InputError(f"attack {cls.name!r}: parameter {key}={value!r} is not {article} {kind.__name__} "
                             f"(default {format_value(default)})") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        raise InputTypeError(f"attack {cls.name!r}: parameter {key}={value!r} must be a {kind.__name__} "
                             f"(default {format_value(default)})")
    if isinstance(value, str) and re.search(r"[\s,\[\]=:]", value):
        raise InputError(f"attack {cls.name!r}: parameter {key}={value!r} cannot hold spaces or any of ,[]=:")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"attack {cls.name!r}: parameter {key}={value!r} must be finite")
    return value


def resolve_params(cls: type[AttackMethod], overrides: Mapping | None = None) -> dict:
    """The declared parameters of ``cls`` updated with ``overrides`` (each converted to its default's type).
    A parameter ``cls`` does not declare is an :class:`~msparse.errors.InputError` naming the declared ones."""
    out = dict(cls.params)
    for k, v in dict(overrides or {}).items():
        if k not in out:
            declared = ", ".join(out) if out else "none"
            raise InputError(f"attack {cls.name!r} has no parameter {k!r}; declared parameters: {declared}")
        out[k] = _coerce(cls, k, v, cls.params[k])
    return out
