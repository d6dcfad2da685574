"""Model registry: ``load_model`` / ``list_models``.

Names that ``load_model`` understands:

* ``None`` (or ``"msparse/default"``): the adversarially trained CIFAR ResNet-18 (width 16, GELU) shipped
  inside the package -- works offline, weights sha256-verified against its model card.
* ``"pyautoattack/resnet18-standard"``: the standard-trained (not robust) ResNet-18 that the
  ``pyautoattack`` package ships, loaded into this family with ReLU (a control).
* ``"msparse/resnet18-<activation>-w8-<method>"``: the appendix family (Tables 2-8) trained on CPU and
  shipped inside the package (``msparse/assets/family/``; ``list_models()`` names them), sha256-verified.
* ``"resnet18-<activation>[-w<width>][-ra]"`` (e.g. ``"resnet18-gelu"``, ``"resnet18-psilu-w16"``; ``-ra`` =
  ANCRA's reverse-attention variant): the project's CIFAR ResNet-18 family, loaded from ``checkpoint=`` or
  ``model_dir/cifar10/Linf/<name>.pt``.
  ``load_model(checkpoint="runs/x/model.pt")`` reads the architecture from the model card beside it.
* any RobustBench model-zoo name (``"Peng2023Robust"``, ...): loaded with ``robustbench.utils.load_model``
  from ``model_dir/<dataset>/<threat_model>/<name>.pt``; nothing is downloaded unless ``download=True``.

Every returned model is in eval mode and carries ``model.msparse_card`` (a dict: name, source, path,
sha256, and the model card when there is one).
"""
from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
from pathlib import Path
from typing import Optional


import torch
import torch.nn as nn

from ..data import sha256_file
from .resnet import ACTIVATIONS, RAAuxPath, ResNet18, activation_positions, resnet18

__all__ = [
    "load_model", "list_models", "resnet18", "ResNet18", "RAAuxPath", "ACTIVATIONS", "activation_positions",
    "ModelLoadError", "ChecksumError", "DEFAULT_MODEL", "STANDARD_MODEL", "parse_family_name",
    "load_checkpoint", "shipped_family",
]

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL = "msparse/default"
STANDARD_MODEL = "pyautoattack/resnet18-standard"
_DEFAULT_FILE = "resnet18_gelu_w16_fgsmrs"   # msparse/assets/<this>.pt + .json
_STANDARD_SHA256 = "399f52da9f914c323fa5a6096d60f460a3449a59b64a6405200c1e629f8425a7"  # pyautoattack 0.2.0
_DATASETS = ("cifar10", "cifar100", "imagenet")
_THREATS = ("Linf", "L2", "corruptions")
_FAMILY_RE = re.compile(r"^resnet-?18-(?P<act>[a-z]+)(?:-w(?P<width>\d+))?(?P<ra>-ra)?$", re.IGNORECASE)
FAMILY_DIR = ASSET_DIR / "family"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


class ChecksumError(ModelLoadError):
    """A weights file does not match the sha256 recorded in its model card."""




def _check_dataset_threat(dataset: str, threat_model: str) -> None:
    if dataset not in _DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(_DATASETS)}")
    if threat_model not in _THREATS:
        raise ValueError(f"unknown threat model {threat_model!r}; choose one of {', '.join(_THREATS)}")


