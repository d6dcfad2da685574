"""bench/bench_gpu.py: skips with a clear message without CUDA, and (slow) runs end to end in its CPU smoke mode."""

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "bench_gpu.py"


def load():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_exits_zero(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load().main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bench_gpu: skipped: no CUDA device") and "--smoke" in out


@pytest.mark.slow
def test_smoke_mode_runs_every_setting_on_the_cpu(capsys):
    assert load().main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert "smoke test: numbers mean nothing" in out
    for setting in ("fp32 ", "fp32 channels_last", "bf16 autocast + channels_last"):
        assert f"\n{setting}" in out
    assert "Fastest setting without flips: " in out
    assert "\nfp32                                " in out and " 0 (0.0e+00)" in out   # the reference has no flips
