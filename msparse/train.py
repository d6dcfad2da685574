"""Adversarial training of the CIFAR ResNet-18 family: PGD-AT, TRADES, ANCRA (ANC + reverse attention); resumable.

Python::

    from msparse.train import TrainConfig, train
    result = train(TrainConfig(method="pgd-at", epochs=200, out_dir="runs/gelu"))

CLI (``python -m msparse train ...`` or ``python -m msparse.train ...``)::

    python -m msparse.train --method pgd-at --activation gelu --epochs 200 --out runs/gelu

Defaults follow the MeanSparse appendix recipe (spec §5.3): PGD-10, eps 8/255, step 0.0078, SGD lr 0.1,
momentum 0.9, wd 5e-4, batch 256, lr / 10 at 50% and 75% of the epochs, best checkpoint by PGD accuracy
on a held-out part of the training set.  Cheaper settings for CPUs: ``--attack fgsm-rs`` (one step with
uniform random start), ``--steps k``, ``--schedule onecycle``.

Run directory layout (all writes atomic: temp file + ``os.replace``)::

    last.pt       full training state (model, optimiser, scheduler, epoch, history) -- used by --resume
    best.pt       weights (state dict) of the epoch with the best held-out PGD accuracy
    model.pt      final weights (best epoch; fp16 with --half-weights), what load_model reads
    model.json    model card: recipe, data provenance, epochs, wall time, device, accuracies, sha256
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import sha256_file

__all__ = [
    "TrainConfig", "train", "add_arguments", "main", "pgd_attack", "trades_attack", "fgsm_rs_attack",
    "anc_loss", "training_loss", "accuracy", "pgd_accuracy", "apgd_ce_accuracy", "gate_apgd_ce_accuracy", "atomic_save",
    "sha256_file", "METHODS", "ATTACKS", "SCHEDULES",
]

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
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if c.attack not in ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}; choose one of {', '.join(ATTACKS)}")
        if c.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if c.method != "pgd-at" and c.attack == "fgsm-rs":
            raise ValueError("--attack fgsm-rs is for pgd-at; for trades/ancra use --steps 1..k")
        if c.attack == "fgsm-rs":
            c.steps = 1
        if c.reverse_attention is None:
            c.reverse_attention = c.method == "ancra"
        if c.reverse_attention and c.method != "ancra":
            raise ValueError("reverse attention belongs to ANCRA: use method='ancra' (or drop --ra)")
        if c.step_size is None:
            c.step_size = 1.25 * c.eps if c.attack == "fgsm-rs" else 0.0078
        if c.pssilu_clip is None:
            c.pssilu_clip = 0.01 if c.method == "pgd-at" else 0.1
        if c.epochs < 1 or c.batch_size < 1 or c.steps < 1 or c.eps < 0:
            raise ValueError("epochs, batch_size and steps must be >= 1 and eps >= 0")
        if c.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"amp must be auto, bf16 or off, got {c.amp!r}")
        return c


# ---------------------------------------------------------------------------- attacks

def _autocast(device: torch.device, enabled: bool):
    if enabled:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
               step_size: float, *, random_start: str = "uniform", targeted: bool = False,
               loss_fn: Optional[Callable] = None, forward: Optional[Callable] = None,
               amp: bool = False) -> torch.Tensor:
    """L-inf PGD; returns x_adv (same shape as x), detached, in [0, 1] and within eps of x.

    Maximises ``loss_fn(forward(x_adv), y)`` (default CE of ``model(x_adv)``; minimises it when
    ``targeted``); ``random_start`` is "uniform" (in the eps-ball), "normal" (0.001 N(0, I), TRADES/ANCRA
    style) or "none".  The model's mode is not changed (callers put it in eval mode).
    """
    loss_fn = loss_fn or (lambda logits, t: F.cross_entropy(logits, t))
    forward = forward or model
    x = x.detach()
    if random_start == "uniform":
        x_adv = x + torch.empty_like(x).uniform_(-eps, eps)
    elif random_start == "normal":
        x_adv = x + 0.001 * torch.randn_like(x)
    elif random_start == "none":
        x_adv = x.clone()
    else:
        raise ValueError(f"random_start must be uniform, normal or none, got {random_start!r}")
    x_adv = _project(x_adv, x, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad(), _autocast(x.device, amp):
            loss = loss_fn(forward(x_adv), y)
            grad, = torch.autograd.grad(loss.float(), x_adv)
        sign = -1.0 if targeted else 1.0
        x_adv = _project(x_adv.detach() + sign * step_size * grad.sign(), x, eps)
    return x_adv.detach()


def fgsm_rs_attack(model, x, y, eps: float, step_size: float, amp: bool = False) -> torch.Tensor:
    """FGSM with uniform random start (Wong et al. 2020): one PGD step of ``step_size``."""
    return pgd_attack(model, x, y, eps, 1, step_size, random_start="uniform", amp=amp)


def trades_attack(model, x, eps: float, steps: int, step_size: float, amp: bool = False) -> torch.Tensor:
    """TRADES inner maximisation: maximise KL(f(x') || f(x)) from x + 0.001 N(0, I)."""
    with torch.no_grad(), _autocast(x.device, amp):
        p_nat = F.softmax(model(x).float(), dim=1)
    kl = lambda logits, p: F.kl_div(F.log_softmax(logits.float(), 1), p, reduction="sum")  # noqa: E731
    return pgd_attack(model, x, p_nat, eps, steps, step_size, random_start="normal", loss_fn=kl, amp=amp)


def anc_loss(p_anchor: torch.Tensor, q_neg: torch.Tensor) -> torch.Tensor:
    """Asymmetric negative contrast term of ANCRA (spec §6.1).

    ``p_anchor``, ``q_neg``: softmax probabilities (B, K).  Returns the scalar
    mean_i 1[argmax P_i = argmax Q_i] * sqrt(max P_i * max Q_i).
    """
    pmax, pcls = p_anchor.max(1)
    qmax, qcls = q_neg.max(1)
    same = (pcls == qcls).to(p_anchor.dtype)
    return (same * torch.sqrt(pmax * qmax + 1e-12)).mean()


def _kl(lo_adv: torch.Tensor, lo_nat: torch.Tensor) -> torch.Tensor:
    """KL(softmax(lo_nat) || softmax(lo_adv)) summed over classes, averaged over the batch (TRADES)."""
    return F.kl_div(F.log_softmax(lo_adv.float(), 1), F.softmax(lo_nat.float(), 1), reduction="batchmean")


def _asym_anc(lo_anchor: torch.Tensor, lo_neg: torch.Tensor, asym: float) -> torch.Tensor:
    """a * ANC(P.detach(), Q) + (1 - a) * ANC(Q.detach(), P) from anchor / negative logits."""
    p, q = F.softmax(lo_anchor.float(), 1), F.softmax(lo_neg.float(), 1)
    return asym * anc_loss(p.detach(), q) + (1 - asym) * anc_loss(q.detach(), p)


def _random_negatives(y: torch.Tensor, gen: Optional[torch.Generator] = None) -> torch.Tensor:
    """For each i an index j with y[j] != y[i] (random among them); i itself if no other class exists."""
    B = len(y)
    r = torch.rand((B, B), device=y.device, generator=gen)
    r = r.masked_fill(y[None, :] == y[:, None], -1.0)
    j = r.argmax(1)
    return torch.where(r.gather(1, j[:, None]).squeeze(1) < 0, torch.arange(B, device=y.device), j)


def _with_aux(model: nn.Module) -> Callable:
    """x (, y) -> (logits, [aux logits]) for ANCRA (aux is empty for a model without reverse attention)."""
    if getattr(model, "reverse_attention", False):
        return lambda x, y=None: model(x, y, return_aux=True)
    return lambda x, y=None: (model(x), [])


def _mean(terms: list, like: torch.Tensor) -> torch.Tensor:
    return torch.stack(terms).mean() if terms else like.new_zeros(())


def _ancra_ce(out, y: torch.Tensor, cr_beta: float) -> torch.Tensor:
    """CE(p', y) + cr_beta * mean_j CE(aux_j, y): ANCRA's natural loss and its attack objective."""
    logits, aux = out
    ce = F.cross_entropy(logits.float(), y)
    return ce + cr_beta * _mean([F.cross_entropy(a.float(), y) for a in aux], ce)


def training_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                  amp: bool = False) -> tuple[torch.Tensor, dict]:
    """Build adversarial examples (model in eval mode) and return the training loss (model in train mode).

    x: (B, 3, H, W) in [0, 1]; y: (B,).  Returns (scalar loss, dict of logged floats).
    """
    was_training = model.training
    model.eval()
    if cfg.method == "pgd-at":
        if cfg.attack == "fgsm-rs":
            x_adv = fgsm_rs_attack(model, x, y, cfg.eps, cfg.step_size, amp=amp)
        else:
            x_adv = pgd_attack(model, x, y, cfg.eps, cfg.steps, cfg.step_size, amp=amp)
    elif cfg.method == "trades":
        x_adv = trades_attack(model, x, cfg.eps, cfg.steps, cfg.step_size, amp=amp)
    else:  # ancra: untargeted PGD-CE examples + negatives pushed (targeted) towards the anchor's label
        fwd = _with_aux(model)
        objective = lambda out, t: _ancra_ce(out, t, cfg.cr_beta)  # noqa: E731
        x_adv = pgd_attack(model, x, y, cfg.eps, cfg.steps, cfg.step_size, random_start="normal",
                           loss_fn=objective, forward=fwd, amp=amp)
        neg = _random_negatives(y)
        x_neg = pgd_attack(model, x[neg], y, cfg.eps, cfg.steps, cfg.step_size, random_start="normal",
                           targeted=True, loss_fn=objective, forward=fwd, amp=amp)
    model.train(was_training)

    with _autocast(x.device, amp):
        if cfg.method == "pgd-at":
            logits = model(x_adv).float()
            loss = F.cross_entropy(logits, y)
            log = {"loss": loss.item(), "train_adv_acc": (logits.argmax(1) == y).float().mean().item()}
        elif cfg.method == "trades":
            # separate forwards (as in TRADES/ANCRA code): each gets its own BatchNorm batch statistics
            lo_nat, lo_adv = model(x).float(), model(x_adv).float()
            nat = F.cross_entropy(lo_nat, y)
            rob = _kl(lo_adv, lo_nat)
            loss = nat + cfg.beta * rob
            log = {"loss_nat": nat.item(), "loss_rob": rob.item(),
                   "train_adv_acc": (lo_adv.argmax(1) == y).float().mean().item()}
        else:
            # ANCRA (spec §6.1): every term on the final logits p' plus cr_beta x the mean over the RA
            # blocks' auxiliary logits; RA gates by the true label (the negative's own label for x_neg)
            fwd, cr = _with_aux(model), cfg.cr_beta
            nat_out, adv_out, neg_out = fwd(x, y), fwd(x_adv, y), fwd(x_neg, y[neg])
            nat = _ancra_ce(nat_out, y, cr)
            rob = _kl(adv_out[0], nat_out[0])
            rob = rob + cr * _mean([_kl(a, b) for a, b in zip(adv_out[1], nat_out[1])], rob)
            anc = _asym_anc(nat_out[0], neg_out[0], cfg.asym)
            anc = anc + cr * _mean([_asym_anc(a, b, cfg.asym) for a, b in zip(nat_out[1], neg_out[1])], anc)
            loss = nat + cfg.beta * rob + cfg.zeta * anc
            # label-gated logits predict y almost by construction; report the last RA block's own
            # prediction (what gates it at test time) when there is one
            seen = adv_out[1][-1] if adv_out[1] else adv_out[0]
            log = {"loss_nat": nat.item(), "loss_rob": rob.item(), "loss_anc": anc.item(),
                   "train_adv_acc": (seen.argmax(1) == y).float().mean().item()}
        if cfg.method != "pgd-at":
            log["loss"] = loss.item()
    paf = getattr(model, "paf", None)
    if paf is not None and hasattr(paf, "b") and cfg.pssilu_penalty:
        loss = loss + cfg.pssilu_penalty * paf.b.abs()
    return loss, log


# ---------------------------------------------------------------------------- evaluation helpers

@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500, device=None) -> float:
    """Clean top-1 accuracy in [0, 1] (model in eval mode)."""
    device = device or next(model.parameters()).device
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        correct += (model(xb).argmax(1) == yb).sum().item()
    return correct / max(len(x), 1)


