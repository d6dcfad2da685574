"""CIFAR ResNet-18 family with selectable activations: the models of the MeanSparse paper's appendix A (the
``resnet18`` of the ``dash29/robust_paf`` code, with its activations; Dai et al. 2022).

Layout (no input normalisation, pixels in [0, 1]):
stem conv3x3 -> bn1 -> ``act`` ; 4 stages x 2 BasicBlocks; each block
conv1 -> bn1 -> ``act1`` -> conv2 -> bn2 (+ shortcut) -> ``act2`` ; global average pool -> ``linear``.

Parameter names are those of ``pyautoattack/examples/resnet.py`` (``ResNet18``) so its standard-trained
state dict loads strictly into ``resnet18(activation="relu")``.

Every one of the 17 activation *positions* is its own module instance (MeanSparse needs per-position
statistics).  Position index convention: 0 = stem, 2k+1 = main path of block k, 2k+2 = after the
residual addition of block k (k = 0..7 in forward order).  The parametric activations (PSiLU, PSSiLU;
Dai et al. 2022) share their scalar parameters network-wide: the parameters live once, in the
top-level module ``paf``, and every position module reads them.

``reverse_attention=True`` builds ANCRA's variant (Zhou et al. 2023, arXiv 2310.03358; ``RA_Block`` in the
official ``TRADES-ANCRA/models/resnet.py``): the two ``layer4`` blocks are ``RABlock``s that re-weight their
output channels by a row of the shared classifier's weight matrix (the true label's row in training, the row
of the block's own predicted class otherwise).  The 17 activation positions, their module names and the plain
forward ``model(x) -> logits`` are unchanged, so MeanSparse placement, statistics and AutoAttack treat both
variants alike.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError, InputTypeError, UnknownNameError

__all__ = [
    "ACTIVATIONS", "PSiLU", "PSSiLU", "SharedPAF", "BasicBlock", "RABlock", "RAAuxPath", "ResNet18", "resnet18",
    "activation_positions",
]


class SharedPAF(nn.Module):
    """Network-wide learnable scalars of a parametric activation: ``a`` (init 1), ``b`` (init 1e-8).

    ``b`` enters as ``|b|``, whose gradient is exactly 0 at b = 0: initialised at 0 (Dai et al.'s value) it
    would never move and PSSiLU would train as PSiLU.  RobustBench's copy of PSSiLU starts at 1e-8; so do we.
    """

    def __init__(self, with_b: bool):
        super().__init__()
        self.a = nn.Parameter(torch.ones(()))
        if with_b:
            self.b = nn.Parameter(torch.full((), 1e-8))

    def extra_repr(self) -> str:
        return "shared by every activation position"


class _SharedActivation(nn.Module):
    """Base for a per-position activation module that reads parameters owned by a ``SharedPAF``.

    The shared module is stored without registering it as a child, so its parameters appear once in
    ``state_dict()`` (under ``paf.``) however many positions use it.
    """

    def __init__(self, shared: SharedPAF):
        super().__init__()
        object.__setattr__(self, "_shared", shared)

    @property
    def shared(self) -> SharedPAF:
        return self._shared


class PSiLU(_SharedActivation):
    """PSiLU(x) = x * sigmoid(|a| x), ``a`` shared network-wide (Dai et al. 2022). Shape-preserving."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.shared.a.abs().to(x.dtype)
        return x * torch.sigmoid(a * x)


class PSSiLU(_SharedActivation):
    """PSSiLU(x) = x * (sigmoid(|a| x) - |b|) / (1 - |b|), ``a``, ``b`` shared (Dai et al. 2022)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.shared.a.abs().to(x.dtype)
        b = self.shared.b.abs().to(x.dtype)
        return x * (torch.sigmoid(a * x) - b) / (1 - b)


ACTIVATIONS = ("relu", "elu", "gelu", "silu", "psilu", "pssilu")
_PLAIN = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}


def _check_activation(name: str) -> str:
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise UnknownNameError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)} (case-insensitive)")
    return key


class BasicBlock(nn.Module):
    """conv-bn-act1-conv-bn, + shortcut, then act2. (N, in_planes, H, W) -> (N, planes, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, make_act):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = make_act()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
        self.act2 = make_act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class RABlock(BasicBlock):
    """BasicBlock with ANCRA's reverse attention (``RA_Block`` of the official ANCRA code).

    ``forward(x, fc, label=None) -> (z', aux)``: z = the block output (after ``act2``), (N, C, H, W);
    aux = ``fc(avgpool(z))``, (N, K), the block's auxiliary logits through the shared classifier ``fc``;
    z' = z * fc.weight[c] broadcast over H, W, with c = ``label`` when given, else ``aux.argmax(1)``.
    """

    def forward(self, x: torch.Tensor, fc: nn.Linear = None, label: torch.Tensor = None):
        if fc is None:
            raise InputTypeError("RABlock needs the shared classifier: call block(x, fc, label=None)")
        z = super().forward(x)
        aux = fc(F.adaptive_avg_pool2d(z, 1).flatten(1))
        cls = aux.argmax(1) if label is None else label
        return z * fc.weight[cls].to(z.dtype)[:, :, None, None], aux


class ResNet18(nn.Module):
    """CIFAR ResNet-18: (N, 3, 32, 32) in [0, 1] -> logits (N, num_classes).

    Args:
        activation: one of ``ACTIVATIONS``.
        width: channels of the first stage (64 = the standard network; stages use w, 2w, 4w, 8w).
        num_classes: output classes.
        reverse_attention: ANCRA's variant; ``layer4`` holds two ``RABlock``s (see ``forward``).
    """

    def __init__(self, activation: str = "relu", width: int = 64, num_classes: int = 10,
                 reverse_attention: bool = False):
        super().__init__()
        self.activation = _check_activation(activation)
        if int(width) < 1:
            raise InputError(f"width must be a positive integer, got {width!r}")
        self.width = int(width)
        self.num_classes = int(num_classes)
        self.reverse_attention = bool(reverse_attention)
        if self.activation in ("psilu", "pssilu"):
            self.paf = SharedPAF(with_b=self.activation == "pssilu")
            cls = PSiLU if self.activation == "psilu" else PSSiLU
            make_act = lambda: cls(self.paf)  # noqa: E731
        else:
            make_act = _PLAIN[self.activation]
        w = self.width
        self.conv1 = nn.Conv2d(3, w, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.act = make_act()
        in_planes = w
        for i, (planes, stride) in enumerate([(w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)]):
            block = RABlock if (self.reverse_attention and i == 3) else BasicBlock
            blocks = []
            for s in (stride, 1):
                blocks.append(block(in_planes, planes, s, make_act))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.ModuleList(blocks) if block is RABlock else nn.Sequential(*blocks))
        self.linear = nn.Linear(8 * w, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor = None, return_aux: bool = False):
        """x (N, 3, 32, 32) -> logits (N, K); with ``return_aux`` -> (logits, [aux (N, K) per RA block]).

        Reverse attention gates by the labels ``y`` (N,) only in training mode when they are given (ANCRA's
        training forward); in eval mode, or without ``y``, each RA block gates by its own predicted class.
        The plain model ignores ``y`` and has no auxiliary outputs.
        """
        out = self.act(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        aux = []
        if self.reverse_attention:
            label = y if self.training else None
            for block in self.layer4:
                out, a = block(out, self.linear, label)
                aux.append(a)
        else:
            out = self.layer4(out)
        logits = self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))
        return (logits, aux) if return_aux else logits

    def extra_repr(self) -> str:
        ra = ", reverse_attention=True" if self.reverse_attention else ""
        return f"activation={self.activation!r}, width={self.width}{ra}"


