"""Faults, as a table: every kind of input the API, the command line and the notebooks accept, each bad value
raising the exact msparse error with a message that names the value; then fault injection on the results store
(SIGKILL mid-write, a full disk, a read-only store, two concurrent writers). The command line has its own table
(:data:`CLI_CASES`): every option value it cannot use is one line on stderr and exit status 2, before any work.

Related checks that live elsewhere (not repeated here): a store path that is a file or read-only fails before any
work through the CLI (test_cli.py::test_an_unwritable_store_fails_before_any_work_in_one_line); reading a damaged
record never rewrites it (test_cli.py::test_results_listing_never_changes_the_store_and_repair_is_explicit);
a planted CIFAR batch never runs (test_safe_unpickle.py); statistics files all or nothing (test_statsfile.py).
"""
from __future__ import annotations

import ast
import contextlib
import errno
import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import msparse as ms
from msparse import errors as E
from msparse.attacks.base import parse_attack
from msparse.book import build_book, run_notebooks
from msparse.cli import main
from msparse.core import placement as pl
from msparse.evaluation.statsfile import load_stats, save_stats
from msparse.evaluation import executor as ex
from msparse.evaluation.hashing import content_hash
from msparse.evaluation.store import Store
from msparse.experiments import plan as xplan
from msparse.experiments import setup as es
from msparse.models.resnet import resnet18

from test_attacks import make_arch, make_data  # noqa: F401  (make_arch: the CLI's --model factory)

REPO = Path(__file__).resolve().parent.parent


# ================================================================================================
# cheap fixtures: a tiny sparsified CNN, 8 images, a family checkpoint with its card, a statistics file
# ================================================================================================
class _Planted:
    """A pickle that creates a folder when unpickled without weights_only (the stand-in for os.system)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    model = make_arch().eval()
    ms.sparsify(model, "activations", input_size=(3, 8, 8))
    ms.calibrate(model, make_data(32, 1)[0])
    return model


def _card(path: Path, **arch) -> dict:
    return {"name": "resnet18-gelu-w4", "architecture": {"activation": "gelu", "width": 4, "num_classes": 10, **arch},
            "weights": {"file": path.name, "sha256": ms.models.checkpoints.sha256_file(path)}}


@pytest.fixture(scope="module")
def f(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    ns = SimpleNamespace(dir=d, model=_tiny(0))
    ns.x, ns.y = make_data(8, 2)
    # a family checkpoint and its card; variants: corrupt bytes, a list, a planted pickle, cards with faults
    torch.manual_seed(0)
    good = d / "ck.pt"
    torch.save(resnet18("gelu", 4).state_dict(), good)
    (d / "ck.json").write_text(json.dumps(_card(good)))
    ns.ck = good
    for name, write in {"corrupt": lambda p: p.write_bytes(b"PK\x03\x04 not a zip"),
                        "list": lambda p: torch.save([1, 2, 3], p),
                        "planted": lambda p: torch.save({"w": _Planted(d / "PLANTED")}, p)}.items():
        write(d / f"{name}.pt")
    badsha = d / "badsha.pt"
    badsha.write_bytes(good.read_bytes())
    (d / "badsha.json").write_text(json.dumps({**_card(good), "weights": {"file": "badsha.pt", "sha256": "0" * 64}}))
    cards = {"notjson": "{architecture: gelu", "list": "[1, 2]",
             "swish": json.dumps(_card(good, activation="swish")), "width": json.dumps(_card(good, width="16")),
             "sha": json.dumps({**_card(good), "weights": {"file": "c.pt", "sha256": "abc"}})}
    for name, text in cards.items():
        (d / f"card_{name}.pt").write_bytes(good.read_bytes())
        (d / f"card_{name}.json").write_text(text)
    # statistics files: a good one; another model's; wrong format; truncated; text
    save_stats(ns.model, d / "stats.pt", model="tiny")
    ns.other = _tiny(1)
    torch.save({"format": "something-else", "sites": {}}, d / "stats_format.pt")
    blob = (d / "stats.pt").read_bytes()
    (d / "stats_truncated.pt").write_bytes(blob[: len(blob) // 2])
    (d / "stats_text.pt").write_text("mean=0 var=1\n")
    # statistics files of the right model and format whose structure is wrong (one site's entry broken)
    saved = torch.load(d / "stats.pt", weights_only=True)
    site = next(iter(saved["sites"]))
    entry = saved["sites"][site]
    broken = {"nosites": {k: v for k, v in saved.items() if k != "sites"},
              "siteslist": {**saved, "sites": list(saved["sites"])},
              "siteentry": {**saved, "sites": {**saved["sites"], site: entry["mean"]}},
              "nomean": {**saved, "sites": {**saved["sites"], site: {k: v for k, v in entry.items() if k != "mean"}}},
              "nsamples": {**saved, "sites": {**saved["sites"], site: {**entry, "n_samples": torch.tensor([5, 6])}}},
              "shape": {**saved, "sites": {**saved["sites"], site: {**entry, "mean": entry["mean"][:-1]}}}}
    for name, obj in broken.items():
        torch.save(obj, d / f"stats_{name}.pt")
    (d / "afile").write_text("a file, not a folder")
    x, y = make_data(8, 2)
    torch.save({"x": x, "y": y}, d / "test.pt")
    return ns


def _ev(f, x=None, y=None, **kw):
    kw.setdefault("attack", "none")
    return ms.evaluate(f.model, f.x if x is None else x, f.y if y is None else y, store=False, **kw)


def _full(value):
    return torch.full((4, 3, 8, 8), value)


def tiny_model():
    """``--model test_faults:tiny_model``: the fixture's model (same weights and sites), so that a statistics file
    made for it passes the model check and its structure is what the command line reads next."""
    return _tiny(0)


@contextlib.contextmanager
def silent_server(lifetime: float = 30.0):
    """A TCP server on 127.0.0.1 (a free port) that accepts every connection and never sends a byte, as a Dask
    scheduler that hangs; yields its address. It stops by itself after ``lifetime`` seconds (closing what it
    accepted, so that even a client without a timeout returns) and when the block ends."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.1)
    address = f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    stop, accepted = threading.Event(), []

    def serve():
        end = time.monotonic() + lifetime
        while not stop.is_set() and time.monotonic() < end:
            with contextlib.suppress(OSError):   # socket.timeout: nobody knocked in the last 0.1 s
                accepted.append(srv.accept()[0])
        for conn in accepted:
            conn.close()
        srv.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        yield address
    finally:
        stop.set()
        th.join(5)


