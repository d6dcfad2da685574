"""The paper's placement of MeanSparse in every model it reports, as data.

Keys are ``"<RobustBench name>/<dataset>/<threat model>/<style>"``. ``v1`` = before every activation
(paper v1 text); ``v2`` = the hand-edited architectures of the later code (also on residual streams and
branch outputs). ``alpha`` is the α the authors used for the headline number of that model; ``n_sites`` the
number of operators (checked by the tests on RobustBench's architectures). Sources: the official MeanSparse
code (``add_custom_layer*`` for v1, the ``meansparse_*`` attributes of its hand-edited architectures for v2)
and RobustBench's ``Amini2024MeanSparse_*`` entries, as each preset's ``source`` says.
"""

from __future__ import annotations

from dataclasses import dataclass

from .placement import Rule

CIFAR = (3, 32, 32)
IMAGENET = (3, 224, 224)


@dataclass(frozen=True)
class Preset:
    """One model's official MeanSparse placement."""

    model: str  # RobustBench name (or "ResNet-18" for the paper's appendix models)
    dataset: str
    threat_model: str
    style: str
    alpha: float
    n_sites: int
    rules: tuple[Rule, ...]
    input_size: tuple[int, int, int]
    source: str
    notes: str = ""

    @property
    def key(self) -> str:
        return f"{self.model}/{self.dataset}/{self.threat_model}/{self.style}"

    def build_architecture(self):
        """RobustBench's base architecture for this preset, with random weights (no download)."""
        from .._compat import robustbench_architecture

        if self.model == "ResNet-18":
            from ..models.resnet import resnet18  # the project's own family (GELU, the paper's reference)
            return resnet18("gelu")
        return robustbench_architecture(self.model, self.dataset, self.threat_model)


_BEFORE_SILU = Rule(where="input", classes=("SiLU",), tags=("before_activation",))
_BLOCK_OUTPUT = Rule(where="output", classes=("_Block",), tags=("after_add",))

_PRESETS = [
    Preset("Peng2023Robust", "cifar10", "Linf", "v1", 0.25, 143, (_BEFORE_SILU,), CIFAR,
           "official repo 'Other Models' (add_custom_layer); HF cifar10/Peng2023Robust_WS.pt",
           "RaWRN-70-16; SE blocks (ReLU/Sigmoid) are not matched"),
    Preset("Peng2023Robust", "cifar10", "Linf", "v2", 0.25, 214, (_BEFORE_SILU, _BLOCK_OUTPUT), CIFAR,
           "official repo CIFAR10_Linfinity/RaWRN-70-16; RobustBench Amini2024MeanSparse_Ra_WRN_70_16",
           "adds a site on every block output after the residual add"),
    Preset("Wang2023Better_WRN-70-16", "cifar10", "Linf", "v1", 0.20, 67, (_BEFORE_SILU,), CIFAR,
           "official repo 'Other Models'; HF cifar10/Wang2023Better_WRN-70-16_WS.pt"),
    Preset("Bartoldson2024Adversarial_WRN-94-16", "cifar10", "Linf", "v2", 0.15, 136,
           (_BEFORE_SILU, _BLOCK_OUTPUT), CIFAR,
           "official repo MeanSparse_DMWideResNet; RobustBench Amini2024MeanSparse_S-WRN-94-16"),
    Preset("Wang2023Better_WRN-70-16", "cifar100", "Linf", "v2", 0.15, 100, (_BEFORE_SILU, _BLOCK_OUTPUT), CIFAR,
           "official repo CIFAR100_Linfinity; RobustBench Amini2024MeanSparse_S-WRN-70-16 (cifar100)"),
    Preset("Wang2023Better_WRN-70-16", "cifar10", "L2", "v2", 0.25, 100, (_BEFORE_SILU, _BLOCK_OUTPUT), CIFAR,
           "official repo CIFAR10_L2; RobustBench Amini2024MeanSparse_S-WRN-70-16 (cifar10 L2)"),
    Preset("Liu2023Comprehensive_ConvNeXt-L", "imagenet", "Linf", "v1", 0.30, 72,
           (Rule(where="input", classes=("GELU",), layout="nhwc", tags=("before_activation",)),
            Rule(where="output", names=("drop_path",), parent_classes=("ConvNeXtBlock",), layout="nchw",
                 tags=("branch_output",))),
           IMAGENET, "official add_custom_layer_ConvNeXt_L; RobustBench Amini2024MeanSparse_ConvNeXt-L",
           "before the MLP GELU (channels-last, 4C) and on the residual-branch output after drop_path (C)"),
    Preset("Peng2023Robust", "imagenet", "Linf", "v1", 0.20, 75,
           (Rule(where="input", classes=("ReLU", "SiLU"), exclude=("last_activation",),
                 tags=("before_activation",)),),
           IMAGENET, "official add_custom_layer_RaWideResNet (RaWRN-101-2)",
           "stem ReLU and the SiLUs of conv blocks a and b; SE and last_activation excluded"),
    Preset("Liu2023Comprehensive_Swin-L", "imagenet", "Linf", "v2", 0.10, 96,
           (Rule(where="input", classes=("GELU",), parent_classes=("Mlp",), layout="nlc",
                 tags=("before_activation",)),
            Rule(where="output", names=("fc2",), parent_classes=("Mlp",), layout="nlc", tags=("branch_output",)),
            Rule(where="swin_residuals", classes=("SwinTransformerBlock",), layout="nlc", tags=("after_add",))),
           IMAGENET, "official MeanSparse_swin_transformer.py; RobustBench Amini2024MeanSparse_Swin-L",
           "per block: MLP fc1 output, MLP fc2 output, after the attention add, after the MLP add"),
    Preset("ResNet-18", "cifar10", "Linf", "v1", 0.35, 17,
           (Rule(where="input", names=("act",), tags=("stem", "before_activation")),
            Rule(where="input", names=("act1",), tags=("main_path", "before_activation")),
            Rule(where="input", names=("act2",), tags=("after_add", "before_activation"))),
           CIFAR, "paper appendix A (Tables 2-8); site index = activation position of msparse.models.resnet",
           "appendix tables sweep alpha 0-0.40; 0.35 is GELU's best APGD in Table 2"),
]

#: every preset, by key
PRESETS: dict[str, Preset] = {p.key: p for p in _PRESETS}