def pgd_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255, steps: int = 10,
                 step_size: Optional[float] = None, batch_size: int = 500, device=None, seed: int = 0,
                 amp: bool = False) -> float:
    """Accuracy under L-inf PGD-k with uniform random start (step default 2.5 eps / k, at least 0.0078)."""
    device = device or next(model.parameters()).device
    step_size = step_size if step_size is not None else max(0.0078, 2.5 * eps / steps)
    model.eval()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    correct = 0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            xa = pgd_attack(model, xb, yb, eps, steps, step_size, amp=amp)
            with torch.no_grad():
                correct += (model(xa).argmax(1) == yb).sum().item()
    finally:
        torch.random.set_rng_state(state)
    return correct / max(len(x), 1)


def apgd_ce_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255,
                     norm: str = "Linf", seed: int = 0, batch_size: int = 500, device=None) -> float:
    """Robust accuracy under AutoAttack's APGD-CE (100 iterations, 1 restart, fixed seed).

    Uses ``msparse.evaluate.evaluate`` when the package provides it, otherwise pyautoattack directly.
    """
    device = device or next(model.parameters()).device
    model.eval()
    try:
        from msparse.evaluate import evaluate  # the project's evaluation code
    except ImportError:
        evaluate = None
    if evaluate is not None:
        res = evaluate(model, x, y, attack="apgd-ce", eps=eps, norm=norm, seed=seed, batch_size=batch_size,
                       n_iter=100, n_restarts=1, store=False, diagnostics=False)
        return float(res.robust_acc)
    return _apgd_ce_pyautoattack(model, x, y, eps, norm, seed, batch_size, device)