def _against_silent_server(call):
    with silent_server() as address:
        return call(address)


def _first_item():
    return xplan.paper_plan()[0]


# (id, call, error class, text the message must contain: the offending value)
CASES = [
    # α
    ("alpha-negative", lambda f: ms.set_alpha(f.model, -0.1), E.InputError, "-0.1"),
    ("alpha-nan", lambda f: ms.set_alpha(f.model, math.nan), E.InputError, "nan"),
    ("alpha-inf", lambda f: ms.set_alpha(f.model, math.inf), E.InputError, "inf"),
    ("alpha-string", lambda f: ms.set_alpha(f.model, "abc"), E.InputError, "'abc'"),
    ("alpha-wrong-length", lambda f: ms.set_alpha(f.model, [0.1]), E.InputError, "1 alpha values for 2 sites"),
    ("alpha-unknown-site", lambda f: ms.set_alpha(f.model, {"nosuch": 0.1}), E.UnknownNameError, "'nosuch'"),
    ("alpha-notebook", lambda f: es.check_params(alphas=[0.1, -2]), E.InputError, "-2"),
    # model state and types
    ("state-no-sites", lambda f: ms.set_alpha(make_arch(), 0.1), E.InputError, "no MeanSparse sites"),
    ("state-already-sparsified", lambda f: ms.sparsify(f.model, "activations", input_size=(3, 8, 8)), E.StateError,
     "already sparsified"),
    ("state-model-type", lambda f: ms.evaluate("not a model", f.x, f.y, store=False), E.InputTypeError, "str"),
    # layouts
    ("layout-unknown", lambda f: ms.sparsify(make_arch(), "activations", layout="nwhc", input_size=(3, 8, 8)),
     E.UnknownNameError, "'nwhc'"),
    ("layout-rank", lambda f: ms.sparsify(make_arch(), "activations", layout="nlc", input_size=(3, 8, 8)),
     E.InputError, "'nlc'"),
    ("layout-nhwc-on-nchw", lambda f: ms.sparsify(make_arch(), "activations", layout="nhwc", input_size=(3, 8, 8)),
     E.InputError, "'nhwc'"),
    # centres
    ("centre-unknown", lambda f: pl.set_centre(f.model, "median"), E.UnknownNameError, "'median'"),
    ("centre-sweep", lambda f: ms.sweep(f.model, f.x, f.y, alphas=[0.0], centres=["median"], attack="none",
                                        store=False), E.UnknownNameError, "'median'"),
    # presets
    ("preset-unknown", lambda f: ms.sparsify(make_arch(), "Nope/cifar10"), E.UnknownNameError, "'Nope/cifar10'"),
    ("preset-type", lambda f: ms.sparsify(make_arch(), 3), E.InputTypeError, "3"),
    # data sources and sizes
    ("data-source", lambda f: ms.load_data("cifar10", "test", source="web"), E.UnknownNameError, "'web'"),
    ("data-dataset", lambda f: ms.load_data("mnist"), E.UnknownNameError, "'mnist'"),
    ("data-split", lambda f: ms.load_data("cifar10", "val"), E.UnknownNameError, "'val'"),
    ("data-n-negative", lambda f: ms.load_data("cifar10", "test", n=-1), E.InputError, "-1"),
    ("data-n-float", lambda f: ms.load_data("cifar10", "test", n=2.5), E.InputError, "2.5"),
    ("data-n-string", lambda f: ms.load_data("cifar10", "test", n="4"), E.InputError, "'4'"),
    ("data-n-too-many", lambda f: ms.load_data("cifar10", "test", n=5000, source="offline"), E.DataError, "5000"),
    ("data-notebook-source", lambda f: es.check_params(data_source="web"), E.InputError, "'web'"),
    ("data-notebook-n", lambda f: es.check_params(n_examples=0), E.InputError, "got 0"),
    # models
    ("model-unknown", lambda f: ms.load_model("no-such-model"), E.ModelLoadError, "'no-such-model'"),
    ("model-activation", lambda f: ms.load_model("resnet18-swish-w4", pretrained=False), E.InputError, "swish"),
    ("model-notebook", lambda f: es.check_params(model="no-such-model"), E.InputError, "'no-such-model'"),
    # checkpoints
    ("checkpoint-missing", lambda f: ms.load_model("resnet18-gelu-w4", checkpoint=f.dir / "nope.pt"),
     E.MissingFileError, "nope.pt"),
    ("checkpoint-corrupt", lambda f: ms.load_model("resnet18-gelu-w4", checkpoint=f.dir / "corrupt.pt"),
     E.ModelLoadError, "corrupt.pt"),
    ("checkpoint-not-a-state-dict", lambda f: ms.load_model("resnet18-gelu-w4", checkpoint=f.dir / "list.pt"),
     E.ModelLoadError, "list.pt"),
    ("checkpoint-planted-pickle", lambda f: ms.load_model("resnet18-gelu-w4", checkpoint=f.dir / "planted.pt"),
     E.ModelLoadError, "planted.pt"),
    ("checkpoint-wrong-sha", lambda f: ms.load_model("resnet18-gelu-w4", checkpoint=f.dir / "badsha.pt"),
     E.WeightsChecksumError, "badsha.pt"),
    ("checkpoint-other-architecture", lambda f: ms.load_model("resnet18-relu-w4", checkpoint=f.ck),
     E.ModelLoadError, "activation=gelu"),
    # model cards
    ("card-not-json", lambda f: ms.load_model(checkpoint=f.dir / "card_notjson.pt"), E.ModelLoadError,
     "card_notjson.json"),
    ("card-not-object", lambda f: ms.load_model(checkpoint=f.dir / "card_list.pt"), E.ModelLoadError, "card_list.json"),
    ("card-activation", lambda f: ms.load_model(checkpoint=f.dir / "card_swish.pt"), E.ModelLoadError, "'swish'"),
    ("card-width", lambda f: ms.load_model(checkpoint=f.dir / "card_width.pt"), E.ModelLoadError, "'16'"),
    ("card-sha256", lambda f: ms.load_model(checkpoint=f.dir / "card_sha.pt"), E.ModelLoadError, "'abc'"),
    # statistics files
    ("stats-missing", lambda f: load_stats(f.model, f.dir / "nope.pt"), E.MissingFileError, "nope.pt"),
    ("stats-other-model", lambda f: load_stats(f.other, f.dir / "stats.pt"), E.InputError, "another model"),
    ("stats-wrong-format", lambda f: load_stats(f.model, f.dir / "stats_format.pt"), E.InputError,
     "stats_format.pt"),
    ("stats-truncated", lambda f: load_stats(f.model, f.dir / "stats_truncated.pt"), E.InputError,
     "stats_truncated.pt"),
    ("stats-text", lambda f: load_stats(f.model, f.dir / "stats_text.pt"), E.InputError, "stats_text.pt"),
    ("stats-no-sites", lambda f: load_stats(f.model, f.dir / "stats_nosites.pt"), E.InputError,
     "stats_nosites.pt has no table of sites"),
    ("stats-sites-not-a-dict", lambda f: load_stats(f.model, f.dir / "stats_siteslist.pt"), E.InputError,
     "stats_siteslist.pt has no table of sites"),
    ("stats-site-not-a-dict", lambda f: load_stats(f.model, f.dir / "stats_siteentry.pt"), E.InputError,
     "stats_siteentry.pt has no table of sites"),
    ("stats-site-without-mean", lambda f: load_stats(f.model, f.dir / "stats_nomean.pt"), E.InputError,
     "no 'mean' entry"),
    ("stats-n-samples-shape", lambda f: load_stats(f.model, f.dir / "stats_nsamples.pt"), E.InputError,
     "stats_nsamples.pt"),
    ("stats-mean-shape", lambda f: load_stats(f.model, f.dir / "stats_shape.pt"), E.InputError, "stats_shape.pt"),
    # attacks
    ("attack-unknown", lambda f: parse_attack("pgd-l7"), E.UnknownNameError, "'pgd-l7'"),
    ("attack-worst-empty", lambda f: parse_attack("worst:"), E.InputError, "'worst:'"),
    ("attack-worst-unknown", lambda f: parse_attack("worst:apgd,nosuch"), E.UnknownNameError, "'nosuch'"),
    ("attack-worst-nested", lambda f: parse_attack("worst:apgd,worst:bpda"), E.InputError, "worst:"),
    ("attack-evaluate", lambda f: _ev(f, attack="pgd-l7"), E.UnknownNameError, "'pgd-l7'"),
    ("attack-notebook", lambda f: es.check_params(attack="pgd-l7"), E.UnknownNameError, "'pgd-l7'"),
    # ε
    ("eps-zero", lambda f: _ev(f, eps=0), E.InputError, "got 0"),
    ("eps-negative", lambda f: _ev(f, eps=-0.1), E.InputError, "-0.1"),
    ("eps-nan", lambda f: _ev(f, eps=math.nan), E.InputError, "nan"),
    ("eps-notebook-pixels", lambda f: es.check_params(eps=8), E.InputError, "got 8"),
    # labels
    ("labels-out-of-range", lambda f: _ev(f, y=torch.full((8,), 7)), E.InputError, "label 7"),
    ("labels-negative", lambda f: _ev(f, y=torch.full((8,), -3)), E.InputError, "-3"),
    ("labels-wrong-length", lambda f: _ev(f, y=torch.zeros(3, dtype=torch.long)), E.InputError, "3 labels"),
    ("labels-float", lambda f: _ev(f, y=torch.zeros(8)), E.InputError, "float32"),
    # images
    ("images-uint8", lambda f: _ev(f, x=torch.zeros(4, 3, 8, 8, dtype=torch.uint8), y=f.y[:4]), E.InputError,
     "uint8"),
    ("images-above-1", lambda f: _ev(f, x=_full(1.5), y=f.y[:4]), E.InputError, "1.5"),
    ("images-below-0", lambda f: _ev(f, x=_full(-0.5), y=f.y[:4]), E.InputError, "-0.5"),
    ("images-nan", lambda f: _ev(f, x=_full(math.nan), y=f.y[:4]), E.InputError, "nan"),
    ("images-wrong-shape", lambda f: _ev(f, x=f.x[:, 0]), E.InputError, "(8, 8, 8)"),
    # store paths (a read-only store: test_read_only_store_fails_before_any_work below)
    ("store-is-a-file", lambda f: Store(f.dir / "afile").check_writable(), E.StoreError, "afile"),
    ("store-is-a-file-evaluate", lambda f: ms.evaluate(f.model, f.x, f.y, attack="none", store=f.dir / "afile"),
     E.StoreError, "afile"),
    # the plan's estimate: a throughput or a count that would give an infinite, negative or NaN number of hours
    ("plan-tflops-zero", lambda f: xplan.estimate(_first_item(), gpu_tflops=0), E.InputError,
     "gpu_tflops must be a finite number > 0, got 0"),
    ("plan-tflops-negative", lambda f: xplan.estimate(_first_item(), gpu_tflops=-5), E.InputError, "got -5"),
    ("plan-tflops-nan", lambda f: xplan.estimate(_first_item(), gpu_tflops=math.nan), E.InputError, "got nan"),
    ("plan-n-iter-zero", lambda f: xplan.estimate(_first_item(), n_iter=0), E.InputError,
     "n_iter must be an integer >= 1, got 0"),
    ("plan-n-zero", lambda f: xplan.paper_plan(0), E.InputError, "n must be an integer >= 1, got 0"),
    # the book writes only inside its folders: page names only, and never into a folder msparse did not make
    ("book-only-parent", lambda f: build_book(only=["../fig1_operator"], book_dir=f.dir / "bk", execute=False,
                                              widget_js=False, progress=False), E.InputError, "'../fig1_operator'"),
    ("book-only-absolute", lambda f: build_book(only=["/tmp/fig1_operator"], book_dir=f.dir / "bk", execute=False,
                                                widget_js=False, progress=False), E.InputError, "'/tmp/fig1_operator'"),
    ("book-notebook-path", lambda f: run_notebooks(["../notebooks/fig1_operator"], out_dir=f.dir / "out",
                                                   progress=False), E.InputError, "'../notebooks/fig1_operator'"),
    ("book-dir-not-ours", lambda f: build_book(book_dir=f.dir, execute=False, widget_js=False, progress=False),
     E.InputError, "is a folder msparse did not make and is not empty"),
    ("book-dir-is-a-file", lambda f: build_book(book_dir=f.dir / "afile", execute=False, widget_js=False,
                                                progress=False), E.InputError, "afile is a file"),
    # cluster: every network wait bounded, the timeout itself a number of seconds > 0
    ("cluster-silent-scheduler", lambda f: _against_silent_server(lambda a: ex._client(a, 1)), E.ClusterError,
     "(no answer within 1 s)"),
    ("cluster-timeout-zero", lambda f: ex.network_timeout(0), E.UsageError, "got 0"),
    ("cluster-timeout-nan", lambda f: ex.network_timeout(math.nan), E.UsageError, "got nan"),
    ("cluster-timeout-text", lambda f: ex.network_timeout("soon"), E.UsageError, "got 'soon'"),
]


