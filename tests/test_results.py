"""Results store: hashing, atomic writes, corruption detection, intervals, paired tests."""
import json
import math
import os

import pytest
import torch
import torch.nn as nn

from msparse.errors import CorruptRecord
from msparse.evaluation.significance import mcnemar, wilson
from msparse.evaluation.hashing import content_hash, data_hash, flags_to_str, model_checksum, str_to_flags
from msparse.evaluation.provenance import provenance
from msparse.evaluation.queries import load_records, to_table
from msparse.evaluation.store import Store, default_store_dir


def _record(alpha=0.25, attack="apgd-ce", robust=0.5, model="m"):
    """A record whose numbers follow from its flags (3 of 4 clean; 4·robust ≤ 3 robust, among the clean ones)."""
    spec = {"model": "abc", "sites": {"s0": {"alpha": alpha}}, "attack": {"name": attack,
            "eps": 8 / 255, "norm": "Linf"}, "data": {"hash": "d", "n": 4}, "seed": 0}
    k = int(4 * robust)
    result = {"n": 4, "clean": 3, "robust": k, "clean_acc": 0.75,
              "robust_acc": robust, "clean_ci": list(wilson(3, 4)),
              "robust_ci": list(wilson(k, 4)), "clean_flags": "1110",
              "robust_flags": "1" * k + "0" * (4 - k)}
    return {"key": content_hash(spec), "spec": spec, "result": result,
            "meta": {"model": model, "tags": {"table": "1"}}, "provenance": {"device": "cpu"}}


# --- statistics -------------------------------------------------------------------------------

def test_wilson_matches_closed_form_and_edges():
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson(10, 10)[1] == 1.0
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson(5, 4)


def test_mcnemar_counts_and_exact_p_value():
    from scipy.stats import binomtest
    base = [1] * 30 + [0] * 20 + [1] * 5 + [0] * 45
    new = [1] * 30 + [1] * 20 + [0] * 5 + [0] * 45
    p = mcnemar(base, new)
    assert (p.gained, p.lost, p.n) == (20, 5, 100)
    assert p.delta == pytest.approx(0.15)
    assert p.p_value == pytest.approx(binomtest(5, 25, 0.5).pvalue, rel=1e-12)
    assert "discordant" in str(p)
    same = mcnemar([1, 0, 1], [1, 0, 1])
    assert same.p_value == 1.0 and same.gained == same.lost == 0
    with pytest.raises(ValueError, match="same images"):
        mcnemar([1, 0], [1, 0, 1])


def test_flags_round_trip():
    f = [True, False, False, True]
    assert flags_to_str(f) == "1001"
    assert str_to_flags("1001") == f
    assert flags_to_str(torch.tensor(f)) == "1001"


# --- hashing ----------------------------------------------------------------------------------

def test_content_hash_is_order_independent_and_value_sensitive():
    a = {"x": 1, "y": [1.0, 2.0], "z": {"b": 1, "a": 2}}
    b = {"z": {"a": 2, "b": 1}, "y": [1.0, 2.0], "x": 1}
    assert content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash({**a, "x": 2})
    assert len(content_hash(a)) == 32


def test_model_checksum_and_data_hash():
    torch.manual_seed(0)
    m = nn.Linear(3, 2)
    c = model_checksum(m)
    assert c == model_checksum(m)
    with torch.no_grad():
        m.weight[0, 0] += 1e-6
    assert model_checksum(m) != c
    assert model_checksum(m, exclude={"weight", "bias"}) == model_checksum(nn.Sequential())
    x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
    assert data_hash(x, y) == data_hash(x.clone(), y.clone())
    assert data_hash(x, y) != data_hash(x, y.flip(0))


def test_provenance_has_versions_and_device():
    p = provenance("cpu", wall_s=1.23456)
    assert p["versions"]["torch"] == torch.__version__
    assert p["versions"]["pyautoattack"]
    assert p["device"].startswith("cpu") and p["wall_s"] == 1.235


# --- store ------------------------------------------------------------------------------------

def test_store_round_trip_atomic_and_shareable(tmp_path):
    st = Store(tmp_path)
    rec = _record()
    path = st.put(rec)
    got = st.get(rec["key"])
    assert got["result"] == rec["result"] and got["spec"] == rec["spec"]
    assert rec["key"] in st and len(st) == 1
    # no temporary files left, readable by others
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert os.stat(path).st_mode & 0o044