def gate_apgd_ce_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255,
                          seed: int = 0, batch_size: int = 500) -> dict:
    """Adaptive check of a reverse-attention (ANCRA) network: APGD-CE crafted on each RA block's gate.

    Each RA block gates by the argmax of its auxiliary logits at test time, which gradients do not see;
    APGD-CE (100 iterations) crafted on those logits (``RAAuxPath``) and scored on the model attacks the
    gate itself.  Returns accuracies in [0, 1]: ``direct`` (plain APGD-CE), ``gate_1``, ``gate_2``, ... and
    ``worst`` (an image counts only if it survives every one of them).
    """
    import numpy as np

    from msparse.evaluate import evaluate
    from msparse.models import RAAuxPath

    kw = dict(eps=eps, norm="Linf", seed=seed, batch_size=batch_size, n_iter=100, n_restarts=1, store=False,
              diagnostics=False)
    model.eval()
    res = {"direct": evaluate(model, x, y, "apgd-ce", **kw)}
    for b in range(len(model.layer4)):
        res[f"gate_{b + 1}"] = evaluate(model, x, y, "transfer:apgd-ce", source=RAAuxPath(model, b), **kw)
    out = {k: float(r.robust_acc) for k, r in res.items()}
    out["worst"] = float(np.logical_and.reduce([r.robust_flags for r in res.values()]).mean())
    return out


