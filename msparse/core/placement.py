"""Placement: put MeanSparse operators into a model, list them, set α and the backward mode, save and restore
their state (:func:`site_state`, :func:`preserved_sites`), remove them.

A *site* is one operator at one place in the forward pass. ``sparsify`` adds, to the module that hosts a
site, a child ``msparse_in`` (applied to the module's input by a forward pre-hook) or ``msparse_out``
(applied to its output by a forward hook). The model's own parameter and buffer names do not change, so
checkpoints of the base model load before and after sparsification.

Where sites go is described by :class:`Rule` objects (data, not code paths): a preset in
:data:`msparse.core.presets.PRESETS` is a list of rules. Channel counts are never guessed from neighbouring
modules: one probe forward pass with a dummy input records the shape that reaches every site, checks it
against the declared layout, and fixes the order of sites (forward-execution order).
"""

from __future__ import annotations

import contextlib
import math
import re
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .._device import model_device
from ..errors import InputError, InputTypeError, StateError, UnknownNameError
from .operator import BACKWARDS, CENTRES, LAYOUTS, MeanSparse, _check_choice, check_alpha

#: activation classes (matched by class name, including base classes) for ``placement="activations"``
ACTIVATIONS = ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish",
               "Hardswish", "Softplus", "PSiLU", "PSSiLU")
WHERE = ("input", "output", "swin_residuals")
_SE = re.compile(r"(?i)(squeeze|excit|^se(block|module|layer)?$)")


def in_squeeze_excitation(path: str, ancestors: Sequence[nn.Module]) -> bool:
    """Default skip rule: the module sits inside a Squeeze-and-Excitation block (by class or attribute name)."""
    names = path.split(".")[:-1]
    return any(_SE.search(type(a).__name__) for a in ancestors) or any(_SE.search(n) for n in names)


@dataclass(frozen=True)
class Rule:
    """Which modules host a site, and how.

    Args:
        where: ``"input"`` (operator on the module's input, e.g. before an activation), ``"output"``
            (on its output, e.g. a residual block's output after the addition), or ``"swin_residuals"``
            (two sites inside a timm Swin block: after the attention residual add and after the MLP add).
        classes: class names a module (or one of its base classes) must have; empty = any class.
        names: attribute names (last component of the module path) it must have; empty = any name.
        parent_classes: class names its parent module must have; empty = any parent.
        exclude: attribute names that never match.
        skip_se: skip modules inside Squeeze-and-Excitation blocks (:func:`in_squeeze_excitation`).
        layout: tensor layout at the site (``"nchw"``, ``"nhwc"``, ``"nlc"``).
        tags: labels copied to every site of the rule (e.g. ``"main_path"``, ``"after_add"``).
    """

    where: str = "input"
    classes: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    parent_classes: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    skip_se: bool = True
    layout: str = "nchw"
    tags: tuple[str, ...] = ()

    def __post_init__(self):
        _check_choice("site position", self.where, WHERE)
        _check_choice("layout", self.layout, LAYOUTS)

    def matches(self, path: str, module: nn.Module, ancestors: Sequence[nn.Module]) -> bool:
        attr = path.rsplit(".", 1)[-1]
        if attr in self.exclude or (self.names and attr not in self.names):
            return False
        if self.classes and not _class_names(module) & set(self.classes):
            return False
        if self.parent_classes and not (ancestors and _class_names(ancestors[-1]) & set(self.parent_classes)):
            return False
        return True


def _class_names(module: nn.Module) -> set[str]:
    return {c.__name__ for c in type(module).__mro__}


@dataclass(frozen=True)
class Site:
    """One MeanSparse operator in a model.

    ``name`` is the operator's module path (its state-dict prefix), ``module`` the path of the module it
    sits on, ``where`` its position relative to that module, ``index`` its rank in forward-execution order.
    """

    name: str
    index: int
    channels: int
    layout: str
    module: str
    where: str
    tags: frozenset[str] = field(default_factory=frozenset)


# ------------------------------------------------------------------------------------------------
# hooks (module-level functions: models stay deep-copyable and picklable)
def _apply_input(module, args):
    if not args:
        raise InputTypeError(f"a MeanSparse input site needs a positional input; {type(module).__name__} was called "
                             "with keyword arguments only")
    return (module.msparse_in(args[0]),) + tuple(args[1:])