def test_store_rejects_record_whose_key_is_not_its_hash(tmp_path):
    rec = _record()
    rec["key"] = "0" * 32
    with pytest.raises(ValueError, match="hash of its spec"):
        Store(tmp_path).put(rec)


@pytest.mark.parametrize("damage", ["truncate", "edit_number", "edit_spec"])
def test_corrupted_record_is_detected_and_quarantined(tmp_path, damage):
    st = Store(tmp_path)
    rec = _record()
    p = st.put(rec)
    text = p.read_text()
    if damage == "truncate":
        p.write_text(text[: len(text) // 2])
    elif damage == "edit_number":
        doc = json.loads(text)
        doc["result"]["robust_acc"] = 0.99
        p.write_text(json.dumps(doc))
    else:
        doc = json.loads(text)
        doc["spec"]["seed"] = 1
        p.write_text(json.dumps(doc))
    damaged = p.read_bytes()
    with pytest.warns(RuntimeWarning, match="corrupted"):
        assert st.get(rec["key"]) is None
    assert p.read_bytes() == damaged and not p.with_name(p.name + ".corrupt").exists()   # reading changes nothing
    with pytest.warns(RuntimeWarning, match="corrupted"):
        st.put(rec)   # the recomputed record replaces it; the damaged file is kept aside
    assert p.with_name(p.name + ".corrupt").read_bytes() == damaged
    assert st.get(rec["key"])["result"]["robust_acc"] == 0.5


def test_shards_round_trip_and_corruption(tmp_path):
    st = Store(tmp_path)
    st.put_shard("k", 0, {"n": 2, "clean": "10"})
    st.put_shard("k", 1, {"n": 2, "clean": "11"})
    assert st.get_shard("k", 1) == {"n": 2, "clean": "11"}
    assert st.get_shard("k", 2) is None
    (st.shard_dir("k") / "00001.json").write_text('{"schema": 1, "payload": ')
    with pytest.warns(RuntimeWarning, match="corrupted"):
        assert st.get_shard("k", 1) is None
    # a shard copied under another index is refused
    (st.shard_dir("k") / "00003.json").write_text((st.shard_dir("k") / "00000.json").read_text())
    with pytest.warns(RuntimeWarning, match="index mismatch"):
        assert st.get_shard("k", 3) is None
    st.drop_shards("k")
    assert not st.shard_dir("k").exists()


def test_load_records_filters_and_to_table(tmp_path):
    st = Store(tmp_path)
    for a in (0.1, 0.2, 0.3):
        st.put(_record(alpha=a, robust=0.25 if a < 0.3 else 0.75))
    st.put(_record(alpha=0.2, attack="aa", model="other"))
    assert len(load_records(st)) == 4
    assert len(load_records(st, attack="apgd-ce")) == 3
    assert len(load_records(st, attack="apgd-ce", alpha=0.2)) == 1
    assert len(load_records(st, alpha=lambda a: a >= 0.2)) == 3
    assert len(load_records(st, model="other")) == 1
    assert len(load_records(st, table="1")) == 4          # tags are filterable
    rows = _rows(to_table(load_records(tmp_path, attack="apgd-ce")))
    assert sorted(r["alpha"] for r in rows) == [0.1, 0.2, 0.3]
    assert set(rows[0]) >= {"key", "attack", "eps", "alpha", "clean", "robust", "robust_lo",
                            "robust_hi", "n", "device", "table"}
    assert _rows(to_table([], columns=["key"])) == []


def _rows(table):
    """to_table gives a DataFrame with pandas, else a list of dicts."""
    return table.to_dict("records") if hasattr(table, "to_dict") else table


def test_default_store_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("MSPARSE_RESULTS", str(tmp_path / "r"))
    assert default_store_dir() == tmp_path / "r"
    assert Store().root == tmp_path / "r"
    monkeypatch.delenv("MSPARSE_RESULTS")
    assert default_store_dir().name == "results"


def test_corrupt_record_is_a_value_error():
    assert issubclass(CorruptRecord, ValueError)
    assert math.isfinite(wilson(1, 3)[0])


def test_repair_moves_only_files_that_do_not_verify(tmp_path):
    st = Store(tmp_path)
    good = st.put(_record())
    bad = tmp_path / "records" / ("0" * 32 + ".json")
    bad.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="corrupted"):
        assert st.repair() == [bad]
    assert good.exists() and not bad.exists() and bad.with_name(bad.name + ".corrupt").exists()