def _apgd_implementation() -> str:
    try:
        import msparse.evaluate  # noqa: F401
        return "msparse.evaluate.evaluate(attack='apgd-ce') (pyautoattack APGD-CE)"
    except ImportError:
        return "pyautoattack APGD-CE (msparse.train._apgd_ce_pyautoattack)"


def _apgd_ce_pyautoattack(model, x, y, eps, norm, seed, batch_size, device) -> float:
    """APGD-CE through pyautoattack directly (fallback when msparse.evaluate is absent)."""
    import logging
    from pyautoattack import AutoAttack

    aa = AutoAttack(model, attacks=["apgd-ce"], version="custom", eps=eps, norm=norm, seed=seed,
                    device=str(device))
    aa.apgd.n_restarts = 1
    aa.logger.setLevel(logging.WARNING)
    _, y_adv = aa.run_standard_evaluation(x.to(device), y.to(device), batch_size=batch_size)
    return (y_adv.to(y.device) == y).float().mean().item()


# ---------------------------------------------------------------------------- I/O



def atomic_save(obj, path) -> None:
    """torch.save to a temp file in the same directory, then os.replace (never a half-written file).

    The object is serialised in memory first, so identical objects give byte-identical files (torch names
    the archive after the file it writes to; a random temp name would change the sha256).
    """
    import io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "step":
        m1, m2 = int(0.5 * cfg.epochs) * steps_per_epoch, int(0.75 * cfg.epochs) * steps_per_epoch
        return lambda s: 1.0 if s < m1 else (0.1 if s < m2 else 0.01)
    if cfg.schedule == "onecycle":
        up = max(1, int(cfg.warmup_frac * total))
        return lambda s: (s / up) if s < up else max(0.0, (total - s) / max(1, total - up))
    if cfg.schedule == "cosine":
        return lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    return lambda s: 1.0


# ---------------------------------------------------------------------------- data for training

