"""The end of a training run: the best epoch's weights become ``model.pt`` and the model card ``model.json``
(architecture, recipe, data provenance, history, wall time, device, test accuracies, the weights' sha256)."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .._device import device_name
from .._io import atomic_torch_save, atomic_write_text, sha256_file
from ..data.loading import load_data
from .config import RECIPE_KEYS, TrainConfig
from .metrics import APGD_CE_IMPLEMENTATION, accuracy, apgd_ce_accuracy, gate_apgd_ce_accuracy

__all__ = ["finish_run"]


def finish_run(cfg: TrainConfig, model: nn.Module, out: Path, device: torch.device, prov: dict, history: list,
               best: dict, wall: float, log: Callable[[str], None] = print) -> dict:
    """Load the best weights, write ``model.pt`` (fp16 with ``cfg.half_weights``) and the model card with test
    accuracies; returns the card with ``"finished": True``."""
    state = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    if cfg.half_weights:
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    atomic_torch_save(state, out / "model.pt")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    # evaluate the stored weights exactly as load_model() returns them (fp32 copy, default memory format)
    model = model.to(memory_format=torch.contiguous_format).eval()
    card = {
        "name": out.name,
        "architecture": {"family": "msparse CIFAR ResNet-18", "activation": cfg.activation, "width": cfg.width,
                         "num_classes": cfg.num_classes, "reverse_attention": cfg.reverse_attention,
                         "input": "(N, 3, 32, 32) in [0, 1], no normalisation"},
        "dataset": "cifar10", "threat_model": "Linf",
        "recipe": {k: v for k, v in dataclasses.asdict(cfg).items() if k in RECIPE_KEYS},
        "data": prov, "epochs": cfg.epochs, "best_epoch": best["epoch"],
        "wall_time_s": round(wall, 1), "device": device_name(device),
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
            ev["apgd_ce_accuracy"] = apgd_ce_accuracy(model, x, y, cfg.eps, "Linf", 0, cfg.eval_batch_size)
            ev["apgd_ce"] = {"iterations": 100, "restarts": 1, "seed": 0, "loss": "ce",
                             "implementation": APGD_CE_IMPLEMENTATION}
        ev["eval_s"] = round(time.time() - t0, 1)
        card["evaluation"] = ev
        log(f"test ({info}): clean {ev['clean_accuracy']:.2%}"
            + (f", APGD-CE {ev['apgd_ce_accuracy']:.2%}" if cfg.eval_apgd else ""))
    atomic_write_text(out / "model.json", json.dumps(card, indent=2) + "\n")
    card["finished"] = True
    return card
