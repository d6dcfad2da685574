"""The training losses: PGD-AT (CE on adversarial examples), TRADES (CE + beta KL) and ANCRA (TRADES-style loss
plus the asymmetric negative contrast and reverse-attention auxiliary terms).

ANCRA follows the official code (Zhou et al. 2023, ``TRADES-ANCRA/train_CIFAR10_ResNet.py``): adversarial
examples by untargeted PGD-CE, negatives (a random sample of another class from the batch) pushed by targeted
PGD towards the anchor's label, and every term on the final logits plus ``cr_beta`` x the mean over the RA
blocks' auxiliary logits.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks.pgd import autocast, fgsm_rs_attack, pgd_attack, trades_attack
from .config import TrainConfig

__all__ = ["training_loss", "anc_loss"]


def anc_loss(p_anchor: torch.Tensor, q_neg: torch.Tensor) -> torch.Tensor:
    """Asymmetric negative contrast term of ANCRA (Zhou et al. 2023; ``ANC`` in the official code).

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

    with autocast(x.device, amp):
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
            # ANCRA (the official code's loss): every term on the final logits p' plus cr_beta x the mean over the RA
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
