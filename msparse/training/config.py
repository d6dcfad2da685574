"""What defines a training run: :class:`TrainConfig` (stored in the checkpoint and the model card).

Defaults follow the MeanSparse paper's appendix A.1 recipe: PGD-10, eps 8/255, step 0.0078, SGD lr 0.1,
momentum 0.9, weight decay 5e-4, batch 256, lr / 10 at 50% and 75% of the epochs, best checkpoint by PGD
accuracy on a held-out part of the training set. ANCRA's weights (beta 6, zeta 3, asymmetry 1, cr_beta 2) are
the argparse defaults of the official ANCRA code (``TRADES-ANCRA/train_CIFAR10_ResNet.py``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from ..errors import InputError, UnknownNameError

__all__ = ["TrainConfig", "METHODS", "ATTACKS", "SCHEDULES", "RECIPE_KEYS"]

METHODS = ("pgd-at", "trades", "ancra")
ATTACKS = ("pgd", "fgsm-rs")
SCHEDULES = ("step", "onecycle", "cosine", "constant")


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint and the model card)."""

    method: str = "pgd-at"            # pgd-at | trades | ancra
    activation: str = "gelu"
    width: int = 64
    num_classes: int = 10
    # attack used to build training examples
    attack: str = "pgd"               # pgd | fgsm-rs
    eps: float = 8 / 255
    steps: int = 10
    step_size: Optional[float] = None  # default 0.0078 (pgd) or 1.25*eps (fgsm-rs)
    beta: float = 6.0                 # TRADES / ANCRA robust-loss weight (paper prints 0.6)
    zeta: float = 3.0                 # ANCRA: weight of the asymmetric negative contrast
    asym: float = 1.0                 # ANCRA: asymmetry a (1 = only the negative is pushed)
    cr_beta: float = 2.0              # ANCRA: weight of the reverse-attention auxiliary terms
    reverse_attention: Optional[bool] = None  # ANCRA's RA blocks in layer4 (default: on for ancra only)
    # optimisation
    epochs: int = 200
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "step"            # step (/10 at 50%, 75%) | onecycle | cosine | constant
    warmup_frac: float = 0.4          # onecycle: fraction of steps spent rising to lr
    pssilu_penalty: float = 10.0      # Dai et al.: + penalty*|b| and clip grad of b (PSSiLU only)
    pssilu_clip: Optional[float] = None  # default 0.01 (pgd-at) / 0.1 (trades, ancra)
    # data
    data_source: str = "auto"         # auto | official | offline | jpeg
    data_dir: Optional[str] = None    # official files dir, or JPEG npz path/dir for data_source=jpeg
    n_train: Optional[int] = None     # use only the first n training images (None: all)
    val_n: int = 1000                 # held out from the END of the training images, never trained on
    val_steps: int = 10               # PGD-k (random start, step 0.0078 scaled) for model selection
    augment: bool = True
    # evaluation for the model card (first `eval_n` official test images)
    eval_n: int = 1000
    eval_apgd: bool = True
    eval_data_dir: Optional[str] = None
    # run
    seed: int = 0
    out_dir: str = "runs/train"
    device: str = "auto"
    channels_last: bool = True
    amp: str = "auto"                 # auto (bf16 on CUDA) | bf16 | off
    half_weights: bool = False        # store model.pt as fp16
    progress: bool = True
    eval_batch_size: int = 500

    def resolved(self) -> "TrainConfig":
        """Validate and fill derived defaults; returns a new config."""
        c = dataclasses.replace(self)
        c.method = c.method.lower()
        c.attack = c.attack.lower()
        if c.method not in METHODS:
            raise UnknownNameError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if c.attack not in ATTACKS:
            raise UnknownNameError(f"unknown attack {self.attack!r}; choose one of {', '.join(ATTACKS)}")
        if c.schedule not in SCHEDULES:
            raise UnknownNameError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if c.method != "pgd-at" and c.attack == "fgsm-rs":
            raise InputError("--attack fgsm-rs is for pgd-at; for trades/ancra use --steps 1..k")
        if c.attack == "fgsm-rs":
            c.steps = 1
        if c.reverse_attention is None:
            c.reverse_attention = c.method == "ancra"
        if c.reverse_attention and c.method != "ancra":
            raise InputError("reverse attention belongs to ANCRA: use method='ancra' (or drop --ra)")
        if c.step_size is None:
            c.step_size = 1.25 * c.eps if c.attack == "fgsm-rs" else 0.0078
        if c.pssilu_clip is None:
            c.pssilu_clip = 0.01 if c.method == "pgd-at" else 0.1
        if c.epochs < 1 or c.batch_size < 1 or c.steps < 1 or c.eps < 0:
            raise InputError("epochs, batch_size and steps must be >= 1 and eps >= 0")
        if c.amp not in ("auto", "bf16", "off"):
            raise InputError(f"amp must be auto, bf16 or off, got {c.amp!r}")
        return c


#: the fields that define the trained function (a resumed run must match them; the model card records them)
RECIPE_KEYS = ("method", "activation", "width", "num_classes", "attack", "eps", "steps", "step_size", "beta",
               "zeta", "asym", "cr_beta", "reverse_attention", "epochs", "batch_size", "lr", "momentum",
               "weight_decay", "nesterov", "schedule", "warmup_frac", "data_source", "n_train", "val_n", "augment",
               "seed")
