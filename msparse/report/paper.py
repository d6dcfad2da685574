"""The paper's and RobustBench's published numbers, as data, each with its source.

These are *reference values*: transcribed, never computed here. Notebooks show them beside the numbers
this package measures, always labelled with :func:`cite`. All accuracies are in percent.

>>> from msparse.report import paper
>>> paper.TABLES["table1"].value("RaWRN-70-16/test/apgd-ce", 0.25)
74.74
>>> paper.robustbench("Amini2024MeanSparse_Ra_WRN_70_16").external
68.94
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import InputError, UnknownNameError

__all__ = ["SOURCES", "RefTable", "TABLES", "RBEntry", "ROBUSTBENCH", "robustbench", "bpda_pairs", "cite",
           "table", "PAPER_ALPHA"]

#: where every number comes from (key -> full citation)
SOURCES: dict[str, str] = {
    "paper-v1": "Amini, Teymoorianfard, Ma, Houmansadr. MeanSparse: Post-Training Robustness Enhancement "
                "Through Mean-Centered Feature Sparsification. arXiv:2406.05927v1 (June 2024)",
    "readme-v1": "SPIN-UMass/MeanSparse README, v1 (4 models, HuggingFace weights)",
    "readme-v2": "SPIN-UMass/MeanSparse README at commit 52e6c03 (v2, 8 models, Google-Drive weights)",
    "robustbench": "RobustBench/robustbench model zoo at commit 78fcc9e (robustbench 1.1.1 has the same "
                   "MeanSparse entries): clean, autoattack_acc (authors' AA) and external "
                   "('APGD (both versions) with BPDA', RobustBench's adaptive re-evaluation)",
}


@dataclass(frozen=True)
class RefTable:
    """One published table: ``rows`` are ``(index value, *column values)``; ``None`` = not reported."""

    key: str
    title: str
    source: str  # a key of SOURCES
    where: str  # the table/figure/section in that source
    index: str  # name of the index column ("alpha", "eps_255", "site", "model")
    columns: tuple[str, ...]
    rows: tuple[tuple, ...]
    notes: str = ""
    selected: dict = field(default_factory=dict)  # column prefix -> α chosen by the authors

    def __post_init__(self):
        for r in self.rows:
            if len(r) != len(self.columns) + 1:
                raise InputError(f"{self.key}: row {r[0]!r} has {len(r) - 1} values for {len(self.columns)} columns")

    @property
    def citation(self) -> str:
        return f"{SOURCES[self.source]}, {self.where}"

    def index_values(self) -> list:
        return [r[0] for r in self.rows]

    def column(self, name: str) -> dict:
        """``{index value: value}`` of one column."""
        if name not in self.columns:
            raise UnknownNameError(f"{self.key} has no column {name!r}; columns: {', '.join(self.columns)}")
        j = self.columns.index(name) + 1
        return {r[0]: r[j] for r in self.rows}

    def value(self, column: str, at):
        """The value of ``column`` at index value ``at`` (floats compared with a tolerance)."""
        for k, v in self.column(column).items():
            if k == at or (isinstance(k, float) and isinstance(at, (int, float)) and math.isclose(k, at, abs_tol=1e-9)):
                return v
        raise UnknownNameError(f"{self.key}: no row {self.index}={at!r}; rows: {self.index_values()}")

    def frame(self):
        """A pandas DataFrame indexed by ``index``, columns as transcribed."""
        import pandas as pd

        df = pd.DataFrame([r[1:] for r in self.rows], columns=list(self.columns),
                          index=pd.Index([r[0] for r in self.rows], name=self.index))
        df.attrs["source"] = self.citation
        return df


ALPHAS_T1 = (0.0, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50)
ALPHAS_APP = (0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40)


def _rows(index, *cols):
    return tuple((i, *vals) for i, vals in zip(index, zip(*cols)))


_T1 = [  # paper Table 1, one list per α row; α = 0 is "Base"
    (99.15, 93.44, 93.27, 73.87, 99.37, 94.69, 93.26, 73.45, 78.02, 60.28, 73.58, 52.24),
    (99.15, 93.69, 93.27, 74.40, 99.36, 94.94, 93.15, 73.92, 78.00, 60.62, 73.24, 53.38),
    (99.13, 93.75, 93.26, 74.52, 99.33, 94.93, 93.18, 74.11, 78.04, 60.88, 73.28, 53.78),
    (99.10, 93.71, 93.24, 74.74, 99.32, 94.85, 93.03, 74.12, 77.94, 61.12, 72.82, 53.92),
    (99.07, 93.49, 93.17, 74.63, 99.29, 94.58, 92.90, 74.04, 77.96, 61.48, 72.36, 53.86),
    (98.98, 93.12, 93.04, 74.55, 99.23, 94.07, 92.75, 73.72, 77.74, 61.54, 71.74, 52.92),
    (98.87, 92.48, 92.88, 73.90, 99.11, 93.27, 92.38, 73.32, 77.56, 61.84, 69.90, 51.68),
    (98.70, 91.37, 92.60, 73.36, 98.92, 91.93, 92.08, 72.27, 77.12, 62.18, 67.16, 48.74),
    (98.42, 89.76, 92.37, 72.37, 98.66, 90.17, 91.55, 71.10, 76.90, 62.32, 61.78, 43.06),
]
_T2 = [
    (83.59, 47.77, 81.65, 46.65, 84.59, 49.12, 83.05, 48.54, 84.80, 48.02, 83.95, 48.03),
    (83.58, 47.89, 81.64, 47.47, 84.63, 49.25, 83.10, 48.70, 84.80, 48.11, 83.97, 48.22),
    (83.59, 48.25, 81.58, 48.69, 84.58, 49.57, 83.09, 49.05, 84.72, 48.58, 83.95, 48.61),
    (83.57, 48.60, 81.53, 49.22, 84.42, 50.00, 83.11, 49.73, 84.66, 48.88, 83.93, 49.05),
    (83.71, 48.88, 81.53, 49.49, 84.32, 50.37, 83.01, 50.01, 84.69, 49.07, 83.79, 49.29),
    (83.46, 49.30, 81.56, 49.14, 84.18, 50.80, 83.00, 50.59, 84.61, 49.36, 83.75, 49.32),
    (83.48, 49.24, 81.20, 48.66, 83.95, 51.13, 82.78, 50.81, 84.27, 49.35, 83.81, 49.19),
    (83.13, 49.27, 80.34, 47.60, 83.51, 51.36, 82.49, 50.79, 83.76, 49.25, 83.55, 49.11),
    (82.49, 48.87, 78.77, 46.10, 82.85, 51.25, 81.34, 49.97, 83.20, 48.76, 82.69, 48.63),
]
_GELU_CLEAN = tuple(r[4] for r in _T2)
_GELU_APGD = tuple(r[5] for r in _T2)
_T7 = [  # index: single α=.2 clean, apgd; single α=.35 clean, apgd; cum α=.2 clean, apgd; cum α=.35 clean, apgd
    (84.52, 49.34, 84.21, 49.19, 84.52, 49.37, 84.21, 49.19),
    (84.56, 49.19, 84.44, 49.09, 84.53, 49.38, 84.31, 49.35),
    (84.46, 49.21, 84.45, 49.20, 84.49, 49.37, 83.98, 49.29),
    (84.50, 49.15, 84.33, 49.19, 84.45, 49.52, 83.72, 49.69),
    (84.48, 49.21, 84.26, 49.26, 84.41, 49.67, 83.47, 50.02),
    (84.54, 49.24, 84.36, 49.25, 84.38, 49.86, 83.14, 50.29),
    (84.60, 49.11, 84.58, 49.21, 84.34, 49.90, 83.21, 50.50),
    (84.51, 49.13, 84.45, 49.16, 84.32, 49.99, 83.02, 50.65),
    (84.58, 49.19, 84.59, 49.21, 84.34, 50.12, 83.05, 50.86),
    (84.60, 49.12, 84.53, 49.02, 84.35, 50.32, 82.96, 51.09),
    (84.59, 49.06, 84.59, 49.07, 84.34, 50.35, 83.12, 51.15),
    (84.60, 49.06, 84.56, 49.05, 84.38, 50.33, 83.02, 51.23),
    (84.62, 49.09, 84.72, 49.05, 84.37, 50.27, 83.09, 51.23),
    (84.59, 49.13, 84.63, 49.09, 84.38, 50.37, 83.14, 51.20),
    (84.60, 49.17, 84.63, 49.12, 84.40, 50.34, 83.26, 51.41),
    (84.57, 49.15, 84.69, 49.10, 84.36, 50.38, 83.30, 51.37),
    (84.63, 49.09, 84.75, 49.01, 84.32, 50.37, 83.51, 51.36),
]

_T1_MODELS = ("RaWRN-70-16", "WRN-70-16")
_T1_COLS = tuple(f"{m}/{s}/{k}" for m in _T1_MODELS for s in ("train", "test") for k in ("clean", "apgd-ce")) + (
    "ConvNeXt-L/test/clean", "ConvNeXt-L/test/apgd-ce", "RaWRN-101-2/test/clean", "RaWRN-101-2/test/apgd-ce")
_ACTS = ("ReLU", "ELU", "GELU", "SiLU", "PSiLU", "PSSiLU")

TABLES: dict[str, RefTable] = {t.key: t for t in [
    RefTable(
        "table1", "Clean and APGD-CE accuracy vs α for the four leading models (L∞; CIFAR-10 8/255, "
        "ImageNet 4/255)", "paper-v1", "Table 1", "alpha", _T1_COLS, tuple((a, *r) for a, r in zip(ALPHAS_T1, _T1)),
        notes="α = 0 is the base model. CIFAR-10 models: RobustBench Peng2023Robust (RaWRN-70-16) and "
              "Wang2023Better_WRN-70-16; ImageNet: ConvNeXt-L and RaWRN-101-2 (test columns only). The size of "
              "the 'train' evaluation subset is not stated. APGD-CE: 100 iterations.",
        selected={"RaWRN-70-16": 0.25, "WRN-70-16": 0.20, "ConvNeXt-L": 0.30, "RaWRN-101-2": 0.20}),
    RefTable(
        "fig3", "Clean and AutoAttack accuracy, base vs MeanSparse (Fig. 3; same values as the v1 README)",
        "readme-v1", "headline table (= paper v1 Fig. 3 and §4.2 text)", "model",
        ("dataset", "alpha", "clean_base", "clean_ms", "aa_base", "aa_ms"),
        (("RaWRN-70-16", "CIFAR-10 Linf 8/255", 0.25, 93.27, 93.24, 71.07, 72.08),
         ("WRN-70-16", "CIFAR-10 Linf 8/255", 0.20, 93.26, 93.18, 70.69, 71.41),
         ("ConvNeXt-L", "ImageNet Linf 4/255", 0.30, 78.02, 77.96, 58.48, 59.64),
         ("RaWRN-101-2", "ImageNet Linf 4/255", 0.20, 73.58, 73.28, 48.94, 52.98)),
        notes="The paper's §4.2 text writes 71.40 for WRN-70-16 MeanSparse AA (71.41 in the README). The base AA "
              "values equal RobustBench's leaderboard values."),
    RefTable(
        "readme_v2", "Headline table of the v2 README (repo HEAD)", "readme-v2", "README results table", "model",
        ("dataset", "alpha", "clean_base", "clean_ms", "aa_base", "aa_ms"),
        (("WRN-94-16", "CIFAR-10 Linf 8/255", 0.15, 93.68, 93.63, 73.71, 75.28),
         ("RaWRN-70-16", "CIFAR-10 Linf 8/255", 0.25, 93.27, 93.27, 71.07, 72.78),
         ("WRN-70-16", "CIFAR-10 Linf 8/255", 0.20, 93.26, 93.18, 70.69, 71.41),
         ("WRN-70-16 (L2)", "CIFAR-10 L2 0.5", 0.25, 95.54, 95.49, 84.97, 87.28),
         ("WRN-70-16 (CIFAR-100)", "CIFAR-100 Linf 8/255", 0.15, 75.22, 75.17, 42.67, 44.78),
         ("Swin-L", "ImageNet Linf 4/255", 0.10, 78.92, 78.86, 59.56, 62.12),
         ("ConvNeXt-L", "ImageNet Linf 4/255", 0.30, 78.02, 77.96, 58.48, 59.64),
         ("RaWRN-101-2", "ImageNet Linf 4/255", 0.20, 73.58, 73.28, 48.94, 52.98)),
        notes="RaWRN-70-16 72.78 is the v2 placement (also after each residual add); 72.08 (Fig. 3) is v1."),
    RefTable(
        "table2", "Activation functions (ResNet-18, PGD-AT, CIFAR-10): clean and APGD vs α", "paper-v1",
        "Appendix Table 2", "alpha", tuple(f"{a}/{k}" for a in _ACTS for k in ("clean", "apgd")),
        tuple((a, *r) for a, r in zip(ALPHAS_APP, _T2)),
        notes="APGD = APGD-CE then APGD-DLR, L∞ 8/255."),
    RefTable(
        "table3", "Threat models (ResNet-18 GELU, PGD-AT): APGD under L∞ 8/255 and L2 128/255", "paper-v1",
        "Appendix Table 3", "alpha", ("clean", "apgd-linf", "apgd-l2"),
        _rows(ALPHAS_APP, _GELU_CLEAN, _GELU_APGD,
              (59.98, 60.23, 60.53, 60.87, 61.36, 61.60, 61.73, 61.74, 61.74)),
        notes="The L2 model is the same L∞-trained model; ε = 128/255 ≈ 0.502 as printed."),
    RefTable(
        "table4", "Adversarial-training method (ResNet-18 GELU): PGD-AT vs TRADES", "paper-v1",
        "Appendix Table 4 (garbled in the text extraction; reconstructed reading)", "alpha",
        ("PGD-AT/clean", "PGD-AT/apgd", "TRADES/clean", "TRADES/apgd"),
        _rows(ALPHAS_APP, _GELU_CLEAN, _GELU_APGD,
              (83.01, 83.04, 83.09, 83.11, 83.08, 83.02, 82.92, 82.62, 82.20),
              (47.03, 47.16, 47.61, 48.08, 48.64, 48.92, 49.34, 49.24, 48.76)),
        notes="The paper has no ANCRA column; ANCRA is this project's extension (no reference values)."),
    RefTable(
        "table5", "Centre reference (ResNet-18 GELU, PGD-AT); threshold α·σ_ch throughout", "paper-v1",
        "Appendix Table 5", "alpha",
        ("zero/clean", "zero/apgd", "global/clean", "global/apgd", "mean/clean", "mean/apgd"),
        _rows(ALPHAS_APP,
              (84.59, 84.58, 84.50, 84.30, 84.06, 83.55, 82.81, 81.68, 79.84),
              (49.12, 49.32, 49.63, 50.26, 50.98, 51.58, 52.08, 51.95, 51.72),
              (84.59, 84.58, 84.52, 84.36, 84.13, 83.83, 83.27, 82.52, 81.09),
              (49.12, 49.22, 49.45, 49.79, 50.23, 50.73, 50.87, 50.61, 49.93),
              _GELU_CLEAN, _GELU_APGD),
        notes="Columns named by msparse centre: 'zero' (paper: zero), 'global' (paper: μ, one scalar mean), "
              "'mean' (paper: μ_ch, MeanSparse). The blocked value for zero/global is this project's reading."),
    RefTable(
        "table6", "Attack strength ε (ResNet-18 GELU, PGD-AT): APGD L∞ accuracy", "paper-v1", "Appendix Table 6",
        "eps_255", ("alpha=0", "alpha=0.2", "alpha=0.35"),
        _rows(tuple(range(1, 17)),
              (81.10, 77.72, 73.37, 68.88, 64.31, 58.95, 54.11, 49.12, 42.77, 37.48, 32.62, 28.12, 23.77, 19.42,
               15.51, 11.97),
              (80.97, 77.60, 73.54, 69.08, 64.70, 59.92, 55.15, 50.37, 44.41, 39.17, 34.20, 29.77, 25.44, 20.76,
               17.01, 13.41),
              (79.60, 76.47, 72.64, 68.80, 64.48, 60.15, 55.71, 51.36, 45.72, 40.77, 36.04, 31.50, 27.18, 22.77,
               19.09, 15.44)),
        notes="ε in units of 1/255. Clean accuracy: α=0 84.59, α=0.2 84.32, α=0.35 83.51."),
    RefTable(
        "table7", "Single vs cumulative activation positions (ResNet-18 GELU, PGD-AT)", "paper-v1",
        "Appendix Table 7", "site",
        tuple(f"{kind}/{a}/{k}" for kind in ("single", "cumulative") for a in ("0.2", "0.35")
              for k in ("clean", "apgd")),
        tuple((i, *r) for i, r in enumerate(_T7)),
        notes="Index 0 = stem activation, 2k+1 = main path of block k, 2k+2 = after the residual add. "
              "Single: MeanSparse only at that index; cumulative: at every index ≤ it. Base 84.59 / 49.12."),
    RefTable(
        "table8", "Main path vs after addition (ResNet-18 GELU, PGD-AT)", "paper-v1", "Appendix Table 8", "alpha",
        ("main_path/clean", "main_path/apgd", "after_add/clean", "after_add/apgd"),
        _rows(ALPHAS_APP,
              (84.59, 84.59, 84.59, 84.50, 84.40, 84.26, 83.94, 83.66, 82.96),
              (49.12, 49.20, 49.31, 49.43, 49.63, 49.68, 49.88, 49.94, 49.91),
              (84.59, 84.62, 84.59, 84.49, 84.47, 84.46, 84.27, 84.15, 83.67),
              (49.12, 49.25, 49.43, 49.53, 49.66, 49.93, 49.90, 49.73, 49.24)),
        notes="Main path = odd indices 1..15; after addition = even indices 2..16 (index 0 in neither)."),
]}

#: α the authors chose per model (Table 1 / Fig. 3), and for the appendix ResNet-18 study
PAPER_ALPHA = {"RaWRN-70-16": 0.25, "WRN-70-16": 0.20, "ConvNeXt-L": 0.30, "RaWRN-101-2": 0.20,
               "WRN-94-16": 0.15, "Swin-L": 0.10}


def table(key: str) -> RefTable:
    """The reference table ``key`` (e.g. ``"table1"``, ``"fig3"``, ``"table6"``)."""
    if key not in TABLES:
        raise UnknownNameError(f"no reference table {key!r}; available: {', '.join(TABLES)}")
    return TABLES[key]


@dataclass(frozen=True)
class RBEntry:
    """One RobustBench leaderboard entry (accuracies in %). ``external`` is RobustBench's own adaptive
    evaluation ('APGD (both versions) with BPDA') where there is one; ``base`` names the entry's base model."""

    name: str
    dataset: str
    threat_model: str
    eps: str
    architecture: str
    clean: float
    aa: float
    external: float | None
    rank: int | None
    base: str | None = None  # for a MeanSparse entry: (name, dataset, threat) key of its base entry
    external_note: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}/{self.dataset}/{self.threat_model}"

    @property
    def citation(self) -> str:
        return f"{SOURCES['robustbench']}; entry {self.key}"


