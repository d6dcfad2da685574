"""The training loop of the CIFAR ResNet-18 family: PGD-AT, TRADES, ANCRA (ANC + reverse attention); resumable.

Python::

    from msparse.training.config import TrainConfig
    from msparse.training.loop import train
    card = train(TrainConfig(method="pgd-at", epochs=200, out_dir="runs/gelu"))

CLI::

    python -m msparse train --method pgd-at --activation gelu --epochs 200 --out runs/gelu

The recipe is :class:`~msparse.training.config.TrainConfig` (the paper's appendix A.1 defaults); cheaper
settings for CPUs: ``--attack fgsm-rs`` (one step with uniform random start), ``--steps k``,
``--schedule onecycle``.

Run directory layout (every write atomic, :mod:`msparse._io`)::

    last.pt       full training state (model, optimiser, scheduler, epoch, history) -- used by --resume
    best.pt       weights (state dict) of the epoch with the best held-out PGD accuracy
    model.pt      final weights (best epoch; fp16 with --half-weights), what load_model reads
    model.json    model card (:mod:`msparse.training.card`)
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn

from .._device import resolve_device
from .._io import atomic_torch_save
from ..data.batches import ImageBatches
from ..data.loading import load_uint8, to_float
from ..errors import InputError, RunExistsError
from ..models.resnet import resnet18
from .card import finish_run
from .config import RECIPE_KEYS, TrainConfig
from .losses import training_loss
from .metrics import accuracy, pgd_accuracy

__all__ = ["train"]


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


def _training_data(cfg: TrainConfig):
    """uint8 training images (minus the held-out tail), held-out val tensors, and provenance dicts."""
    x, y, info = load_uint8("cifar10", "train", cfg.n_train, cfg.data_dir, source=cfg.data_source,
                            progress=cfg.progress)
    if cfg.val_n >= len(x):
        raise InputError(f"val_n={cfg.val_n} leaves no training images (the source has {len(x)})")
    n_tr = len(x) - cfg.val_n
    x_val = to_float(x[n_tr:])
    y_val = torch.from_numpy(y[n_tr:].copy()).long()
    prov = {"train": info.to_dict(), "train_rows_used": f"0..{n_tr - 1}",
            "validation": f"rows {n_tr}..{len(x) - 1} of the same source, never trained on"}
    return x[:n_tr], y[:n_tr], x_val, y_val, prov


def train(cfg: TrainConfig, *, resume: bool = False, stop_after_epoch: Optional[int] = None,
          log: Callable[[str], None] = print) -> dict:
    """Train (or resume) one model; returns the model card dict.

    ``stop_after_epoch`` ends the run early after that many epochs (as if interrupted), leaving
    ``last.pt`` to resume from; the card is written only when all epochs are done.
    """
    cfg = cfg.resolved()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    amp = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format

    torch.manual_seed(cfg.seed)
    model = resnet18(cfg.activation, cfg.width, cfg.num_classes, cfg.reverse_attention).to(
        device, memory_format=fmt)
    x_tr, y_tr, x_val, y_val, prov = _training_data(cfg)
    batches = ImageBatches(x_tr, y_tr, cfg.batch_size, shuffle=True, augment=cfg.augment, drop_last=True,
                           seed=cfg.seed, device=device, channels_last=cfg.channels_last)
    if len(batches) == 0:
        raise InputError(f"batch_size {cfg.batch_size} is larger than the {len(x_tr)} training images")
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
        mismatch = {k: (saved.get(k), v) for k, v in dataclasses.asdict(cfg).items()
                    if k in RECIPE_KEYS and saved.get(k) != v}
        if mismatch:
            raise InputError(f"cannot resume {last_path}: the recipe differs from the saved run {mismatch}")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start_epoch, history, best, wall = st["epoch"], st["history"], st["best"], st["wall_s"]
        log(f"resumed from {last_path} after epoch {start_epoch}")
    elif not resume and last_path.exists():
        raise RunExistsError(f"{last_path} exists; pass resume=True (--resume) to continue that run "
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
            atomic_torch_save(_cpu_state(model), out / "best.pt")
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                           "scheduler": sched.state_dict(), "epoch": epoch + 1, "history": history, "best": best,
                           "wall_s": wall, "config": dataclasses.asdict(cfg), "provenance": prov}, last_path)
        log(f"epoch {epoch + 1}/{cfg.epochs}: loss {rec['loss']:.4f}  val clean {val_clean:.2%}  "
            f"val PGD-{cfg.val_steps} {val_pgd:.2%}  ({rec['epoch_s']:.0f} s)")

    if end_epoch < cfg.epochs:
        return {"finished": False, "epoch": end_epoch, "history": history, "best": best}
    return finish_run(cfg, model, out, device, prov, history, best, wall, log)


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
