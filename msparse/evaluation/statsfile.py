"""The statistics file: every site's mean, variance and sample count, saved once and loaded for evaluation.

``python -m msparse calibrate ... --out stats.pt`` writes one; ``evaluate``/``sweep --stats stats.pt`` reads it.
The file is a ``torch.save`` dict ``{"format": "msparse-stats-2", "model_checksum": <host-weights checksum>,
"arch": <architecture fingerprint>, "sites": {site name: {"mean", "var", "n_samples"}}, <labels>}``, written
atomically. Statistics belong to one model: a file is refused for a model with other weights, another architecture
(:mod:`msparse.evaluation.fingerprint`: ``random:resnet18-gelu-w16`` and ``random:resnet18-relu-w16`` share their
weights, not their activations' statistics) or other sites (statistics of one family member loaded into another
ran silently and cost 4.7 points of clean accuracy), and nothing is loaded unless every site's statistics are
valid. Files written before ``arch`` existed are still read, checked by weights and sites only.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .._io import atomic_torch_save
from ..core.operator import MeanSparse
from ..core.placement import named_operators
from ..errors import InputError, MissingFileError
from .fingerprint import fingerprint

__all__ = ["STATS_FORMAT", "save_stats", "load_stats"]

STATS_FORMAT = "msparse-stats-2"
_OLD_FORMATS = ("msparse-stats-1",)   # written before files named their model


def save_stats(model: nn.Module, path: str | os.PathLike, /, **meta) -> None:
    """Save every site's statistics (mean, var, n_samples) with labels (``meta``, stored as strings), atomically."""
    sites = {n: {"mean": m.mean.detach().cpu(), "var": m.var.detach().cpu(),
                 "n_samples": m.n_samples.detach().cpu()} for n, m in named_operators(model)}
    from .evaluate import host_checksum

    atomic_torch_save({"format": STATS_FORMAT, "model_checksum": host_checksum(model), "arch": fingerprint(model),
                       "sites": sites, **{k: str(v) for k, v in meta.items()}}, path)


def load_stats(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load statistics saved by :func:`save_stats` into the sites of ``model``; returns the labels.

    Raises :class:`~msparse.errors.MissingFileError` for a missing file and :class:`~msparse.errors.InputError`
    for a file that is not a statistics file or was made for other sites.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"statistics file {path}: no such file (make one with `msparse calibrate`)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:   # whatever the unpickler raises, the file is not ours
        raise InputError(f"{path}: not an msparse statistics file ({type(e).__name__})") from e
    if isinstance(obj, dict) and obj.get("format") in _OLD_FORMATS:
        raise InputError(f"statistics file {path} does not say which model it belongs to (an older format): "
                         "recalibrate with `msparse calibrate ... --out FILE`")
    if not isinstance(obj, dict) or obj.get("format") != STATS_FORMAT:
        raise InputError(f"{path}: not an msparse statistics file")
    from .evaluate import host_checksum

    if obj.get("model_checksum") != host_checksum(model):
        raise InputError(f"statistics file {path} belongs to another model (weights checksum "
                         f"{str(obj.get('model_checksum'))[:12]}, this model {host_checksum(model)[:12]}"
                         f"{', labelled ' + repr(obj['model']) if obj.get('model') else ''}): "
                         "calibrate this model with `msparse calibrate`")
    if "arch" in obj and obj["arch"] != fingerprint(model):   # files written before the fingerprint have none
        raise InputError(f"statistics file {path} belongs to another architecture with the same weights "
                         f"(fingerprint {str(obj['arch'])[:12]}, this model {fingerprint(model)[:12]}"
                         f"{', labelled ' + repr(obj['model']) if obj.get('model') else ''}; e.g. another "
                         "activation): calibrate this model with `msparse calibrate`")
    mods = dict(named_operators(model))
    if not isinstance(obj.get("sites"), dict) or not all(isinstance(s, dict) for s in obj["sites"].values()):
        raise InputError(f"statistics file {path} has no table of sites ('sites' must map each site name to its "
                         "mean, var and n_samples): not a file `msparse calibrate` wrote; recalibrate")
    missing = sorted(set(mods) - set(obj["sites"]))
    extra = sorted(set(obj["sites"]) - set(mods))
    if missing or extra:
        raise InputError(f"statistics file {path} was made for other sites ({len(extra)} unknown, "
                         f"{len(missing)} missing, e.g. {(extra or missing)[0]!r}); use the same placement "
                         f"as for calibrate")
    for name, m in mods.items():   # all or nothing: every site's statistics are checked before any is loaded
        s = obj["sites"][name]
        try:
            MeanSparse(m.channels, m.layout).load_statistics(s["mean"], s["var"], int(s["n_samples"]))
        except KeyError as e:
            raise InputError(f"statistics file {path}, site {name!r}: no {e} entry") from None
        except (InputError, TypeError, ValueError, RuntimeError) as e:   # RuntimeError: torch on a wrong shape
            raise InputError(f"statistics file {path}, site {name!r}: {e}") from None
    for name, m in mods.items():
        s = obj["sites"][name]
        m.load_statistics(s["mean"], s["var"], int(s["n_samples"]))
    return {k: v for k, v in obj.items() if k not in ("sites", "format", "model_checksum", "arch")}