def _apply_output(module, args, output):
    if not isinstance(output, torch.Tensor):
        raise InputTypeError(f"a MeanSparse output site needs a tensor output; {type(module).__name__} returned "
                             f"{type(output).__name__}")
    return module.msparse_out(output)


def _swin_block_forward(self, x):
    """timm 1.0.9 ``SwinTransformerBlock.forward`` with sites after both residual additions (tokens, NLC)."""
    B, H, W, C = x.shape
    x = x + self.drop_path1(self._attn(self.norm1(x)))
    x = x.reshape(B, -1, C)
    x = self.msparse_attn_add(x)
    x = x + self.drop_path2(self.mlp(self.norm2(x)))
    x = self.msparse_mlp_add(x)
    return x.reshape(B, H, W, C)


_SWIN_PARTS = ("norm1", "_attn", "drop_path1", "norm2", "mlp", "drop_path2")
_SLOTS = {"input": ("msparse_in",), "output": ("msparse_out",),
          "swin_residuals": ("msparse_attn_add", "msparse_mlp_add")}


class _Probe(nn.Module):
    """Placeholder used during the probe forward: records call order, input shape and the module that produced
    the input (see :func:`_tag_producers`; ``None`` when no layout-defining module produced it directly)."""

    def __init__(self, clock: list):
        super().__init__()
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget what the last probe forward recorded (before a second probe at another input size)."""
        self.calls, self.order, self.shape, self.producer = 0, None, None, None

    def forward(self, x):
        self.calls += 1
        if self.order is None:
            self.order, self.shape = len(self.clock), tuple(x.shape)
            self.producer = getattr(x, _PRODUCER_TAG, None)
            self.clock.append(self)
        return x


# ------------------------------------------------------------------------------------------------
# layout checks: a declared layout must put the channel dim where the tensor has its channels
_PRODUCER_TAG = "_msparse_producer"
#: modules whose output holds channels in dim 1 (N, C, ...) whatever the rank
_CHANNELS_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
                   nn.GroupNorm)
#: modules whose output holds its features in the last dim (N, ..., C)
_CHANNELS_LAST = (nn.Linear,)


def _producer_kind(module: nn.Module) -> str | None:
    """``"first"`` (channels in dim 1), ``"last"`` (channels in the last dim) or ``None`` (no fixed layout)."""
    if isinstance(module, _CHANNELS_FIRST):
        return "first"
    if isinstance(module, _CHANNELS_LAST):
        return "last"
    return None


@contextlib.contextmanager
def _tag_producers(model: nn.Module) -> Iterator[None]:
    """During the probe forward, tag the output tensor of every layout-defining module (convolutions and
    channel norms: channels first; ``nn.Linear``: features last) with ``(module path, class name, kind)``.

    The tag is a Python attribute of the output tensor object: an activation called on a BatchNorm2d output
    sees the tag, a residual sum or a permuted view (a new tensor) does not. Pass-through modules
    (``nn.Identity``, in-place ReLU) keep the first tag. The hooks run before msparse's own output hooks, and
    every tag is removed afterwards."""
    import weakref

    tagged, handles = [], []

    def hook(module, args, output, _path=None, _kind=None):
        if isinstance(output, torch.Tensor) and not isinstance(output, nn.Parameter) \
                and getattr(output, _PRODUCER_TAG, None) is None:
            setattr(output, _PRODUCER_TAG, (_path, type(module).__name__, _kind))
            tagged.append(weakref.ref(output))

    try:
        for path, module in model.named_modules():
            kind = _producer_kind(module)
            if kind is not None and not path.split(".")[-1].startswith("msparse_"):
                def bound(m, a, o, _p=path, _k=kind):
                    return hook(m, a, o, _p, _k)
                handles.append(module.register_forward_hook(bound, prepend=True))
        yield
    finally:
        for h in handles:
            h.remove()
        for ref in tagged:
            t = ref()
            if t is not None and hasattr(t, _PRODUCER_TAG):
                delattr(t, _PRODUCER_TAG)


def _check_layout_against_producer(site_path: str, layout: str, shape: tuple, producer) -> None:
    """Raise :class:`~msparse.errors.InputError` when the module that produced a site's input puts its channels
    in another dim than the declared ``layout`` (e.g. ``"nhwc"`` declared on a BatchNorm2d output)."""
    if producer is None:
        return
    path, cls, kind = producer
    ndim, cdim = LAYOUTS[layout]
    want = 1 if kind == "first" else len(shape) - 1
    if cdim == want:
        return
    fits = [name for name, (n, c) in LAYOUTS.items() if n == len(shape) and c == want]
    advice = f"declare layout {fits[0]!r}" if fits else \
        "no MeanSparse layout fits it: put the site where the tensor is (N, C, H, W), (N, H, W, C) or (N, L, C)"
    where = "dim 1" if kind == "first" else f"the last dim ({len(shape) - 1})"
    raise InputError(f"site {site_path!r} is declared with layout {layout!r} (channels in dim {cdim}), but its input "
                     f"of shape {shape} is the output of {cls} {path!r}, which has its channels in {where}; "
                     f"{advice}")


def _second_input_size(input_size: tuple) -> tuple | None:
    """The probe input size with every spatial dim halved (rounded up), or ``None`` when none would change."""
    if len(input_size) < 2:
        return None
    spatial = tuple(max(1, (s + 1) // 2) for s in input_size[1:])
    return None if spatial == tuple(input_size[1:]) else (input_size[0], *spatial)


def _check_layout_by_resizing(model, probes: list, input_size: tuple, device) -> None:
    """Second probe at half the input size, for sites whose input no layout-defining module produced (a
    residual sum, a functional op): a channel count is fixed by the weights, so the declared channel dim must
    not change with the input size. ``probes`` holds ``(site path, layout, shape, probe)``. A model that
    cannot run at the smaller size (a fixed-size flatten, a fixed pooling kernel) is not checked this way."""
    small = _second_input_size(input_size)
    if small is None or not probes:
        return
    for *_, probe in probes:
        probe.reset()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *small), device=device))
    except Exception:
        return
    for site_path, layout, shape, probe in probes:
        if probe.calls != 1 or probe.shape is None or len(probe.shape) != len(shape):
            continue
        _, cdim = LAYOUTS[layout]
        if probe.shape[cdim] != shape[cdim]:
            raise InputError(
                f"site {site_path!r} is declared with layout {layout!r} (channels in dim {cdim}), but dim {cdim} of "
                f"its input changes with the input size (shape {shape} for an input {tuple(input_size)}, "
                f"{probe.shape} for {small}): it is a spatial or token dim, not channels; declare the layout whose "
                "channel dim holds the channels ('nchw' for (N, C, H, W), 'nhwc' for (N, H, W, C), 'nlc' for "
                "(N, L, C))")


def _install(host: nn.Module, path: str, where: str, clock: list) -> None:
    if where == "input":
        host.msparse_in = _Probe(clock)
        host.register_forward_pre_hook(_apply_input)
    elif where == "output":
        host.msparse_out = _Probe(clock)
        host.register_forward_hook(_apply_output)
    else:
        missing = [p for p in _SWIN_PARTS if not hasattr(host, p)]
        if missing:
            raise InputTypeError(f"{path!r} ({type(host).__name__}) is not a timm SwinTransformerBlock: "
                                 f"missing {missing}")
        host.msparse_attn_add = _Probe(clock)
        host.msparse_mlp_add = _Probe(clock)
        host.forward = types.MethodType(_swin_block_forward, host)


def _uninstall(host: nn.Module) -> None:
    for hooks, fn in ((host._forward_pre_hooks, _apply_input), (host._forward_hooks, _apply_output)):
        for key in [k for k, h in hooks.items() if h is fn]:
            del hooks[key]
    if isinstance(host.__dict__.get("forward"), types.MethodType) and \
            host.__dict__["forward"].__func__ is _swin_block_forward:
        del host.forward
    for slots in _SLOTS.values():
        for slot in slots:
            if slot in host._modules:
                del host._modules[slot]


def _walk(module: nn.Module, path: str = "", ancestors: tuple = ()):
    for name, child in module.named_children():
        if name.startswith("msparse_"):
            continue
        child_path = f"{path}.{name}" if path else name
        yield child_path, child, ancestors + (module,)
        yield from _walk(child, child_path, ancestors + (module,))


def _resolve(placement, types_, layout, input_size):
    """(rules, input_size, label) for a placement argument."""
    from .presets import PRESETS, Preset

    if isinstance(placement, str) and placement == "activations":
        classes = tuple(t if isinstance(t, str) else t.__name__ for t in (types_ or ACTIVATIONS))
        rule = Rule(where="input", classes=classes, layout=layout, tags=("before_activation",))
        return [rule], tuple(input_size or (3, 32, 32)), "activations"
    if isinstance(placement, str):
        if placement not in PRESETS:
            import difflib
            close = difflib.get_close_matches(placement, PRESETS, n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownNameError(f"unknown placement {placement!r}: use 'activations' or a key of msparse.PRESETS "
                                   f"({len(PRESETS)} presets, e.g. {next(iter(PRESETS))!r}).{hint}")
        placement = PRESETS[placement]
    if isinstance(placement, Preset):
        return list(placement.rules), tuple(input_size or placement.input_size), placement.key
    if isinstance(placement, Rule):
        placement = [placement]
    if isinstance(placement, Sequence) and placement and all(isinstance(r, Rule) for r in placement):
        return list(placement), tuple(input_size or (3, 32, 32)), "rules"
    raise InputTypeError(f"placement must be 'activations', a preset key, a Preset or a list of Rule, got {placement!r}")


def sparsify(model: nn.Module, placement="activations", *, types: Sequence | None = None,
             skip: Callable | None = in_squeeze_excitation, layout: str = "nchw",
             input_size: Sequence[int] | None = None) -> list[Site]:
    """Insert MeanSparse operators into ``model`` (in place) and return its sites in forward order.

    Args:
        model: any ``nn.Module``.
        placement: ``"activations"`` (an operator before every activation module), a key of
            :data:`msparse.PRESETS` (the paper's placement for that model), a ``Preset``, or a list of
            :class:`Rule`.
        types: activation classes or class names for ``"activations"`` (default :data:`ACTIVATIONS`).
        skip: ``skip(path, ancestors) -> bool`` excludes modules; default skips Squeeze-and-Excitation
            blocks; ``None`` keeps everything.
        layout: tensor layout at the sites for ``"activations"``.
        input_size: shape of one input, without the batch dim, for the probe forward
            (default: the preset's, or (3, 32, 32)).
    Returns:
        the list of :class:`Site`. Every operator starts with α = 0 and no statistics: call
        :func:`msparse.calibrate`, then :func:`set_alpha`.
    """
    if sites(model):
        raise StateError("the model is already sparsified: call msparse.core.placement.unsparsify(model) first")
    rules, input_size, label = _resolve(placement, types, layout, input_size)

    chosen = {}  # (path, where) -> (host, rule)
    for path, module, ancestors in _walk(model):
        for rule in rules:
            if not rule.matches(path, module, ancestors):
                continue
            if rule.skip_se and skip is not None and skip(path, ancestors):
                continue
            chosen.setdefault((path, rule.where), (module, rule))
    if not chosen:
        what = f"activation modules of types {', '.join(rules[0].classes)}" if label == "activations" \
            else f"modules matching placement {label!r}"
        raise InputError(f"no {what} found in {type(model).__name__}. If the model uses functional "
                         "activations (torch.nn.functional.relu ...), give each position its own activation "
                         "module, or pass the activation classes the model uses with types=[...].")

    clock: list = []
    try:
        for (path, where), (host, _) in chosen.items():
            _install(host, path, where, clock)
        device = model_device(model)
        was_training = model.training
        model.eval()
        try:
            result = _probe_sites(model, chosen, input_size, device)
        finally:
            model.train(was_training)
        result.sort()
        out = []
        for index, (_, site_path, path, where, slot, host, rule, channels) in enumerate(result):
            site = Site(site_path, index, channels, rule.layout, path, where, frozenset(rule.tags))
            op = MeanSparse(channels, layout=rule.layout)
            op.site = site
            host._modules[slot] = op.to(device)
            out.append(site)
        return out
    except BaseException:
        for (path, where), (host, _) in chosen.items():
            _uninstall(host)
        raise


def _probe_sites(model: nn.Module, chosen: dict, input_size: tuple, device) -> list:
    """Run the probe forward (model in eval mode, probes installed) and check every site: reached once, a tensor
    of the declared rank, channels where the declared layout says (:func:`_check_layout_against_producer`, then
    :func:`_check_layout_by_resizing`). Returns ``(order, site path, path, where, slot, host, rule, channels)``
    per site."""
    try:
        with torch.no_grad(), _tag_producers(model):
            model(torch.zeros((1, *input_size), device=device))
    except Exception as exc:
        raise StateError(f"the probe forward pass with an input of shape (1, {', '.join(map(str, input_size))}) "
                         f"failed ({type(exc).__name__}: {exc}); pass input_size=(C, H, W) matching the model") from exc
    result, unproduced = [], []
    for (path, where), (host, rule) in chosen.items():
        for slot in _SLOTS[where]:
            probe = host._modules[slot]
            site_path = f"{path}.{slot}"
            if probe.calls == 0:
                raise InputError(f"site {site_path!r} is never reached by the forward pass: its module is not used")
            if probe.calls > 1:
                raise InputError(
                    f"module {path!r} runs {probe.calls} times per forward pass (one instance shared by several "
                    "positions); MeanSparse needs per-position statistics: give each position its own module")
            ndim, cdim = LAYOUTS[rule.layout]
            if len(probe.shape) != ndim:
                raise InputError(f"site {site_path!r} receives a tensor of shape {probe.shape}, which does not "
                                 f"fit the declared layout {rule.layout!r} ({ndim}-d)")
            _check_layout_against_producer(site_path, rule.layout, probe.shape, probe.producer)
            if probe.producer is None:
                unproduced.append((site_path, rule.layout, probe.shape, probe))
            result.append((probe.order, site_path, path, where, slot, host, rule, probe.shape[cdim]))
    _check_layout_by_resizing(model, unproduced, input_size, device)
    return result


def unsparsify(model: nn.Module) -> nn.Module:
    """Remove every MeanSparse site from ``model`` (in place); the inverse of :func:`sparsify`."""
    for module in list(model.modules()):
        _uninstall(module)
    return model


def named_operators(model: nn.Module) -> list[tuple[str, MeanSparse]]:
    """``(module path, operator)`` of every MeanSparse module in ``model``, in site (forward) order.

    The path is the operator's name in ``model.named_modules()`` (and its state-dict prefix); for the model
    that was sparsified it equals the site name, for a wrapper around it (e.g. ``RAAuxPath``) it carries the
    wrapper's prefix. Operators without a site (built by hand) come last, in module order.
    """
    named = [(n, m) for n, m in model.named_modules() if isinstance(m, MeanSparse)]
    return sorted(named, key=lambda nm: nm[1].site.index if nm[1].site is not None else math.inf)


def operators(model: nn.Module, *, required: bool = False) -> list[MeanSparse]:
    """The MeanSparse modules of ``model``, in site order (see :func:`named_operators`).

    ``required=True`` raises :class:`~msparse.errors.InputError` when there is none (the model was never
    sparsified).
    """
    ops = [m for _, m in named_operators(model)]
    if required and not ops:
        raise InputError("the model has no MeanSparse sites: call msparse.sparsify(model, placement) first")
    return ops


def sites(model: nn.Module) -> list[Site]:
    """The sites of a sparsified model, in forward order (empty for a plain model)."""
    return [op.site for op in operators(model) if op.site is not None]


def set_alpha(model: nn.Module, alpha) -> None:
    """Set α at every site (a number), per site (a mapping ``{site name or index: α}``; unnamed sites get 0),
    or as a sequence with one α per site in site order."""
    ops = operators(model, required=True)
    if isinstance(alpha, Mapping):
        by_key = {}
        for i, op in enumerate(ops):
            by_key[i] = op
            if op.site is not None:
                by_key[op.site.name] = op
        values = {}
        for key, value in alpha.items():
            if key not in by_key:
                raise UnknownNameError(f"no site {key!r} in the model; sites are named like {ops[0].site.name!r} "
                                       f"or indexed 0..{len(ops) - 1} (see msparse.core.placement.sites(model))")
            values[id(by_key[key])] = check_alpha(value)
        for op in ops:
            op.set_alpha(values.get(id(op), 0.0))
    elif isinstance(alpha, Sequence) and not isinstance(alpha, str):
        if len(alpha) != len(ops):
            raise InputError(f"got {len(alpha)} alpha values for {len(ops)} sites")
        checked = [check_alpha(a) for a in alpha]
        for op, a in zip(ops, checked):
            op.set_alpha(a)
    else:
        value = check_alpha(alpha)
        for op in ops:
            op.set_alpha(value)


def set_backward(model: nn.Module, mode: str) -> None:
    """Switch every site's backward: ``"exact"`` (zero gradient in the band) or ``"identity"`` (BPDA)."""
    ops = operators(model, required=True)
    _check_choice("backward mode", mode, BACKWARDS)
    for op in ops:
        op.set_backward(mode)


def set_centre(model: nn.Module, centre: str) -> None:
    """Switch every site's centre reference: ``"mean"``, ``"zero"`` or ``"global"`` (paper Table 5)."""
    ops = operators(model, required=True)
    _check_choice("centre", centre, CENTRES)
    for op in ops:
        op.centre = centre


@contextlib.contextmanager
def backward_mode(model: nn.Module, mode: str = "identity") -> Iterator[nn.Module]:
    """Temporarily set every MeanSparse backward to ``mode`` ("exact" or "identity", the BPDA of an adaptive
    attack); restores each operator's own mode afterwards, also when the body raises. A model without
    sites is left as it is."""
    _check_choice("backward mode", mode, BACKWARDS)
    saved = [(m, m.backward) for m in operators(model)]
    try:
        for m, _ in saved:
            m.set_backward(mode)
        yield model
    finally:
        for m, b in saved:
            m.set_backward(b)


@contextlib.contextmanager
def base_model(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily set every MeanSparse α to 0 (the exact base model: the source of transfer attacks and the
    reference of paired comparisons); restores each α afterwards, also when the body raises."""
    saved = [(m, m.alpha.detach().clone()) for m in operators(model)]
    try:
        for m, _ in saved:
            m.set_alpha(0.0)
        yield model
    finally:
        for m, a in saved:
            m.set_alpha(float(a))


def site_state(model: nn.Module) -> list[tuple[dict, str, str]]:
    """Every operator's ``(buffers: α, statistics; backward mode; centre)`` in site order, copied to the CPU: all
    that tells one configuration of a sparsified model from another (the host weights are shared). Plain data, so
    it pickles (the executor ships it to workers); :func:`apply_site_state` sets it back."""
    return [({k: v.detach().cpu().clone() for k, v in m.state_dict().items()}, m.backward, m.centre)
            for m in operators(model)]


def apply_site_state(model: nn.Module, state: Sequence[tuple[dict, str, str]]) -> None:
    """Set every operator of ``model`` to ``state`` (from :func:`site_state` on the same architecture)."""
    ops = operators(model)
    if len(ops) != len(state):
        raise InputError(f"site state for {len(state)} operators, the model has {len(ops)}: apply a state taken "
                         "from a model with the same sites")
    for m, (buffers, backward, centre) in zip(ops, state):
        m.load_state_dict(buffers)
        m.set_backward(backward)
        m.centre = centre


@contextlib.contextmanager
def preserved_sites(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every operator's α, statistics, backward mode and centre on leaving the block, also when the
    body raises (:func:`site_state` before, :func:`apply_site_state` after)."""
    saved = site_state(model)
    try:
        yield model
    finally:
        apply_site_state(model, saved)


def blocked_fractions(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """One no-grad eval forward on ``x``; the fraction of entries inside the band at each site."""
    ops = operators(model, required=True)
    fractions, handles = {}, []
    for op in ops:
        def hook(module, args, _op=op):
            fractions[_op.site.name if _op.site else str(id(_op))] = _op.blocked_fraction(args[0])
        handles.append(op.register_forward_pre_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return fractions
