"""What the command line loads from its arguments: the model (``--model``/``--checkpoint``/``--weights``,
through the models' front door :mod:`msparse.models.front`), its MeanSparse placement (``--placement``, ``auto``
= :func:`msparse.models.front.default_placement`), its statistics (``--stats`` or ``--calib-data``) and the
images (``--data``).

Bad input raises :class:`~msparse.errors.UsageError` naming the option (one line, exit 2 in
:func:`msparse.cli.entry.main`).
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

from .._device import resolve_device
from ..core.calibration import calibrate
from ..core.placement import sites, sparsify
from ..data.loading import load_data
from ..errors import DataError, UsageError
from ..evaluation.statsfile import load_stats
from ..models.front import default_placement, is_random
from ..models.front import load as front_load


def load_model_arg(spec: str | None, weights: str | None, device, *, dataset: str = "cifar10",
                   threat_model: str = "Linf", model_dir: str = "models", checkpoint=None):
    """``NAME`` (any name of the models' front door :func:`msparse.models.front.load`: the registry's names,
    ``random:<name>``, a ``*.pt`` checkpoint; None = the default model) or ``module:callable`` (a factory
    returning a module); ``weights`` = a state_dict file loaded on top."""
    if spec is not None and ":" in spec and "/" not in spec.split(":", 1)[0] and not Path(spec).exists() \
            and not is_random(spec):
        mod_name, fn_name = spec.split(":", 1)
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            raise UsageError(f"cannot import {mod_name!r} for --model {spec}: {e}") from None
        fn = getattr(mod, fn_name, None)
        if not callable(fn):
            raise UsageError(f"--model {spec}: {mod_name} has no callable {fn_name!r}")
        model = fn()
    else:
        model = front_load(spec, dataset, threat_model, model_dir, checkpoint=checkpoint, device=str(device))
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"--model {spec} did not give a torch.nn.Module")
    if spec is None:
        spec = "default model"
    if weights:
        p = Path(weights)
        if not p.is_file():
            raise UsageError(f"--weights {weights}: no such file")
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:   # whatever the unpickler raises, the file is not a state dict
            raise UsageError(f"--weights {weights}: not a PyTorch state dict ({type(e).__name__})") from None
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        try:
            model.load_state_dict(sd)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise UsageError(f"--weights {weights} does not fit the model: {first}") from None
    return model.to(device).eval()


def load_data_arg(spec: str, n: int | None, start: int = 0):
    """``cifar10:test`` / ``cifar10:train`` / ``cifar100:test`` ... or a ``.pt`` file with tensors
    ``{"x": [N, C, H, W] in [0, 1], "y": [N]}``. Returns (x, y, label)."""
    p = Path(spec)
    if spec.endswith(".pt") or p.is_file():
        if not p.is_file():
            raise UsageError(f"--data {spec}: no such file")
        try:
            d = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:   # whatever the unpickler raises, the file is not a tensor file
            raise UsageError(f"--data {spec}: not a PyTorch tensor file ({type(e).__name__})") from None
        if not isinstance(d, dict) or "x" not in d or "y" not in d:
            raise UsageError(f"--data {spec}: expected a dict with tensors 'x' and 'y'")
        x, y = d["x"], d["y"]
        x, y = x[start:], y[start:]
        if n is not None:
            x, y = x[:n], y[:n]
        return x, y, f"{p.name}[{start}:{start + len(x)}]"
    if ":" not in spec:
        raise UsageError(f"--data {spec!r}: write DATASET:SPLIT (e.g. cifar10:test) or a .pt file")
    ds, split = spec.split(":", 1)
    try:
        x, y, info = load_data(ds, split, n=n, start=start, return_info=True)
    except DataError as e:   # its message explains where to get the data; the first line says what is missing
        raise UsageError(str(e).strip().splitlines()[0]) from None
    return x, y, str(info)


def _dataset(args) -> str:
    """The dataset named by ``--data`` (``cifar10`` for a tensor file or no ``--data``)."""
    data = getattr(args, "data", "") or ""
    return data.split(":", 1)[0] if ":" in data and not data.endswith(".pt") else "cifar10"


def model_from_args(args, device):
    """The model of ``--model``/``--weights``/``--checkpoint``/``--model-dir`` for ``--data``'s dataset."""
    return load_model_arg(args.model, args.weights, device, dataset=_dataset(args),
                          threat_model=getattr(args, "norm", "Linf"), model_dir=args.model_dir,
                          checkpoint=args.checkpoint)


def resolve_placement(placement: str, model, model_name: str | None, dataset: str,
                      threat_model: str) -> str:
    """``auto`` -> the model's default placement (:func:`msparse.models.front.default_placement`: the paper's
    preset for this model if there is one, v1 first, else ``activations``); anything else is returned unchanged."""
    if placement != "auto":
        return placement
    return default_placement(model, model_name, dataset, threat_model)


def sparsify_from_args(args, model) -> None:
    """Put MeanSparse where ``--placement`` says (unless the model has sites already or it is ``none``); the
    placement actually used replaces ``args.placement`` (it is written into records and statistics files)."""
    if args.placement == "none" or sites(model):
        return
    placement = resolve_placement(args.placement, model, args.model, _dataset(args),
                                  getattr(args, "norm", "Linf"))
    sparsify(model, placement)
    args.placement = placement


def model_label(args) -> str:
    """The model's name in records and statistics files."""
    return args.model or (f"checkpoint:{args.checkpoint}" if args.checkpoint else "msparse/default")


def prepare(args, need_stats: bool):
    """Model (sparsified if needed, statistics loaded), data and labels from common arguments:
    ``(model, x, y, data label, statistics label)``."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = model_from_args(args, device)
    sparsify_from_args(args, model)
    stats_label = None
    if need_stats:
        if not sites(model):
            raise UsageError("alpha > 0 needs MeanSparse sites: drop --placement none")
        if args.stats:
            stats_label = load_stats(model, args.stats).get("mode")
        elif args.calib_data:
            xc, _, _ = load_data_arg(args.calib_data, args.calib_n)
            calibrate(model, xc, mode=args.stats_mode, batch_size=args.calib_batch_size,
                      progress=True)
            stats_label = args.stats_mode
        else:
            raise UsageError("alpha > 0 needs statistics: pass --stats FILE (from `msparse "
                             "calibrate`) or --calib-data cifar10:train")
    x, y, label = load_data_arg(args.data, args.n, args.start)
    return model, x, y, label, stats_label