def _training_data(cfg: TrainConfig):
    """uint8 training images (minus the held-out tail), held-out val tensors, and provenance dicts."""
    from msparse.data import load_uint8, _to_float

    x, y, info = load_uint8("cifar10", "train", cfg.n_train, cfg.data_dir, source=cfg.data_source,
                            progress=cfg.progress)
    if cfg.val_n >= len(x):
        raise ValueError(f"val_n={cfg.val_n} leaves no training images (the source has {len(x)})")
    n_tr = len(x) - cfg.val_n
    x_val = _to_float(x[n_tr:])
    y_val = torch.from_numpy(y[n_tr:].copy()).long()
    prov = {"train": info.to_dict(), "train_rows_used": f"0..{n_tr - 1}",
            "validation": f"rows {n_tr}..{len(x) - 1} of the same source, never trained on"}
    return x[:n_tr], y[:n_tr], x_val, y_val, prov


# ---------------------------------------------------------------------------- main loop

def train(cfg: TrainConfig, *, resume: bool = False, stop_after_epoch: Optional[int] = None,
          log: Callable[[str], None] = print) -> dict:
    """Train (or resume) one model; returns the model card dict.

    ``stop_after_epoch`` ends the run early after that many epochs (as if interrupted), leaving
    ``last.pt`` to resume from; the card is written only when all epochs are done.
    """
    from msparse.data import ImageBatches
    from msparse.models import resnet18

    cfg = cfg.resolved()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = _device(cfg.device)
    amp = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format

    torch.manual_seed(cfg.seed)
    model = resnet18(cfg.activation, cfg.width, cfg.num_classes, cfg.reverse_attention).to(
        device, memory_format=fmt)
    x_tr, y_tr, x_val, y_val, prov = _training_data(cfg)
    batches = ImageBatches(x_tr, y_tr, cfg.batch_size, shuffle=True, augment=cfg.augment, drop_last=True,
                           seed=cfg.seed, device=device, channels_last=cfg.channels_last)
    if len(batches) == 0:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the {len(x_tr)} training images")
    decay, no_decay = [], []
    for n_, p in model.named_parameters():
        (no_decay if n_.startswith("paf.") else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, len(batches)))

    start_epoch, history, best, wall = 0, [], {"epoch": -1, "val_pgd": -1.0}, 0.0
    last_path = out / "last.pt"
    if resume and last_path.exists():
        st = torch.load(last_path, map_location=device, weights_only=True)
        saved = st["config"]
        saved = {**_BEFORE_RA, **saved}   # runs saved before reverse attention existed had none
        mismatch = {k: (saved.get(k), v) for k, v in dataclasses.asdict(cfg).items()
                    if k in _RECIPE_KEYS and saved.get(k) != v}
        if mismatch:
            raise ValueError(f"cannot resume {last_path}: the recipe differs from the saved run {mismatch}")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start_epoch, history, best, wall = st["epoch"], st["history"], st["best"], st["wall_s"]
        log(f"resumed from {last_path} after epoch {start_epoch}")
    elif not resume and last_path.exists():
        raise FileExistsError(f"{last_path} exists; pass resume=True (--resume) to continue that run "
                              f"or choose another out_dir")

    clip_b = getattr(getattr(model, "paf", None), "b", None)
    end_epoch = cfg.epochs if stop_after_epoch is None else min(cfg.epochs, stop_after_epoch)
    for epoch in range(start_epoch, end_epoch):
        t0 = time.time()
        torch.manual_seed(cfg.seed * 1000003 + epoch)  # attack random starts: a function of (seed, epoch)
        batches.set_epoch(epoch)
        model.train()
        it = batches
        if cfg.progress:
            from tqdm.auto import tqdm
            it = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                      mininterval=5 if sys.stderr.isatty() else 60)
        sums, count = {}, 0
        for xb, yb in it:
            loss, logd = training_loss(model, xb, yb, cfg, amp=amp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_b is not None and clip_b.grad is not None:
                torch.nn.utils.clip_grad_norm_([clip_b], cfg.pssilu_clip)
            opt.step()
            sched.step()
            count += 1
            for k, v in logd.items():
                sums[k] = sums.get(k, 0.0) + v
            if cfg.progress and hasattr(it, "set_postfix"):
                it.set_postfix(loss=f"{logd['loss']:.3f}", lr=f"{sched.get_last_lr()[0]:.4f}", refresh=False)
        if not all(math.isfinite(v) for v in sums.values()):
            raise FloatingPointError(f"non-finite training loss in epoch {epoch + 1}: {sums}")
        train_time = time.time() - t0
        val_clean = accuracy(model, x_val, y_val, cfg.eval_batch_size, device)
        val_pgd = pgd_accuracy(model, x_val, y_val, cfg.eps, cfg.val_steps, batch_size=cfg.eval_batch_size,
                               device=device, seed=cfg.seed, amp=amp)
        wall += time.time() - t0
        rec = {"epoch": epoch + 1, **{k: v / count for k, v in sums.items()}, "val_clean": val_clean,
               "val_pgd": val_pgd, "lr_end": sched.get_last_lr()[0], "train_s": round(train_time, 1),
               "epoch_s": round(time.time() - t0, 1)}
        history.append(rec)
        if val_pgd > best["val_pgd"]:
            best = {"epoch": epoch + 1, "val_pgd": val_pgd, "val_clean": val_clean}
            atomic_save(_cpu_state(model), out / "best.pt")
        atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "epoch": epoch + 1, "history": history, "best": best, "wall_s": wall,
                     "config": dataclasses.asdict(cfg), "provenance": prov}, last_path)
        log(f"epoch {epoch + 1}/{cfg.epochs}: loss {rec['loss']:.4f}  val clean {val_clean:.2%}  "
            f"val PGD-{cfg.val_steps} {val_pgd:.2%}  ({rec['epoch_s']:.0f} s)")

    if end_epoch < cfg.epochs:
        return {"finished": False, "epoch": end_epoch, "history": history, "best": best}
    return _finish(cfg, model, out, device, prov, history, best, wall, amp, log)


