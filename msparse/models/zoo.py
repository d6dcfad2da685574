"""The models msparse knows by name, registered in the order :mod:`msparse.models.registry` tries them.

1. ``"msparse/default"`` (also ``load_model()``): the adversarially trained CIFAR ResNet-18 (width 16, GELU)
   shipped inside the package -- works offline, weights sha256-verified against its model card.
2. ``"pyautoattack/resnet18-standard"``: the standard-trained (not robust) ResNet-18 that the ``pyautoattack``
   package ships, loaded into this family with ReLU (a control).
3. ``"msparse/resnet18-<activation>-w8-<method>"``: the appendix family (paper Tables 2-8) trained on CPU and
   shipped inside the package (``msparse/assets/family/``), sha256-verified.
4. ``"resnet18-<activation>[-w<width>][-ra]"`` (e.g. ``"resnet18-gelu"``, ``"resnet18-psilu-w16"``; ``-ra`` =
   ANCRA's reverse-attention variant): the project's CIFAR ResNet-18 family, loaded from ``checkpoint=`` or
   ``model_dir/cifar10/Linf/<name>.pt``. ``load_model(checkpoint="runs/x/model.pt")`` reads the architecture
   from the model card beside it.
5. any RobustBench model-zoo name (``"Peng2023Robust"``, ...): loaded with ``robustbench.utils.load_model``
   from ``model_dir/<dataset>/<threat_model>/<name>.pt``; nothing is downloaded unless ``download=True``.

Every returned model is in eval mode and carries ``model.msparse_card`` (a dict: name, source, path,
sha256, verified, and the model card when there is one).
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Optional

import torch.nn as nn

from .._io import sha256_file
from ..errors import ChecksumError, ModelLoadError, UnknownNameError
from .checkpoints import card_beside, finish, first_sentence, load_checkpoint, load_into, read_card
from .registry import LoadRequest, register_model
from .resnet import ACTIVATIONS, resnet18

__all__ = ["ASSET_DIR", "FAMILY_DIR", "DEFAULT_MODEL", "STANDARD_MODEL", "FAMILY_PATTERN", "parse_family_name",
           "family_name", "shipped_family", "weights_only_torch_load"]

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets"
FAMILY_DIR = ASSET_DIR / "family"
DEFAULT_MODEL = "msparse/default"
STANDARD_MODEL = "pyautoattack/resnet18-standard"
FAMILY_PATTERN = "resnet18-<activation>[-w<width>][-ra]"
DEFAULT_FILE = "resnet18_gelu_w16_fgsmrs"   # msparse/assets/<this>.pt + .json
_STANDARD_SHA256 = "399f52da9f914c323fa5a6096d60f460a3449a59b64a6405200c1e629f8425a7"  # pyautoattack 0.2.0
_FAMILY_RE = re.compile(r"^resnet-?18-(?P<act>[a-z]+)(?:-w(?P<width>\d+))?(?P<ra>-ra)?$", re.IGNORECASE)


# ------------------------------------------------------------------------------------------------
# the family's names
def parse_family_name(name: str) -> Optional[tuple[str, int]]:
    """``"resnet18-gelu-w16"`` -> ``("gelu", 16)``; ``None`` when ``name`` is not a family name.

    Raises :class:`~msparse.errors.UnknownNameError` for a family name with an unknown activation.
    """
    m = _FAMILY_RE.match(name or "")
    if not m:
        return None
    act = m.group("act").lower()
    if act not in ACTIVATIONS:
        raise UnknownNameError(f"unknown activation {m.group('act')!r} in {name!r}; choose one of "
                               f"{', '.join(ACTIVATIONS)}")
    return act, int(m.group("width") or 64)


def _is_ra_name(name: Optional[str]) -> bool:
    m = _FAMILY_RE.match(name or "")
    return bool(m and m.group("ra"))


def family_name(activation: str, width: int, reverse_attention: bool = False) -> str:
    """The family name of an architecture: ``("gelu", 16, False)`` -> ``"resnet18-gelu-w16"``."""
    return f"resnet18-{activation}-w{width}" + ("-ra" if reverse_attention else "")


def shipped_family() -> dict[str, Path]:
    """``{"msparse/<name>": weights path}`` of the appendix family models shipped in the package."""
    if not FAMILY_DIR.is_dir():
        return {}
    return {f"msparse/{p.stem}": p for p in sorted(FAMILY_DIR.glob("*.pt")) if p.with_suffix(".json").is_file()}


# ------------------------------------------------------------------------------------------------
# loading the family
def _random_family(name: str, request: LoadRequest) -> nn.Module:
    act, width = parse_family_name(name)
    model = resnet18(act, width, 10, reverse_attention=_is_ra_name(name))
    return finish(model, request.device, {"name": name, "source": "msparse ResNet-18 family, random weights",
                                          "path": None, "sha256": None, "verified": False, "card": None})


def _load_family(name: Optional[str], path: Path, request: LoadRequest, card: Optional[dict] = None) -> nn.Module:
    """A family checkpoint at ``path``; the architecture from ``name`` (checked against the card) or the card."""
    card = card if card is not None else card_beside(path)
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
    sha = (card or {}).get("weights", {}).get("sha256") if request.verify else None
    model = resnet18(act, width, int(arch.get("num_classes", 10)), reverse_attention=ra)
    what = f"resnet18 activation={act} width={width}" + (" reverse_attention=True" if ra else "")
    load_into(model, load_checkpoint(path, sha256=sha), what, path)
    return finish(model, request.device, {"name": name or (card or {}).get("name") or family_name(act, width, ra),
                                          "source": "msparse ResNet-18 family checkpoint", "path": str(path),
                                          "sha256": sha256_file(path), "verified": sha is not None, "card": card})


def _load_shipped(name: str, path: Path, request: LoadRequest, pretrained: bool, source: str) -> nn.Module:
    """A model shipped in ``msparse/assets`` (weights + model card), or its architecture with random weights."""
    card_path = path.with_suffix(".json")
    if not path.is_file() or not card_path.is_file():
        raise ModelLoadError(f"the shipped model {name!r} is missing ({path}); reinstall msparse")
    card = read_card(card_path)
    if not pretrained:
        arch = card["architecture"]
        return _random_family(family_name(arch["activation"], arch["width"], arch.get("reverse_attention", False)),
                              request)
    model = _load_family(None, path, request, card=card)
    model.msparse_card.update(name=name, source=source)
    return model


# ------------------------------------------------------------------------------------------------
# the entries, in resolution order
@register_model(DEFAULT_MODEL, kind="shipped", default=True,
                summary="adversarially trained CIFAR-10 ResNet-18 (GELU, width 16) shipped in the package")
def _default(name: str, request: LoadRequest, pretrained: bool) -> nn.Module:
    return _load_shipped(name, ASSET_DIR / f"{DEFAULT_FILE}.pt", request, pretrained,
                         "msparse shipped default (offline)")


@register_model(STANDARD_MODEL, kind="control",
                summary="standard-trained (not robust) ResNet-18 shipped by pyautoattack, loaded with ReLU")
def _standard(name: str, request: LoadRequest, pretrained: bool) -> nn.Module:
    if not pretrained:
        return _random_family("resnet18-relu", request)
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
    load_into(model, load_checkpoint(path), "resnet18 activation=relu width=64", path)
    return finish(model, request.device, {"name": STANDARD_MODEL, "sha256": got, "path": str(path), "verified": True,
                                          "source": "pyautoattack examples/model_test.pt (standard training, "
                                                    "not robust)", "card": None})


@register_model("msparse/<family member>", kind="shipped", example="msparse/resnet18-gelu-w8-pgdat",
                summary="the appendix family (Tables 2-8): ResNet-18 width 8, six activations, PGD-AT / TRADES "
                        "/ ANCRA, shipped in the package",
                names=lambda dataset, threat_model: list(shipped_family()),
                accepts=lambda name, dataset, threat_model: name in shipped_family())
def _shipped_member(name: str, request: LoadRequest, pretrained: bool) -> nn.Module:
    return _load_shipped(name, shipped_family()[name], request, pretrained,
                         "msparse shipped appendix family (offline)")


@register_model(FAMILY_PATTERN, kind="family", example="resnet18-gelu-w4", from_checkpoint=True,
                summary=f"the project's CIFAR ResNet-18 family ({', '.join(ACTIVATIONS)}), from a checkpoint",
                names=lambda dataset, threat_model: [],
                accepts=lambda name, dataset, threat_model: parse_family_name(name) is not None)
def _family(name: Optional[str], request: LoadRequest, pretrained: bool) -> nn.Module:
    if not pretrained:
        return _random_family(name, request)
    if request.checkpoint is not None:
        return _load_family(name, request.checkpoint, request)
    path = request.model_dir / request.dataset / request.threat_model / f"{name}.pt"
    if not path.is_file():
        act, width = parse_family_name(name)
        raise ModelLoadError(
            f"no checkpoint for {name!r}: expected {path} (or pass checkpoint=PATH). Train one with "
            f"`python -m msparse train --activation {act} --width {width} --out RUN_DIR` and copy RUN_DIR/model.pt "
            f"and model.json there as {name}.pt / {name}.json")
    return _load_family(name, path, request)


@contextlib.contextmanager
def weights_only_torch_load():
    """Inside the block, every ``torch.load`` call loads with ``weights_only=True`` whatever the caller passes
    and whatever torch's default (``True`` only from torch 2.6; msparse supports torch >= 2.3).

    ``robustbench.utils.load_model`` calls ``torch.load`` itself, without ``weights_only``: this makes a planted
    or tampered RobustBench checkpoint fail to unpickle (a :class:`~msparse.errors.ModelLoadError`) instead of
    running code, under every torch msparse supports. ``torch.load`` is restored on exit, also on errors; the
    patch is process-wide while the block runs (the loader is not called from several threads).
    """
    import torch

    original = torch.load

    def load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


def _robustbench_names(dataset: str, threat_model: str) -> list[str]:
    from .._compat import robustbench_names

    return robustbench_names(dataset, threat_model)


@register_model("<RobustBench model>", kind="robustbench", datasets=None, example="Addepalli2022Efficient_RN18",
                summary="any model of RobustBench's zoo, from model_dir/<dataset>/<threat_model>/<name>.pt",
                names=_robustbench_names,
                accepts=lambda name, dataset, threat_model: name in _robustbench_names(dataset, threat_model))
def _robustbench(name: str, request: LoadRequest, pretrained: bool) -> nn.Module:
    from .._compat import import_robustbench, robustbench_architecture, robustbench_entry, robustbench_enums

    dataset, threat_model = request.dataset, request.threat_model
    if not pretrained:
        return finish(robustbench_architecture(name, dataset, threat_model), request.device,
                      {"name": name, "source": f"RobustBench architecture ({dataset}/{threat_model}), random weights",
                       "path": None, "sha256": None, "verified": False, "card": None})
    rb = import_robustbench()
    import robustbench.utils  # noqa: F401  (after the autoattack alias)
    import timm

    entry = robustbench_entry(name, dataset, threat_model)
    ds, tm = (e.value for e in robustbench_enums(dataset, threat_model))
    timm_name = f"{name.lower().replace('-', '_')}_{ds.lower()}_{tm.lower()}"
    if timm.is_model(timm_name) and not request.download:
        raise ModelLoadError(f"RobustBench model {name!r} is distributed through timm / the Hugging Face hub "
                             f"({timm_name}); msparse never downloads implicitly: pass download=True with internet")
    folder = request.model_dir / ds / tm
    if isinstance(entry.get("gdrive_id"), list):
        files = [folder / f"{name}.pt_m{i}.pt" for i in range(len(entry["gdrive_id"]))]
    else:
        files = [folder / f"{name}.pt"]
    missing = [f for f in files if not f.is_file()]
    if missing and not request.download:
        raise ModelLoadError(
            f"checkpoint for RobustBench model {name!r} ({dataset}/{threat_model}) not found: expected "
            f"{', '.join(map(str, missing))}. msparse never downloads implicitly: put the file there, or pass "
            f"download=True (needs internet; RobustBench fetches it from Google Drive)")
    try:
        with weights_only_torch_load():
            model = rb.utils.load_model(name, model_dir=str(request.model_dir), dataset=ds, threat_model=tm)
    except Exception as e:   # whatever RobustBench raises, the file is the problem
        for f in missing:  # never leave a half-written download behind
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        if not missing:
            raise ModelLoadError(f"could not load RobustBench model {name!r} from {', '.join(map(str, files))}: "
                                 f"the file is corrupted or does not match the architecture "
                                 f"({first_sentence(e)})") from e
        raise ModelLoadError(f"downloading RobustBench model {name!r} failed ({type(e).__name__}: {e}); no partial "
                             f"file was kept") from e
    return finish(model, request.device, {"name": name, "source": f"RobustBench model zoo ({dataset}/{threat_model})",
                                          "path": ", ".join(map(str, files)),
                                          "sha256": ", ".join(sha256_file(f) for f in files if f.is_file()),
                                          "verified": False, "card": None})