@pytest.mark.parametrize("call, cls, text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_its_error_naming_the_value(f, call, cls, text):
    with pytest.raises(cls) as info:
        call(f)
    assert type(info.value) is cls or cls is E.InputError and isinstance(info.value, E.InputError), \
        f"{type(info.value).__name__} is not exactly {cls.__name__}"
    assert text in str(info.value), str(info.value)
    assert not (f.dir / "PLANTED").exists(), "a planted pickle ran"


def test_the_table_covers_every_input_class():
    kinds = {c[0].split("-")[0] for c in CASES}
    assert kinds >= {"alpha", "state", "layout", "centre", "preset", "data", "model", "checkpoint", "card", "stats",
                     "attack", "eps", "labels", "images", "store", "plan", "book", "cluster"}
    options = {c[0].split("-")[0] for c in CLI_CASES}
    assert options >= {"range", "list", "number", "plan", "threads", "calib", "seed", "out", "book", "cluster"}


# ================================================================================================
# the command line: one line on stderr, naming the file, exit code 2
# ================================================================================================
def _cli(argv, capsys) -> str:
    try:
        code = main(argv)
    except SystemExit as e:   # an option value argparse's type refused: its one line, exit status 2
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


_FAST = ["--attack", "none", "--device", "cpu", "--quiet"]


def _cheap(f, command: str) -> list[str]:
    """Arguments that make ``command`` quick (a tiny model, 8 images, no attack, an empty store), so that a value
    the command line failed to refuse shows as a finished run (exit 0), never as a long computation."""
    model = ["--model", "test_attacks:make_arch", "--data", str(f.dir / "test.pt"), "--device", "cpu"]
    store = ["--store", str(f.dir / "cli-store")]
    return {"evaluate": [*model, "--attack", "none", "--quiet", "--no-store"],
            "sweep": [*model, "--attack", "none", "--quiet", *store],
            "calibrate": model, "plan": ["--no-measure", *store], "verify": store}[command]


# (id, argv from the fixture, text the one line on stderr must contain: the option and its value)
CLI_CASES = [
    # number lists and ranges: finite values, at most MAX_RANGE_VALUES of them, counted before any is made
    ("range-too-many", lambda f: ["sweep", *_cheap(f, "sweep"), "--alphas", "0:1:1e-5"],
     "range '0:1:1e-5' gives 100001 values, at most 10000 are allowed"),
    ("range-10^18", lambda f: ["sweep", *_cheap(f, "sweep"), "--alphas", "0:1e9:1e-9"], "gives 1e+18 values"),
    ("range-inf", lambda f: ["sweep", *_cheap(f, "sweep"), "--alphas", "0:inf:1"], "not a finite number: 'inf'"),
    ("range-overflow", lambda f: ["sweep", *_cheap(f, "sweep"), "--alphas", "0:1e308:1e-300"], "gives too many values"),
    ("list-nan", lambda f: ["sweep", *_cheap(f, "sweep"), "--alphas", "0,nan"], "not a finite number: 'nan'"),
    ("list-empty", lambda f: ["sweep", *_cheap(f, "sweep"), "--alphas", ","], "bad list ',': no values"),
    ("number-eps-inf", lambda f: ["evaluate", *_cheap(f, "evaluate"), "--eps", "inf"], "not a finite number: 'inf'"),
    ("number-fraction-overflow", lambda f: ["evaluate", *_cheap(f, "evaluate"), "--eps", "1e400/1"],
     "not a number: '1e400/1'"),
    # plan: the assumed throughput (0 became 50, a negative gave negative hours, NaN printed NaN)
    ("plan-tflops-zero", lambda f: ["plan", "paper", *_cheap(f, "plan"), "--gpu-tflops", "0"],
     "argument --gpu-tflops: must be a number > 0, got '0'"),
    ("plan-tflops-negative", lambda f: ["plan", "paper", *_cheap(f, "plan"), "--gpu-tflops", "-5"], "got '-5'"),
    ("plan-tflops-nan", lambda f: ["plan", "paper", *_cheap(f, "plan"), "--gpu-tflops", "nan"],
     "argument --gpu-tflops: not a finite number: 'nan'"),
    # counts and seeds
    ("threads-negative", lambda f: ["calibrate", *_cheap(f, "calibrate"), "--out", str(f.dir / "s.pt"),
                                    "--threads", "-1"], "argument --threads: must be >= 1, got -1"),
    ("threads-zero", lambda f: ["evaluate", *_cheap(f, "evaluate"), "--threads", "0"], "must be >= 1, got 0"),
    ("calib-n-negative", lambda f: ["evaluate", *_cheap(f, "evaluate"), "--calib-n", "-3"],
     "argument --calib-n: must be >= 1, got -3"),
    ("calib-batch-size-zero", lambda f: ["evaluate", *_cheap(f, "evaluate"), "--calib-batch-size", "0"],
     "argument --calib-batch-size: must be >= 1, got 0"),
    ("seed-past-2^63", lambda f: ["evaluate", *_cheap(f, "evaluate"), "--seed", str(2**63)],
     f"argument --seed: a seed must be at most 2^63 - 1 = {2**63 - 1}, got {2**63}"),
    ("seed-negative", lambda f: ["evaluate", *_cheap(f, "evaluate"), "--seed", "-1"], "must be >= 0, got -1"),
    ("seed-verify", lambda f: ["results", "verify", *_cheap(f, "verify"), "--seed", str(2**64)],
     "a seed must be at most 2^63 - 1"),
    ("number-max-cost", lambda f: ["results", "verify", *_cheap(f, "verify"), "--max-cost", "-1"],
     "argument --max-cost: must be a number > 0, got '-1'"),
    # calibrate --out: a file to write, not a folder, nothing, or a path through a file
    ("out-folder", lambda f: ["calibrate", *_cheap(f, "calibrate"), "--out", str(f.dir)], "is a folder"),
    ("out-empty", lambda f: ["calibrate", *_cheap(f, "calibrate"), "--out", ""], "empty file name"),
    ("out-under-a-file", lambda f: ["calibrate", *_cheap(f, "calibrate"), "--out", str(f.dir / "afile" / "s.pt")],
     "afile is a file, not a folder"),
    # book: page names only, into folders msparse made
    ("book-only-parent", lambda f: ["book", "--only", "../fig1_operator", "--book-dir", str(f.dir / "bk"),
                                    "--no-execute", "--no-widget-js"], "--only '../fig1_operator': not a page"),
    ("book-only-absolute", lambda f: ["book", "--only", "/tmp/fig1_operator", "--book-dir", str(f.dir / "bk"),
                                      "--no-execute", "--no-widget-js"], "--only '/tmp/fig1_operator': not a page"),
    ("book-dir-not-ours", lambda f: ["book", "--book-dir", str(f.dir), "--no-execute", "--no-widget-js"],
     "is a folder msparse did not make and is not empty"),
    ("book-timeout-zero", lambda f: ["book", "--timeout", "0", "--no-execute", "--no-widget-js"],
     "argument --timeout: must be > 0 seconds, got 0"),
    ("seed-past-torch", lambda f: ["evaluate", *_cheap(f, "evaluate"), "--seed", str(2 ** 63)], "seed"),
    # cluster
    ("cluster-timeout-zero", lambda f: ["sweep", *_cheap(f, "sweep"), "--cluster-timeout", "0"],
     "argument --cluster-timeout: must be a number > 0, got '0'"),
]


@pytest.mark.parametrize("argv, text", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_option_value_is_one_line_and_exit_2(f, argv, text, capsys):
    err = _cli(argv(f), capsys)
    assert text in err, err
    assert not (f.dir / "bk").exists() and not (f.dir / "s.pt").exists(), "work started before the refusal"


def test_cli_sweep_on_a_scheduler_that_never_answers_fails_in_one_line_naming_it(f, capsys, tmp_path):
    """The scheduler accepts the connection and never answers: Dask's connect timeout does not cover its
    handshake, so the sweep hung for ever; now it fails after --cluster-timeout, naming the address."""
    t0 = time.monotonic()
    with silent_server() as address:
        err = _cli(["sweep", *_cheap(f, "sweep"), "--alphas", "0", "--store", str(tmp_path), "--cluster", address,
                    "--cluster-timeout", "1"], capsys)
    assert f"cannot reach the Dask scheduler at {address} (no answer within 1 s)" in err, err
    assert time.monotonic() - t0 < 20


def test_book_dir_is_made_and_marked_by_msparse_or_refused(tmp_path):
    """--book-dir: a new folder is made and marked; a marked or empty one is used; any other is left untouched."""
    from msparse.book import BOOK_MARKER, _claim_book_dir

    new = tmp_path / "new" / "book"
    _claim_book_dir(new)
    assert (new / BOOK_MARKER).is_file()
    (new / "intro.md").write_text("a page of an earlier build")
    _claim_book_dir(new)                      # msparse's own folder: rebuilt in place
    empty = tmp_path / "empty"
    empty.mkdir()
    _claim_book_dir(empty)
    assert (empty / BOOK_MARKER).is_file()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.md").write_text("mine")
    with pytest.raises(E.InputError, match=f"{theirs} is a folder msparse did not make"):
        _claim_book_dir(theirs)
    assert sorted(p.name for p in theirs.iterdir()) == ["notes.md"]


@pytest.mark.parametrize("fault", ["card_notjson", "card_swish", "badsha", "corrupt", "planted"])
def test_cli_bad_checkpoint_or_card_is_one_line_naming_the_file(f, fault, capsys):
    err = _cli(["evaluate", "--checkpoint", str(f.dir / f"{fault}.pt"), "--data", str(f.dir / "test.pt"),
                "--no-store", *_FAST], capsys)
    named = f"{fault}.json" if fault.startswith("card") else f"{fault}.pt"
    assert named in err, err


@pytest.mark.parametrize("fault", ["stats_format", "stats_truncated", "stats_text", "stats_nosites", "stats_siteslist",
                                   "stats_siteentry", "stats_nomean", "stats_nsamples", "stats_shape"])
def test_cli_bad_statistics_file_is_one_line_naming_the_file(f, fault, capsys):
    """The model is the file's own (same weights and sites): what is refused is the file's content."""
    err = _cli(["evaluate", "--model", "test_faults:tiny_model", "--data", str(f.dir / "test.pt"), "--stats",
                str(f.dir / f"{fault}.pt"), "--alpha", "0.1", "--no-store", *_FAST], capsys)
    assert f"{fault}.pt" in err and "belongs to another" not in err, err


def test_cli_reads_the_fixture_statistics_file_with_its_model(f, capsys):
    """The check the table above relies on: test_faults:tiny_model is the model stats.pt was made for."""
    assert main(["evaluate", "--model", "test_faults:tiny_model", "--data", str(f.dir / "test.pt"), "--stats",
                 str(f.dir / "stats.pt"), "--alpha", "0.1", "--no-store", *_FAST]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("fault", ["not-json", "missing-field", "labels-length"])
def test_cli_invalid_data_manifest_is_one_line_naming_the_manifest(f, fault, capsys, monkeypatch, tmp_path):
    import msparse.data.offline as md

    man = json.loads((md.OFFLINE_DIR / "manifest.json").read_text())
    if fault == "missing-field":
        del man["splits"]["test"]["pixels_sha256"]
    elif fault == "labels-length":
        man["splits"]["test"]["labels"] = man["splits"]["test"]["labels"][:10]
    folder = tmp_path / "offline"
    folder.mkdir()
    (folder / "manifest.json").write_text("{splits" if fault == "not-json" else json.dumps(man))
    monkeypatch.setattr(md, "OFFLINE_DIR", folder)
    monkeypatch.setattr(md, "_OFFLINE_CACHE", {})
    monkeypatch.setenv("MSPARSE_DATA_DIR", str(tmp_path / "no-official-data"))
    monkeypatch.chdir(tmp_path)   # no ./data either: the offline subset is the only source
    err = _cli(["evaluate", "--model", "test_attacks:make_arch", "--data", "cifar10:test", "--n", "4", "--no-store",
                *_FAST], capsys)
    assert str(folder / "manifest.json") in err, err
    assert {"missing-field": "pixels_sha256", "labels-length": "labels", "not-json": "JSON"}[fault] in err


@pytest.mark.parametrize("action", [[], ["repair"], ["migrate"]], ids=["list", "repair", "migrate"])
def test_cli_store_that_is_a_file_is_one_line(f, action, capsys):
    """Listing a file as a store said 'no records' (exit 0); evaluate: test_cli.py."""
    err = _cli(["results", *action, "--store", str(f.dir / "afile")], capsys)
    assert f"the results store {f.dir / 'afile'} cannot be written or read: it is a file" in err, err


def _refuse_nonempty_fsync(real_fsync):
    def fsync(fd):
        if os.fstat(fd).st_size > 0:   # the empty write check passes; the first real record does not fit
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)
    return fsync


def test_cli_full_disk_while_writing_a_record_is_one_line_and_leaves_no_file(f, capsys, monkeypatch, tmp_path):
    import msparse._io as mio

    store = tmp_path / "store"
    monkeypatch.setattr(mio.os, "fsync", _refuse_nonempty_fsync(os.fsync))
    err = _cli(["evaluate", "--model", "test_attacks:make_arch", "--data", str(f.dir / "test.pt"), "--store",
                str(store), *_FAST], capsys)
    assert "no space left" in err and "free space" in err and str(store) in err, err
    left = [p for p in store.rglob("*") if p.is_file()]
    assert not [p for p in left if p.suffix == ".tmp" or p.parent.name == "records"], left


# ================================================================================================
# notebooks: a parameter name the notebook does not declare
# ================================================================================================
def test_book_refuses_an_unknown_parameter_before_running_anything(tmp_path):
    from msparse.book import run_notebooks

    with pytest.raises(E.InputError, match=r"'n_trian' \(did you mean 'n_train'\?\).*notebook fig1_operator"):
        run_notebooks(["fig1_operator"], parameters={"n_trian": 5}, out_dir=tmp_path, progress=False)
    with pytest.raises(E.InputError, match="'nosuch'"):
        run_notebooks(["fig1_operator", "table1_alpha"], parameters={"nosuch": 1, "model": "x"}, out_dir=tmp_path,
                      progress=False)
    assert not list(tmp_path.iterdir()), "a notebook ran"


def test_injected_parameters_are_read_from_the_kernel_history():
    declared = "# Parameters (papermill: -p NAME VALUE)\nmodel = 'm'\nn_train = 10  # images\nalphas: list = [0.0]\n"
    injected = "# Parameters\nn_train = 5\nnosuch = 1\n"
    history = ["", declared, injected, "from msparse.experiments import setup as es"]
    assert es.injected_parameters(history) == ({"model", "n_train", "alphas"}, {"n_train", "nosuch"})
    assert es.injected_parameters(["", declared, "x = 1"]) is None          # not run by papermill
    assert es.injected_parameters(["", injected]) == (set(), {"n_train", "nosuch"})   # no parameters cell
    with pytest.raises(E.InputError, match="'nosuch'.*its parameters are: alphas, model, n_train"):
        es.check_parameter_names({"n_train", "nosuch"}, {"model", "n_train", "alphas"})


@pytest.mark.slow   # starts a Jupyter kernel (about 5-10 s)
def test_papermill_run_with_an_unknown_parameter_fails_in_the_notebook(tmp_path):
    """``papermill nb.ipynb out.ipynb -p nosuch 1`` only warns; the notebook's check_params cell fails (declared
    names pass the same check: test_injected_parameters_are_read_from_the_kernel_history)."""
    import jupytext
    import papermill as pm

    from msparse.book import read_notebook

    src = tmp_path / "fig1_operator.ipynb"
    jupytext.write(read_notebook("fig1_operator"), src, fmt="ipynb")
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(src), str(tmp_path / "out.ipynb"), parameters={"nosuch": 1, "n_train": 5},
                            progress_bar=False, kernel_name="python3", cwd=str(REPO))
    assert info.value.ename == "InputError", info.value.evalue
    assert "unknown notebook parameter 'nosuch'" in info.value.evalue and "n_train" not in \
        info.value.evalue.split("its parameters are")[0], info.value.evalue


# ================================================================================================
# torch.load: weights only, everywhere (RobustBench's own loader included)
# ================================================================================================
def test_every_torch_load_in_msparse_passes_weights_only_true():
    offenders = []
    for path in sorted((REPO / "msparse").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


RB_NAME = "Addepalli2022Efficient_RN18"


def _robustbench_file(tmp_path, payload) -> Path:
    path = tmp_path / "models" / "cifar10" / "Linf" / f"{RB_NAME}.pt"
    path.parent.mkdir(parents=True)
    torch.save(payload, path)
    return path


def test_robustbench_checkpoints_load_with_weights_only_whatever_the_loader_asks(tmp_path, monkeypatch):
    """robustbench.utils.load_model calls torch.load itself (torch's default is weights_only=True only from 2.6,
    msparse supports 2.3): inside msparse's call every torch.load is weights-only, even one asking for False."""
    from msparse._compat import import_robustbench

    rb = import_robustbench()
    import robustbench.utils  # noqa: F401  (rb.utils, after the autoattack alias)

    marker = tmp_path / "PLANTED"
    path = _robustbench_file(tmp_path, {"w": _Planted(marker)})
    seen = []

    def old_style_loader(name, model_dir, dataset, threat_model):   # as an older RobustBench could do
        seen.append(torch.load)
        torch.load(path, map_location="cpu", weights_only=False)
        return make_arch()

    monkeypatch.setattr(rb.utils, "load_model", old_style_loader)
    real_load = torch.load
    with pytest.raises(E.ModelLoadError, match=f"{RB_NAME}.*Weights only load failed|{RB_NAME}.*weights"):
        ms.load_model(RB_NAME, model_dir=tmp_path / "models")
    assert not marker.exists(), "the planted pickle ran"
    assert torch.load is real_load and seen and seen[0] is not real_load   # patched inside only, then restored


def test_robustbench_loader_sees_weights_only_true(tmp_path, monkeypatch):
    from msparse._compat import import_robustbench

    rb = import_robustbench()
    import robustbench.utils  # noqa: F401  (rb.utils, after the autoattack alias)

    path = _robustbench_file(tmp_path, make_arch().state_dict())
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return {}

    def loader(name, model_dir, dataset, threat_model):   # RobustBench 1.1.1: torch.load(path, map_location=cpu)
        torch.load(path, map_location=torch.device("cpu"))
        return make_arch()

    monkeypatch.setattr(torch, "load", spy)
    monkeypatch.setattr(rb.utils, "load_model", loader)
    ms.load_model(RB_NAME, model_dir=tmp_path / "models")
    assert calls == [True]


# ================================================================================================
# fault injection on the results store
# ================================================================================================
def _record(i: int, writer: str = "") -> dict:
    spec = {"model": "fault-test", "i": i}
    return {"key": content_hash(spec), "spec": spec, "result": {"n": 100, "clean_acc": i / 100, "robust_acc": 0.0},
            "meta": {"model": "fault-test", "writer": writer}}


def _assert_store_sound(root: Path) -> list[str]:
    """Every record file verifies; anything else is an unfinished temporary file the store never reads."""
    records = root / "records"
    files = [p for p in records.iterdir() if p.is_file()] if records.exists() else []
    store = Store(root)
    keys = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a corrupted record would warn
        for p in files:
            if p.suffix == ".json" and not p.name.startswith("."):
                rec = store.get(p.stem)
                assert rec is not None and rec["key"] == p.stem, p
                keys.append(p.stem)
            else:
                assert p.name.startswith(".") and p.suffix == ".tmp", f"unexpected file {p}"
        assert store.repair() == []
    return keys


_WRITER = textwrap.dedent("""
    import sys
    from msparse.evaluation.hashing import content_hash
    from msparse.evaluation.store import Store
    root, writer, first, last, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    store = Store(root)
    print("ready", flush=True)
    sys.stdin.readline()   # "go": writers started together really overlap
    for r in range(rounds):
        for i in range(first, last):
            spec = {"model": "fault-test", "i": i}
            store.put({"key": content_hash(spec), "spec": spec,
                       "result": {"n": 100, "clean_acc": i / 100, "robust_acc": 0.0},
                       "meta": {"model": "fault-test", "writer": writer, "round": r, "pad": "x" * 20000}})
""")


def _writer(root: Path, name: str, first: int, last: int, rounds: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(root), name, str(first), str(last), str(rounds)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(REPO))


def _start(*procs: subprocess.Popen) -> None:
    """Wait until every writer has imported msparse, then let them all write at once."""
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()


def test_sigkill_mid_write_leaves_only_complete_records(tmp_path, capsys):
    proc = _writer(tmp_path, "killed", 0, 20, 10_000)
    _start(proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    keys = _assert_store_sound(tmp_path)
    assert keys, "the writer was killed before writing anything"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["results", "--store", str(tmp_path)]) == 0
    assert f"{len(keys)} records in {tmp_path}" in capsys.readouterr().out


def test_two_concurrent_writers_lose_nothing_and_duplicate_nothing(tmp_path):
    shared = range(0, 10)
    a = _writer(tmp_path, "a", 0, 20, 10)     # keys 0..19; 0..9 shared with b
    b = _writer(tmp_path, "b", -10, 10, 10)   # keys -10..9
    _start(a, b)
    for proc in (a, b):
        assert proc.wait(timeout=120) == 0
    keys = _assert_store_sound(tmp_path)
    expected = {content_hash({"model": "fault-test", "i": i}) for i in range(-10, 20)}
    assert sorted(keys) == sorted(expected)   # one file per key: nothing lost, nothing duplicated
    assert not [p for p in (tmp_path / "records").iterdir() if p.suffix == ".tmp"], "a finished writer left a temp"
    writers = {Store(tmp_path).get(content_hash({"model": "fault-test", "i": i}))["meta"]["writer"] for i in shared}
    assert writers <= {"a", "b"}


def test_full_disk_keeps_the_old_record_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    import msparse._io as mio

    store = Store(tmp_path)
    old = _record(1, "old")
    path = store.put(old)
    before = path.read_bytes()
    monkeypatch.setattr(mio.os, "fsync", _refuse_nonempty_fsync(os.fsync))
    with pytest.raises(E.StoreError, match=r"no space left.*" + str(path.name) + ".*free space"):
        store.put(_record(1, "new"))
    with pytest.raises(E.StoreError, match="free space"):
        store.put(_record(2, "new"))
    assert path.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == [path.name]


def test_read_only_store_fails_before_any_work(f, tmp_path, monkeypatch):
    """Root may write into a chmod 0500 folder, so the refusal is simulated where the file is created."""
    import msparse._io as mio
    import msparse.evaluation.evaluate as ev

    root = tmp_path / "store"
    root.mkdir()
    if os.geteuid() != 0:
        root.chmod(0o500)
    else:
        def refuse(*a, **k):
            raise PermissionError(errno.EACCES, "Permission denied")
        monkeypatch.setattr(mio.tempfile, "mkstemp", refuse)

    def no_batches(*a, **k):
        raise AssertionError("work started before the store was checked")

    monkeypatch.setattr(ev, "_eval_batch", no_batches)
    try:
        with pytest.raises(E.StoreError, match=f"{root}.*cannot be written"):
            ms.evaluate(f.model, f.x, f.y, attack="none", store=root)
    finally:
        root.chmod(0o700)


def test_evaluate_refuses_a_seed_outside_the_generators_range_and_gradest_takes_any_seed_it_accepts():
    from msparse.attacks.gradest import GradientEstimation
    from msparse.errors import InputError

    m = _tiny()
    x, y = make_data(8, 2)
    with pytest.raises(InputError, match=r"seed must be an integer from 0 to 2\*\*63 - 1"):
        ms.evaluate(m, x[:4], y[:4], attack="none", seed=2 ** 63, store=False)
    # the largest seed evaluate accepts reaches the estimator's generator without overflowing it
    GradientEstimation(m, eps=8 / 255, n_iter=1, seed=2 ** 63 - 1).perturb(x[:2], y[:2])


def test_python_m_msparse_book_entry_point_gives_one_line_for_a_bad_page(capsys):
    from msparse import book as mb

    assert mb.main(["--only", "../x", "--no-execute", "--no-widget-js"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a page of the book" in err[0]