_BEFORE_RA = {"cr_beta": 2.0, "reverse_attention": False}
_RECIPE_KEYS = ("method", "activation", "width", "num_classes", "attack", "eps", "steps", "step_size", "beta",
                "zeta", "asym", "cr_beta", "reverse_attention", "epochs", "batch_size", "lr", "momentum", "weight_decay", "nesterov",
                "schedule", "warmup_frac", "data_source", "n_train", "val_n", "augment", "seed")


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def _finish(cfg, model, out, device, prov, history, best, wall, amp, log) -> dict:
    """Load the best weights, write model.pt (+ fp16) and the model card with test accuracies."""
    from msparse.data import load_data

    state = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    if cfg.half_weights:
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    atomic_save(state, out / "model.pt")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    # evaluate the stored weights exactly as load_model() returns them (fp32 copy, default memory format)
    model = model.to(memory_format=torch.contiguous_format).eval()
    card = {
        "name": out.name,
        "architecture": {"family": "msparse CIFAR ResNet-18", "activation": cfg.activation, "width": cfg.width,
                         "num_classes": cfg.num_classes, "reverse_attention": cfg.reverse_attention,
                         "input": "(N, 3, 32, 32) in [0, 1], no normalisation"},
        "dataset": "cifar10", "threat_model": "Linf",
        "recipe": {k: v for k, v in dataclasses.asdict(cfg).items() if k in _RECIPE_KEYS},
        "data": prov, "epochs": cfg.epochs, "best_epoch": best["epoch"],
        "wall_time_s": round(wall, 1), "device": _device_description(device),
        "torch": torch.__version__, "history": history,
        "weights": {"file": "model.pt", "dtype": "float16" if cfg.half_weights else "float32",
                    "sha256": sha256_file(out / "model.pt")},
    }
    if cfg.eval_n:
        x, y, info = load_data("cifar10", "test", cfg.eval_n, cfg.eval_data_dir, return_info=True)
        ev = {"data": info.to_dict(), "n": len(x), "eps": cfg.eps, "norm": "Linf"}
        t0 = time.time()
        ev["clean_accuracy"] = accuracy(model, x, y, cfg.eval_batch_size, device)
        if cfg.eval_apgd and getattr(model, "reverse_attention", False):
            ev["apgd_ce_gates"] = gate_apgd_ce_accuracy(model, x, y, cfg.eps, 0, cfg.eval_batch_size)
            ev["apgd_ce_accuracy"] = ev["apgd_ce_gates"]["direct"]
        elif cfg.eval_apgd:
            ev["apgd_ce_accuracy"] = apgd_ce_accuracy(model, x, y, cfg.eps, "Linf", 0, cfg.eval_batch_size, device)
            ev["apgd_ce"] = {"iterations": 100, "restarts": 1, "seed": 0, "loss": "ce",
                             "implementation": _apgd_implementation()}
        ev["eval_s"] = round(time.time() - t0, 1)
        card["evaluation"] = ev
        log(f"test ({info}): clean {ev['clean_accuracy']:.2%}"
            + (f", APGD-CE {ev['apgd_ce_accuracy']:.2%}" if cfg.eval_apgd else ""))
    _atomic_write_text(out / "model.json", json.dumps(card, indent=2) + "\n")
    card["finished"] = True
    return card


