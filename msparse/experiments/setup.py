"""Setting up an experiment: a model with MeanSparse at its placement, calibrated statistics, test and
training images, and the results store — cached in-process so a page (or a widget) does not redo it.

Every page of the book starts with :func:`check_params` (the notebook's papermill parameters, with a clear error
for a bad value) and :func:`setup`. Model names, and the placement a model gets by default, are those of the
models' front door :mod:`msparse.models.front` (the registry's names, ``random:<name>`` for random weights,
``*.pt`` checkpoints); :func:`load` and :func:`default_placement` here call through to it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..core.calibration import restore_stats, stats_snapshot  # noqa: F401  (re-exported: pages use them)
from ..errors import InputError
from ..models.front import RANDOM_PREFIX, bare_name

__all__ = ["RANDOM_PREFIX", "check_model_name", "check_params", "check_parameter_names", "assigned_names",
           "injected_parameters", "Setup", "setup", "try_setup", "load",
           "default_placement", "stats_snapshot", "restore_stats", "sigma_ratios", "activation_of"]


_DATA_SOURCES = ("auto", "offline", "official")


def check_count(name: str, v, what: str) -> int:
    """``v`` if it is a whole number >= 0; else :class:`~msparse.errors.InputError` naming ``name`` (``what``: what
    it counts and what 0 means) and the value given."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise InputError(f"{name} ({what}) must be a whole number >= 0, got {v!r}")
    return v


def _positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InputError(f"notebook parameter {name} must be a positive integer, got {v!r}")
    return v


def check_model_name(name: str) -> str:
    """Raise :class:`~msparse.errors.InputError` unless ``name`` is a model the registry knows for CIFAR-10 L∞
    (:func:`msparse.models.registry.model_entry`), a family checkpoint ``*.pt``, or ``random:<name>``."""
    from ..errors import InputError, ModelLoadError
    from ..models.registry import model_entry

    if not isinstance(name, str) or not name:
        raise InputError(f"notebook parameter model must be a model name, got {name!r}")
    bare = bare_name(name)
    if bare.endswith(".pt"):  # a family checkpoint with its card
        return name
    try:
        model_entry(bare, "cifar10", "Linf")
    except ModelLoadError as e:   # "unknown model ...", with close matches
        raise InputError(str(e)) from None
    except InputError as e:       # a malformed family name, e.g. an unknown activation
        raise InputError(f"unknown model {name!r}: {e}") from None
    return name


#: the first line of the cell papermill adds after a notebook's parameters cell (its Python translator's header)
INJECTED_HEADER = "# Parameters"


def assigned_names(source: str) -> set[str]:
    """The names a cell's top-level statements assign (``a = 1``, ``a: int = 1``, ``a, b = 1, 2``): what
    papermill calls a notebook's parameters when the cell is its parameters cell."""
    import ast

    names: set[str] = set()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        for target in targets:
            names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def check_parameter_names(given, declared, where: str = "this notebook") -> None:
    """Raise :class:`~msparse.errors.InputError` naming every name of ``given`` that is not in ``declared``
    (papermill only warns and runs the notebook with its defaults, a silently different experiment)."""
    import difflib

    unknown = sorted(set(given) - set(declared))
    if not unknown:
        return
    hints = [f"{u!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(u, declared, n=1))
             else repr(u) for u in unknown]
    listed = ", ".join(sorted(declared)) or "none"
    raise InputError(f"unknown notebook parameter{'s' if len(unknown) > 1 else ''} {', '.join(hints)} for {where}; "
                     f"its parameters are: {listed}")


def injected_parameters(history: list[str]) -> tuple[set[str], set[str]] | None:
    """``(declared, injected)`` parameter names from a kernel's input history (cells in execution order), or
    ``None`` when papermill injected nothing.

    papermill runs the notebook's cells in order and puts its ``injected-parameters`` cell (first line
    :data:`INJECTED_HEADER`) right after the cell tagged ``parameters``; so the cell executed just before the
    last injected one is the parameters cell (none when the injected cell came first)."""
    idx = next((i for i in range(len(history) - 1, -1, -1)
                if history[i].lstrip("\n").split("\n", 1)[0].rstrip() == INJECTED_HEADER), None)
    if idx is None:
        return None
    previous = [h for h in history[:idx] if h.strip()]
    declared = assigned_names(previous[-1]) if previous else set()
    return declared, assigned_names(history[idx])