def parse_family_name(name: str) -> Optional[tuple[str, int]]:
    """``"resnet18-gelu-w16"`` -> ``("gelu", 16)``; ``None`` when ``name`` is not a family name."""
    m = _FAMILY_RE.match(name or "")
    if not m:
        return None
    act = m.group("act").lower()
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {m.group('act')!r} in {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return act, int(m.group("width") or 64)


def _is_ra_name(name: Optional[str]) -> bool:
    m = _FAMILY_RE.match(name or "")
    return bool(m and m.group("ra"))


def load_checkpoint(path, *, sha256: Optional[str] = None) -> dict:
    """Read a state dict (``torch.load(weights_only=True)``) from ``path``; fp16 tensors become fp32.

    Accepts a bare state dict or a training checkpoint with a ``"model"``/``"state_dict"`` entry, and
    strips a ``module.`` prefix.  Verifies ``sha256`` when given.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise ChecksumError(f"checksum mismatch for {path}: sha256 {got} != {sha256} recorded in its model "
                                f"card; the file is corrupted or was replaced")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelLoadError(f"{path} is corrupted or not a PyTorch checkpoint ({_first_sentence(e)})") from e
    if isinstance(obj, dict) and ("model" in obj or "state_dict" in obj) and not any(
            torch.is_tensor(v) for v in obj.values()):
        obj = obj.get("model", obj.get("state_dict"))
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ModelLoadError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    return {(k[7:] if k.startswith("module.") else k): (v.float() if v.is_floating_point() else v)
            for k, v in obj.items()}


def _load_into(model: nn.Module, state: dict, what: str, path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        missing = [k for k in model.state_dict() if k not in state]
        unexpected = [k for k in state if k not in model.state_dict()]
        detail = (f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected keys "
                  f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}") if (missing or unexpected) else \
            str(e).splitlines()[-1].strip()
        raise ModelLoadError(f"the weights in {path} do not fit {what}: {detail}") from e


def _first_sentence(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text.split('. ')[0].rstrip('.')}" if text else type(e).__name__


def _card_beside(path: Path) -> Optional[dict]:
    """The model card of a weights file: ``<stem>.json``, or ``model.json`` when it names this file."""
    same = path.with_suffix(".json")
    if same.is_file():
        return json.loads(same.read_text())
    run_card = path.parent / "model.json"
    if run_card.is_file():
        card = json.loads(run_card.read_text())
        if card.get("weights", {}).get("file") == path.name:
            return card
    return None


def _finish(model: nn.Module, device, info: dict) -> nn.Module:
    model.msparse_card = info
    return model.to(device).eval()


def _load_family(name: Optional[str], path: Path, device, verify: bool, card: Optional[dict] = None) -> nn.Module:
    card = card if card is not None else _card_beside(path)
    arch = (card or {}).get("architecture", {})
    if name is not None:
        act, width = parse_family_name(name)
        ra = _is_ra_name(name)
        want = (act, width, ra)
        got = (arch.get("activation"), arch.get("width"), bool(arch.get("reverse_attention", False)))
        if arch and got != want:
            raise ModelLoadError(f"{name!r} asks for activation={act}, width={width}, reverse_attention={ra} but "
                                 f"the model card of {path} says activation={got[0]}, width={got[1]}, "
                                 f"reverse_attention={got[2]}")
    elif arch:
        act, width, ra = arch["activation"], int(arch["width"]), bool(arch.get("reverse_attention", False))
    else:
        raise ModelLoadError(f"no model card beside {path}; pass a family name such as "
                             f"load_model('resnet18-gelu-w16', checkpoint=...) to say which architecture it is")
    sha = (card or {}).get("weights", {}).get("sha256") if verify else None
    model = resnet18(act, width, int(arch.get("num_classes", 10)), reverse_attention=ra)
    what = f"resnet18 activation={act} width={width}" + (" reverse_attention=True" if ra else "")
    _load_into(model, load_checkpoint(path, sha256=sha), what, path)
    default_name = f"resnet18-{act}-w{width}" + ("-ra" if ra else "")
    return _finish(model, device, {"name": name or (card or {}).get("name") or default_name,
                                   "source": "msparse ResNet-18 family checkpoint", "path": str(path),
                                   "sha256": sha256_file(path), "verified": sha is not None, "card": card})


def _load_default(device, verify: bool) -> nn.Module:
    path, card_path = ASSET_DIR / f"{_DEFAULT_FILE}.pt", ASSET_DIR / f"{_DEFAULT_FILE}.json"
    if not path.is_file() or not card_path.is_file():
        raise ModelLoadError(f"the shipped default model is missing ({path}); reinstall msparse or train it "
                             f"with scripts/train_default.sh")
    card = json.loads(card_path.read_text())
    model = _load_family(None, path, device, verify=True if verify else False, card=card)
    model.msparse_card.update(name=DEFAULT_MODEL, source="msparse shipped default (offline)")
    return model


def shipped_family() -> dict[str, Path]:
    """``{"msparse/<name>": weights path}`` of the appendix family models shipped in the package."""
    if not FAMILY_DIR.is_dir():
        return {}
    return {f"msparse/{p.stem}": p for p in sorted(FAMILY_DIR.glob("*.pt")) if p.with_suffix(".json").is_file()}


def _load_shipped(name: str, device, verify: bool) -> nn.Module:
    path = shipped_family()[name]
    card = json.loads(path.with_suffix(".json").read_text())
    model = _load_family(None, path, device, verify, card=card)
    model.msparse_card.update(name=name, source="msparse shipped appendix family (offline)")
    return model


def _load_standard(device) -> nn.Module:
    import pyautoattack

    path = Path(pyautoattack.__file__).resolve().parent / "examples" / "model_test.pt"
    if not path.is_file():
        raise ModelLoadError(f"pyautoattack does not ship examples/model_test.pt here ({path}); "
                             f"reinstall pyautoattack==0.2.0")
    got = sha256_file(path)
    if got != _STANDARD_SHA256:
        raise ChecksumError(f"{path} has sha256 {got}, not the pyautoattack 0.2.0 file ({_STANDARD_SHA256}); "
                            f"install pyautoattack==0.2.0")
    model = resnet18("relu", 64, 10)
    _load_into(model, load_checkpoint(path), "resnet18 activation=relu width=64", path)
    return _finish(model, device, {"name": STANDARD_MODEL, "sha256": got, "path": str(path), "verified": True,
                                   "source": "pyautoattack examples/model_test.pt (standard training, not robust)",
                                   "card": None})


def _robustbench_files(name: str, entry: dict, folder: Path) -> list[Path]:
    if isinstance(entry.get("gdrive_id"), list):
        return [folder / f"{name}.pt_m{i}.pt" for i in range(len(entry["gdrive_id"]))]
    return [folder / f"{name}.pt"]


def _load_robustbench(name: str, dataset: str, threat_model: str, model_dir, device, download: bool) -> nn.Module:
    from msparse._compat import import_robustbench, robustbench_entry

    rb = import_robustbench()
    import robustbench.utils as rbu  # noqa: F401  (after the alias)
    import timm

    try:
        entry = robustbench_entry(name, dataset, threat_model)
    except KeyError as e:
        raise ModelLoadError(_unknown_model_message(name, dataset, threat_model, str(e.args[0]))) from None
    ds_value, tm_value = _rb_values(dataset, threat_model)
    timm_name = f"{name.lower().replace('-', '_')}_{ds_value.lower()}_{tm_value.lower()}"
    if timm.is_model(timm_name) and not download:
        raise ModelLoadError(f"RobustBench model {name!r} is distributed through timm / the Hugging Face hub "
                             f"({timm_name}); msparse never downloads implicitly: pass download=True with internet")
    folder = Path(model_dir) / ds_value / tm_value
    files = _robustbench_files(name, entry, folder)
    missing = [f for f in files if not f.is_file()]
    if missing and not download:
        raise ModelLoadError(
            f"checkpoint for RobustBench model {name!r} ({dataset}/{threat_model}) not found: expected "
            f"{', '.join(map(str, missing))}. msparse never downloads implicitly: put the file there, or pass "
            f"download=True (needs internet; RobustBench fetches it from Google Drive)")
    try:
        model = rb.utils.load_model(name, model_dir=str(model_dir), dataset=ds_value, threat_model=tm_value)
    except Exception as e:
        for f in missing:  # never leave a half-written download behind
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        if not missing:
            raise ModelLoadError(f"could not load RobustBench model {name!r} from {', '.join(map(str, files))}: "
                                 f"the file is corrupted or does not match the architecture "
                                 f"({_first_sentence(e)})") from e
        raise ModelLoadError(f"downloading RobustBench model {name!r} failed ({type(e).__name__}: {e}); no partial "
                             f"file was kept") from e
    return _finish(model, device, {"name": name, "source": f"RobustBench model zoo ({dataset}/{threat_model})",
                                   "path": ", ".join(map(str, files)),
                                   "sha256": ", ".join(sha256_file(f) for f in files if f.is_file()),
                                   "verified": False, "card": None})


def _rb_values(dataset: str, threat_model: str) -> tuple[str, str]:
    from msparse._compat import robustbench_enums

    ds, tm = robustbench_enums(dataset, threat_model)
    return ds.value, tm.value


def _own_names() -> list[str]:
    return [DEFAULT_MODEL, STANDARD_MODEL, *shipped_family()]


def _unknown_model_message(name, dataset, threat_model, detail="") -> str:
    pool = _own_names() + list_models(dataset, threat_model, include_robustbench=True)
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return (f"unknown model {name!r} for {dataset}/{threat_model}: not an msparse model, not a family name "
            f"like 'resnet18-gelu-w16', and not in RobustBench's {dataset}/{threat_model} zoo.{hint} "
            f"See msparse.list_models({dataset!r}, {threat_model!r}).")


def load_model(name: Optional[str] = None, dataset: str = "cifar10", threat_model: str = "Linf",
               model_dir="models", *, checkpoint=None, device="cpu", download: bool = False,
               verify: bool = True, pretrained: bool = True) -> nn.Module:
    """Load a model by name (see the module docstring); returns it in eval mode on ``device``.

    The model maps images (N, 3, H, W) in [0, 1] to logits (N, classes).  ``checkpoint`` loads a family
    model from a file (its card, ``<file>.json`` or ``model.json`` beside it, gives the architecture and
    sha256).  ``verify=False`` skips the sha256 check of cards.  ``download=True`` lets RobustBench fetch a
    missing checkpoint (internet); otherwise a missing file is an error.  ``pretrained=False`` returns the
    architecture with random weights (family or RobustBench names; nothing is read or downloaded).
    """
    _check_dataset_threat(dataset, threat_model)
    own_ctx = name in (None, DEFAULT_MODEL, STANDARD_MODEL) or checkpoint is not None or (
        name is not None and (_FAMILY_RE.match(name) or name.startswith("msparse/")))
    if own_ctx and (dataset, threat_model) != ("cifar10", "Linf"):
        raise ModelLoadError(f"{name or DEFAULT_MODEL!r} is a CIFAR-10 L-inf model; got dataset={dataset!r}, "
                             f"threat_model={threat_model!r}")
    if not pretrained:
        if checkpoint is not None:
            raise ValueError("pretrained=False builds random weights; do not pass checkpoint=")
        return _random_architecture(name, dataset, threat_model, device)
    if checkpoint is not None:
        return _load_family(name, Path(checkpoint), device, verify)
    if name is None or name == DEFAULT_MODEL:
        return _load_default(device, verify)
    if name == STANDARD_MODEL:
        return _load_standard(device)
    if name in shipped_family():
        return _load_shipped(name, device, verify)
    if name.startswith("msparse/"):
        raise ModelLoadError(_unknown_model_message(name, dataset, threat_model))
    if parse_family_name(name) is not None:
        path = Path(model_dir) / dataset / threat_model / f"{name}.pt"
        if not path.is_file():
            raise ModelLoadError(
                f"no checkpoint for {name!r}: expected {path} (or pass checkpoint=PATH). Train one with "
                f"`python -m msparse train --activation {parse_family_name(name)[0]} --width "
                f"{parse_family_name(name)[1]} --out RUN_DIR` and copy RUN_DIR/model.pt and model.json there "
                f"as {name}.pt / {name}.json")
        return _load_family(name, path, device, verify)
    return _load_robustbench(name, dataset, threat_model, model_dir, device, download)


def _random_architecture(name, dataset, threat_model, device) -> nn.Module:
    if name is None or name == DEFAULT_MODEL:
        name = "resnet18-gelu-w16"
    elif name == STANDARD_MODEL:
        name = "resnet18-relu"
    elif name in shipped_family():
        arch = json.loads(shipped_family()[name].with_suffix(".json").read_text())["architecture"]
        name = f"resnet18-{arch['activation']}-w{arch['width']}" + ("-ra" if arch.get("reverse_attention") else "")
    fam = parse_family_name(name)
    if fam is not None:
        model = resnet18(fam[0], fam[1], 10, reverse_attention=_is_ra_name(name))
        src = "msparse ResNet-18 family, random weights"
    else:
        from msparse._compat import robustbench_architecture

        try:
            model = robustbench_architecture(name, dataset, threat_model)
        except KeyError:
            raise ModelLoadError(_unknown_model_message(name, dataset, threat_model)) from None
        src = f"RobustBench architecture ({dataset}/{threat_model}), random weights"
    return _finish(model, device, {"name": name, "source": src, "path": None, "sha256": None,
                                   "verified": False, "card": None})


def list_models(dataset: str = "cifar10", threat_model: str = "Linf", *, include_robustbench: bool = True) -> list[str]:
    """Names ``load_model`` accepts for this dataset/threat model (msparse's own first, then RobustBench's).

    Family names (``"resnet18-<activation>[-w<width>]"``) are accepted too but not listed.
    """
    _check_dataset_threat(dataset, threat_model)
    names = list(_own_names()) if (dataset, threat_model) == ("cifar10", "Linf") else []
    if include_robustbench:
        from msparse._compat import import_robustbench, robustbench_enums

        import_robustbench()
        from robustbench.model_zoo.models import model_dicts

        ds, tm = robustbench_enums(dataset, threat_model)
        names += sorted(model_dicts[ds].get(tm, {}))
    return names