ROBUSTBENCH: tuple[RBEntry, ...] = (
    RBEntry("Peng2023Robust", "cifar10", "Linf", "8/255", "RaWRN-70-16", 93.27, 71.07, None, 4),
    RBEntry("Amini2024MeanSparse_Ra_WRN_70_16", "cifar10", "Linf", "8/255", "MeanSparse RaWRN-70-16", 93.24,
            72.08, 68.94, 7, "Peng2023Robust/cifar10/Linf",
            "lists the v1 numbers (93.24 / 72.08) for the v2 architecture"),
    RBEntry("Wang2023Better_WRN-70-16", "cifar10", "Linf", "8/255", "WRN-70-16", 93.25, 70.69, None, 5),
    RBEntry("Bartoldson2024Adversarial_WRN-94-16", "cifar10", "Linf", "8/255", "WRN-94-16", 93.68, 73.71, None, 1),
    RBEntry("Amini2024MeanSparse_S-WRN-94-16", "cifar10", "Linf", "8/255", "MeanSparse WRN-94-16", 93.60, 75.28,
            73.10, 2, "Bartoldson2024Adversarial_WRN-94-16/cifar10/Linf"),
    RBEntry("Wang2023Better_WRN-70-16", "cifar10", "L2", "0.5", "WRN-70-16", 95.54, 84.97, None, 1),
    RBEntry("Amini2024MeanSparse_S-WRN-70-16", "cifar10", "L2", "0.5", "MeanSparse WRN-70-16", 95.51, 87.28,
            84.33, 2, "Wang2023Better_WRN-70-16/cifar10/L2"),
    RBEntry("Wang2023Better_WRN-70-16", "cifar100", "Linf", "8/255", "WRN-70-16", 75.22, 42.67, 42.66, 1,
            external_note="external = MALT, not BPDA"),
    RBEntry("Amini2024MeanSparse_S-WRN-70-16", "cifar100", "Linf", "8/255", "MeanSparse WRN-70-16", 75.13, 44.78,
            42.25, 2, "Wang2023Better_WRN-70-16/cifar100/Linf"),
    RBEntry("Liu2023Comprehensive_Swin-L", "imagenet", "Linf", "4/255", "Swin-L", 78.92, 59.56, None, 2),
    RBEntry("Amini2024MeanSparse_Swin-L", "imagenet", "Linf", "4/255", "MeanSparse Swin-L", 78.80, 62.12, 58.92, 3,
            "Liu2023Comprehensive_Swin-L/imagenet/Linf"),
    RBEntry("Liu2023Comprehensive_ConvNeXt-L", "imagenet", "Linf", "4/255", "ConvNeXt-L", 78.02, 58.48, None, 5),
    RBEntry("Amini2024MeanSparse_ConvNeXt-L", "imagenet", "Linf", "4/255", "MeanSparse ConvNeXt-L", 77.92, 59.64,
            58.22, 6, "Liu2023Comprehensive_ConvNeXt-L/imagenet/Linf"),
    RBEntry("Peng2023Robust", "imagenet", "Linf", "4/255", "RaWRN-101-2", 73.44, 48.94, None, 17),
)


