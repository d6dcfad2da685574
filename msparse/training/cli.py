"""The ``train`` command's options (``python -m msparse train ...``) and its entry point."""
from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from .config import ATTACKS, METHODS, SCHEDULES, TrainConfig
from .loop import train

__all__ = ["add_arguments", "main"]


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

