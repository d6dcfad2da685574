"""The statistics file belongs to one model: refused for other weights, other sites or an old format; loaded
all or nothing."""
import pytest
import torch

import msparse as ms
from msparse.evaluation.statsfile import load_stats, save_stats


def _model(seed):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(4, 4, 3, padding=1),
                            torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))
    ms.sparsify(m, "activations", input_size=(3, 8, 8))
    return m


def test_round_trip_on_the_same_model(tmp_path):
    m = _model(0)
    ms.calibrate(m, torch.rand(32, 3, 8, 8))
    save_stats(m, tmp_path / "s.pt", model="tiny", mode="exact")
    other = _model(0)                                    # same weights, fresh sites
    assert load_stats(other, tmp_path / "s.pt") == {"model": "tiny", "mode": "exact"}
    for (_, a), (_, b) in zip(m.named_modules(), other.named_modules()):
        if isinstance(a, ms.MeanSparse):
            assert torch.equal(a.mean, b.mean) and torch.equal(a.var, b.var)


def test_statistics_of_another_model_are_refused(tmp_path):
    m = _model(0)
    ms.calibrate(m, torch.rand(32, 3, 8, 8))
    save_stats(m, tmp_path / "s.pt", model="member A")
    with pytest.raises(ValueError, match="belongs to another model .*labelled 'member A'"):
        load_stats(_model(1), tmp_path / "s.pt")


def test_an_old_statistics_file_without_its_model_is_refused(tmp_path):
    m = _model(0)
    sites = {n: {"mean": op.mean, "var": op.var, "n_samples": torch.tensor(1)}
             for n, op in m.named_modules() if isinstance(op, ms.MeanSparse)}
    torch.save({"format": "msparse-stats-1", "sites": sites}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="does not say which model"):
        load_stats(m, tmp_path / "old.pt")


def test_a_bad_site_loads_nothing(tmp_path):
    m = _model(0)
    ms.calibrate(m, torch.rand(32, 3, 8, 8))
    save_stats(m, tmp_path / "s.pt")
    obj = torch.load(tmp_path / "s.pt", weights_only=True)
    last = sorted(obj["sites"])[-1]
    obj["sites"][last]["var"] = -obj["sites"][last]["var"] - 1     # invalid: negative variances
    torch.save(obj, tmp_path / "bad.pt")
    fresh = _model(0)
    with pytest.raises(ValueError, match=f"site {last!r}"):
        load_stats(fresh, tmp_path / "bad.pt")
    assert not any(op.calibrated for op in fresh.modules() if isinstance(op, ms.MeanSparse))