def robustbench(name: str, dataset: str | None = None, threat_model: str | None = None) -> RBEntry:
    """The RobustBench entry ``name`` (give dataset/threat model when the name is ambiguous)."""
    hits = [e for e in ROBUSTBENCH if e.name == name and dataset in (None, e.dataset)
            and threat_model in (None, e.threat_model)]
    if not hits:
        raise UnknownNameError(f"no RobustBench entry {name!r} ({dataset}, {threat_model}) in msparse.report.paper.ROBUSTBENCH")
    if len(hits) > 1:
        raise UnknownNameError(f"{name!r} is ambiguous: {', '.join(e.key for e in hits)}; pass dataset= and threat_model=")
    return hits[0]


def bpda_pairs() -> list[tuple[RBEntry, RBEntry]]:
    """``(base, meansparse)`` pairs of RobustBench entries where the MeanSparse entry has a BPDA number."""
    by_key = {e.key: e for e in ROBUSTBENCH}
    return [(by_key[e.base], e) for e in ROBUSTBENCH if e.base is not None and e.external is not None]


def cite(key: str) -> str:
    """One-line source of a reference table or RobustBench entry key (for captions)."""
    if key in TABLES:
        return TABLES[key].citation
    if key == "robustbench":
        return SOURCES["robustbench"]
    for e in ROBUSTBENCH:
        if key in (e.key, e.name):
            return e.citation
    raise UnknownNameError(f"unknown reference {key!r}")