# ---------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` options to ``parser`` (used by ``python -m msparse train``)."""
    d = TrainConfig()
    a = parser.add_argument
    a("--method", choices=METHODS, default=d.method,
      help="training objective (ancra = TRADES-style loss + ANC + reverse attention; --no-ra for ANC only)")
    a("--activation", default=d.activation, help="relu, elu, gelu, silu, psilu or pssilu")
    a("--width", type=int, default=d.width, help="first-stage width (64 = standard ResNet-18)")
    a("--attack", choices=ATTACKS, default=d.attack, help="training attack for pgd-at")
    a("--eps", type=float, default=d.eps, help="L-inf radius (default 8/255)")
    a("--steps", type=int, default=d.steps, help="attack steps (PGD-k)")
    a("--step-size", type=float, default=None, help="attack step (default 0.0078; 1.25*eps for fgsm-rs)")
    a("--beta", type=float, default=d.beta, help="TRADES/ANCRA robust-loss weight (paper prints 0.6)")
    a("--zeta", type=float, default=d.zeta, help="ANCRA negative-contrast weight")
    a("--cr-beta", type=float, default=d.cr_beta, help="ANCRA weight of the reverse-attention auxiliary terms")
    a("--ra", dest="reverse_attention", action=argparse.BooleanOptionalAction, default=None,
      help="ANCRA's reverse-attention blocks in layer4 (default: on for --method ancra)")
    a("--epochs", type=int, default=d.epochs)
    a("--batch-size", type=int, default=d.batch_size)
    a("--lr", type=float, default=d.lr, help="(peak) learning rate")
    a("--momentum", type=float, default=d.momentum)
    a("--weight-decay", type=float, default=d.weight_decay)
    a("--nesterov", action="store_true", help="Nesterov momentum (robust_paf uses it)")
    a("--schedule", choices=SCHEDULES, default=d.schedule, help="step: /10 at 50%% and 75%% of the epochs")
    a("--data-source", choices=("auto", "official", "offline", "jpeg"), default=d.data_source)
    a("--data-dir", default=None, help="official CIFAR-10 dir, or the JPEG npz (dir) for --data-source jpeg")
    a("--n-train", type=int, default=None, help="use only the first N training images")
    a("--val-n", type=int, default=d.val_n, help="held-out training images for best-checkpoint selection")
    a("--val-steps", type=int, default=d.val_steps, help="PGD steps of the held-out check")
    a("--no-augment", dest="augment", action="store_false")
    a("--eval-n", type=int, default=d.eval_n, help="test images for the model card (0 = skip)")
    a("--no-eval-apgd", dest="eval_apgd", action="store_false", help="skip APGD-CE in the model card")
    a("--eval-data-dir", default=None, help="official CIFAR-10 dir for the card evaluation")
    a("--seed", type=int, default=d.seed)
    a("--out", dest="out_dir", default=d.out_dir, help="run directory")
    a("--device", default=d.device, help="auto, cpu, cuda, cuda:1, ...")
    a("--no-channels-last", dest="channels_last", action="store_false")
    a("--amp", choices=("auto", "bf16", "off"), default=d.amp, help="bf16 autocast (auto: on CUDA only)")
    a("--half-weights", action="store_true", help="store model.pt in fp16")
    a("--no-progress", dest="progress", action="store_false")
    a("--resume", action="store_true", help="continue from OUT/last.pt")
    a("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``train`` from parsed arguments; returns a process exit code."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    card = train(cfg, resume=args.resume)
    ev = card.get("evaluation", {})
    print(json.dumps({"out": cfg.out_dir, "best_epoch": card.get("best_epoch"),
                      "clean": ev.get("clean_accuracy"), "apgd_ce": ev.get("apgd_ce_accuracy"),
                      "wall_time_s": card.get("wall_time_s")}))
    return 0


if __name__ == "__main__":
    _p = argparse.ArgumentParser(prog="python -m msparse.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sys.exit(main(add_arguments(_p).parse_args()))