def _check_injected() -> None:
    """In a notebook kernel run by papermill (``papermill nb.ipynb out.ipynb -p NAME VALUE``): every injected
    name must be one the parameters cell declares. Outside IPython, or without papermill, nothing to check."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None or getattr(ip, "history_manager", None) is None:
        return
    found = injected_parameters(list(ip.history_manager.input_hist_parsed))
    if found is not None:
        declared, injected = found
        check_parameter_names(injected, declared, "this notebook (injected by papermill -p)")


def check_params(**p) -> dict:
    """Validate a notebook's parameters (called in its first cell); returns them normalised.

    Raises :class:`~msparse.errors.InputError` with a clear message for a parameter name the notebook does not
    declare (when papermill injected it, see :func:`injected_parameters`), an unknown model, n ≤ 0, α < 0, an
    unknown attack, ε ≤ 0, ...
    """
    from ..attacks.base import parse_attack
    from ..core.operator import check_alpha

    _check_injected()
    out = dict(p)
    if "model" in p:
        check_model_name(p["model"])
    if "dataset" in p and p["dataset"] != "cifar10":
        raise InputError(f"notebook parameter dataset={p['dataset']!r}: the book's notebooks run on 'cifar10' "
                         "(ImageNet/CIFAR-100 models need data and checkpoints that are not available offline)")
    if "data_source" in p and p["data_source"] not in _DATA_SOURCES:
        raise InputError(f"notebook parameter data_source must be one of {_DATA_SOURCES}, got {p['data_source']!r}")
    for k in ("n_examples", "n_train", "n_iter"):
        if k in p:
            _positive_int(k, p[k])
    for k in ("alphas", "train_alphas", "alpha"):
        if k in p:
            vals = p[k] if isinstance(p[k], (list, tuple)) else [p[k]]
            if not vals:
                raise InputError(f"notebook parameter {k} must not be empty")
            try:
                out[k] = check_alpha(p[k]) if k == "alpha" else [check_alpha(a) for a in vals]
            except ValueError as e:
                raise InputError(f"notebook parameter {k}: {e}") from None
    for k in ("attack", "adaptive_attack"):
        if k in p:
            parse_attack(p[k])
    if "eps" in p:
        e = p["eps"]
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e <= 0 or e >= 1:
            raise InputError(f"notebook parameter eps must be in (0, 1) for pixels in [0, 1] (e.g. 8/255), got {e!r}")
    if "eps_grid" in p:
        if not p["eps_grid"] or any(not isinstance(e, (int, float)) or e <= 0 or e > 255 for e in p["eps_grid"]):
            raise InputError(f"notebook parameter eps_grid lists ε in units of 1/255 in (0, 255], got {p['eps_grid']!r}")
    if "device" in p:
        import torch

        d = p["device"]
        if d not in ("cpu", "auto") and not str(d).startswith("cuda"):
            raise InputError(f"notebook parameter device must be 'cpu', 'cuda[:k]' or 'auto', got {d!r}")
        if str(d).startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"device={d!r} but no CUDA device is available here; use 'cpu' or 'auto'")
    if "seed" in p and (isinstance(p["seed"], bool) or not isinstance(p["seed"], int) or p["seed"] < 0):
        raise InputError(f"notebook parameter seed must be an integer >= 0, got {p['seed']!r}")
    if "use_stored" in p and not isinstance(p["use_stored"], bool):
        raise InputError(f"notebook parameter use_stored must be True or False, got {p['use_stored']!r}")
    return out


@dataclass
class Setup:
    """A model ready for MeanSparse experiments: sparsified, calibrated, α = 0; data on the device."""

    model_name: str
    model: object
    sites: list
    placement: str
    x: object  # test images [N, 3, 32, 32]
    y: object
    x_train: object  # the statistics images (also used for "train" evaluations)
    y_train: object
    data_info: dict
    train_info: dict
    stats: dict
    device: str
    store: object  # what evaluate(store=...) gets
    card: dict = field(default_factory=dict)

    @property
    def is_random(self) -> bool:
        return self.model_name.startswith(RANDOM_PREFIX)

    def describe(self) -> str:
        """One line saying which model, data and statistics produced the numbers."""
        weights = "RANDOM weights (infrastructure test, numbers meaningless)" if self.is_random else \
            self.card.get("source", "")
        return (f"model **{self.model_name}** ({weights}); {len(self.sites)} MeanSparse sites "
                f"(placement {self.placement}); statistics: {self.stats['mode']} on {self.stats['n_samples']} "
                f"training images; test data: {self.data_info.get('source')} (n={self.data_info.get('n')}, "
                f"indices {self.data_info.get('indices')}); device {self.device}")


_SETUPS: dict = {}


def default_placement(model, name: str | None = None) -> str:
    """:func:`msparse.models.front.default_placement` on CIFAR-10 L∞ (the book's dataset and threat model)."""
    from ..models.front import default_placement as front_default

    return front_default(model, name, "cifar10", "Linf")


def load(model: str, device: str = "cpu"):
    """:func:`msparse.models.front.load` on CIFAR-10 L∞; ``None`` (a model a page lists as not available here)
    is an :class:`~msparse.errors.InputError`, not the default model."""
    from ..models.front import load as front_load

    if model is None:
        raise InputError("no model given (None): this model is not available here")
    return front_load(model, "cifar10", "Linf", device=device)


def setup(model: str = "msparse/default", *, n_examples: int = 200, n_train: int = 1000, data_source: str = "auto",
          placement: str | None = None, stats_mode: str = "exact", device: str = "cpu", use_stored: bool = True,
          results_dir: str | None = None, split_start: int = 0) -> Setup:
    """Load ``model``, put MeanSparse at its placement (the paper's ResNet-18 preset for the project's
    ResNet-18 family), calibrate on the first ``n_train`` training images, load ``n_examples`` test images.
    Cached per argument set, so a notebook re-run (or a widget) does not redo it."""
    from .._device import resolve_device
    from ..core.calibration import calibrate
    from ..core.placement import sparsify
    from ..data.loading import load_data

    device = str(resolve_device(device))
    key = (model, n_examples, n_train, data_source, placement, stats_mode, device, split_start)
    if key not in _SETUPS:
        m = load(model, device)
        pl = placement or default_placement(m, model)
        sites = sparsify(m, pl)
        xt, yt, tinfo = load_data("cifar10", "train", n=n_train, source=data_source, return_info=True)
        stats = calibrate(m, xt.to(device), mode=stats_mode)
        x, y, info = load_data("cifar10", "test", n=n_examples, source=data_source, start=split_start,
                               return_info=True)
        _SETUPS[key] = Setup(model, m, sites, pl, x.to(device), y.to(device), xt.to(device), yt.to(device),
                             info.to_dict(), tinfo.to_dict(), stats, device, None,
                             dict(getattr(m, "msparse_card", {}) or {}))
    s = _SETUPS[key]
    s.store = False if not use_stored else (results_dir or None)
    return s


def try_setup(model: str, **kw) -> tuple[Setup | None, str]:
    """:func:`setup`, or ``(None, reason)`` when the model is not available here (e.g. not trained yet)."""
    try:
        return setup(model, **kw), ""
    except Exception as e:  # ModelLoadError, FileNotFoundError, ...
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def sigma_ratios(snap: Mapping, ref: Mapping) -> dict:
    """Per site: the median over channels of σ / σ_ref (channels with σ_ref > 0)."""
    import torch

    out = {}
    for name, (_, v, _) in snap.items():
        vr = ref[name][1]
        ok = vr > 0
        out[name] = float(torch.median((v[ok] / vr[ok]).sqrt())) if ok.any() else float("nan")
    return out


def activation_of(model) -> str:
    """The activation name of a model of the ResNet-18 family (``""`` otherwise)."""
    return str(getattr(model, "activation", ""))