class RAAuxPath(nn.Module):
    """An RA network's auxiliary logits of one RA block as a model: x (N, 3, H, W) -> (N, K).

    An adaptive-attack surrogate for ANCRA: at test time each RA block gates by the argmax of
    these logits, a piecewise-constant choice that gradients do not see; an attack crafted on this path
    (``evaluate(ra_model, ..., attack="transfer:apgd", source=RAAuxPath(ra_model, 0))``) flips the gate
    directly.  Block 0 (the first RA block) by default: on our ANCRA model its gate decides the final
    prediction for every test image.  Shares the network's parameters (and its MeanSparse sites).
    """

    def __init__(self, model: "ResNet18", block: int = 0):
        super().__init__()
        if not getattr(model, "reverse_attention", False):
            raise InputError("RAAuxPath needs a network built with reverse_attention=True")
        self.model = model
        self.block = int(block)
        # part of the state dict, so the results store keys this surrogate apart from the network itself
        self.register_buffer("aux_block", torch.tensor(self.block % len(model.layer4)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, return_aux=True)[1][self.block]


def resnet18(activation: str = "relu", width: int = 64, num_classes: int = 10,
             reverse_attention: bool = False) -> ResNet18:
    """Build a CIFAR ResNet-18 of this family (random init); ``reverse_attention`` = ANCRA's RA variant."""
    return ResNet18(activation=activation, width=width, num_classes=num_classes,
                    reverse_attention=reverse_attention)


def activation_positions(model: ResNet18) -> list[tuple[int, str, str]]:
    """The 17 activation positions as ``(index, module_path, tag)`` in forward order.

    tag is ``"stem"`` (index 0), ``"main_path"`` (odd) or ``"after_add"`` (even, >0).
    """
    out = [(0, "act", "stem")]
    k = 0
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for j in range(len(getattr(model, stage))):
            out.append((2 * k + 1, f"{stage}.{j}.act1", "main_path"))
            out.append((2 * k + 2, f"{stage}.{j}.act2", "after_add"))
            k += 1
    return out
