"""The record key names the whole model: weights (``spec.model``) and architecture (``spec.arch``, the fingerprint of
msparse.evaluation.fingerprint); older records are migrated to the new key without recomputation, and no migration
deletes the only valid copy of a record."""
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import msparse as ms
from msparse.cli import main as cli
from msparse.errors import InputError, StoreError
from msparse.evaluation import store as R
from msparse.evaluation.hashing import content_hash
from msparse.evaluation.integrity import SCHEMA, seal
from msparse.evaluation import verify as V
from msparse.evaluation.evaluate import describe_model, host_checksum
from msparse.evaluation.fingerprint import fingerprint
from msparse.evaluation.statsfile import load_stats, save_stats
from msparse.experiments import setup as es

SMALL = "random:resnet18-gelu-w4"   # a registry model the migration can rebuild, cheap to evaluate


class Scale(nn.Module):
    """Multiplies by a constant kept as a plain attribute (not in the state dict)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


class Shift(nn.Module):
    """Subtracts a non-persistent buffer (a normalisation constant outside the state dict)."""

    def __init__(self, value: float):
        super().__init__()
        self.register_buffer("centre", torch.full((3, 1, 1), value), persistent=False)

    def forward(self, x):
        return x - self.centre


class MyReLU(nn.ReLU):
    """Another module type with ReLU's configuration (and, here, its function)."""


def _tiny(act: nn.Module, pre: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(0)
    layers = [pre] if pre is not None else []
    return nn.Sequential(*layers, nn.Conv2d(3, 4, 3, padding=1), act, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10)).eval()


def _data(n: int = 8, size: int = 8):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def _schema2(rec: dict) -> dict:
    """``rec`` as the schema-2 writer sealed it: the same spec without the architecture."""
    spec = {k: v for k, v in rec["spec"].items() if k != "arch"}
    if isinstance(spec.get("source"), dict):
        spec["source"] = {k: v for k, v in spec["source"].items() if k != "arch"}
    body = {k: v for k, v in rec.items() if k not in ("checksum", "key", "spec", "schema")}
    return seal({"schema": 2, "key": content_hash(spec), "spec": spec, **body})


def _write(store_dir, doc: dict):
    p = store_dir / "records" / f"{doc['key']}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=1, sort_keys=True))
    return p


# --------------------------------------------------------------------------------------------------
# same weights, another forward: another key
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pair", ["activation", "plain constant", "module type", "non-persistent buffer"])
def test_same_weights_and_another_forward_get_another_key(tmp_path, pair):
    a, b = {"activation": (_tiny(nn.GELU()), _tiny(nn.ReLU())),
            "plain constant": (_tiny(nn.ReLU(), Scale(1.0)), _tiny(nn.ReLU(), Scale(1.0000000000000002))),
            "module type": (_tiny(nn.ReLU()), _tiny(MyReLU())),
            "non-persistent buffer": (_tiny(nn.ReLU(), Shift(0.5)), _tiny(nn.ReLU(), Shift(0.25)))}[pair]
    assert host_checksum(a) == host_checksum(b)            # the weights alone cannot tell them apart
    assert fingerprint(a) != fingerprint(b)
    x, y = _data()
    first = ms.evaluate(a, x, y, attack="none", store=tmp_path)
    second = ms.evaluate(b, x, y, attack="none", store=tmp_path)
    assert second.key != first.key and not second.cached    # not served the other model's numbers
    assert second.spec["arch"] == fingerprint(b) and second.spec["model"] == first.spec["model"]


def test_the_three_random_family_names_get_three_keys(tmp_path):
    names = [f"random:resnet18-{act}-w4" for act in ("gelu", "relu", "silu")]
    models = [es.load(n) for n in names]
    assert len({host_checksum(m) for m in models}) == 1     # activations hold no weights
    assert len({fingerprint(m) for m in models}) == 3
    x, y = _data(4, 32)
    keys = [ms.evaluate(m, x, y, attack="none", store=tmp_path, name=n).key for m, n in zip(models, names)]
    assert len(set(keys)) == 3


def test_a_transfer_source_is_keyed_by_its_architecture_too(tmp_path):
    model = _tiny(nn.ReLU())
    x, y = _data()
    a = ms.evaluate(model, x, y, attack="transfer:apgd-ce", source=_tiny(nn.GELU()), n_iter=2, store=False,
                    diagnostics=False)
    b = ms.evaluate(model, x, y, attack="transfer:apgd-ce", source=_tiny(nn.ReLU()), n_iter=2, store=False,
                    diagnostics=False)
    assert a.spec["source"]["model"] == b.spec["source"]["model"] and a.key != b.key
    assert a.spec["source"]["arch"] == fingerprint(_tiny(nn.GELU()))


def test_the_registry_entry_and_its_version_are_in_the_fingerprint():
    m = es.load(SMALL)
    assert m.msparse_card["registry"] == {"entry": "resnet18-<activation>[-w<width>][-ra]", "version": 1}
    before = fingerprint(m)
    m.msparse_card["registry"]["version"] = 2               # the entry's code changed what it builds
    assert fingerprint(m) != before
    m.msparse_card["registry"]["version"] = 1
    m.msparse_card["path"] = "/somewhere/else.pt"            # labels of the card are not the architecture
    assert fingerprint(m) == before


# --------------------------------------------------------------------------------------------------
# the same model: the same fingerprint (twice, in another process, sparsified at α = 0)
# --------------------------------------------------------------------------------------------------

def test_the_same_model_built_twice_or_in_another_process_has_the_same_fingerprint():
    here = fingerprint(es.load(SMALL))
    assert fingerprint(es.load(SMALL)) == here
    code = ("from msparse.experiments import setup as es\nfrom msparse.evaluation.fingerprint import fingerprint\n"
            f"print(fingerprint(es.load({SMALL!r})))")
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == here


def test_a_sparsified_model_names_its_host_at_any_alpha():
    plain = es.load(SMALL)
    host = fingerprint(plain)
    sparse = es.load(SMALL)
    ms.sparsify(sparse, es.default_placement(sparse))
    assert fingerprint(sparse) == host
    assert describe_model(sparse) == describe_model(plain)   # α = 0: the same function, the same description
    x, _ = _data(16, 32)
    ms.calibrate(sparse, x)
    ms.set_alpha(sparse, 0.3)
    d = describe_model(sparse)
    assert d["arch"] == host and d["model"] == host_checksum(plain) and d["sites"]   # the sites are keyed apart


# --------------------------------------------------------------------------------------------------
# statistics files name the architecture
# --------------------------------------------------------------------------------------------------

def test_statistics_of_another_architecture_with_the_same_weights_are_refused(tmp_path):
    x, _ = _data(16)
    gelu, relu = _tiny(nn.GELU()), _tiny(nn.ReLU())
    for m in (gelu, relu):
        ms.sparsify(m, "activations", input_size=(3, 8, 8))
    ms.calibrate(gelu, x)
    save_stats(gelu, tmp_path / "s.pt")
    with pytest.raises(InputError, match="belongs to another architecture"):
        load_stats(relu, tmp_path / "s.pt")
    # a file written before the fingerprint existed is read, checked by weights and sites
    old = torch.load(tmp_path / "s.pt", weights_only=True)
    del old["arch"]
    torch.save(old, tmp_path / "old.pt")
    assert "arch" not in load_stats(relu, tmp_path / "old.pt")


# --------------------------------------------------------------------------------------------------
# migration: older records get the new key, nothing recomputed, nothing valid lost
# --------------------------------------------------------------------------------------------------

def _small_record(**kw):
    model = es.load(SMALL)
    x, y = _data(4, 32)
    res = ms.evaluate(model, x, y, attack="none", store=False, name=SMALL, **kw)
    return res.to_record()


def test_a_schema2_record_is_rewritten_under_its_new_key_without_recomputation(tmp_path, monkeypatch, capsys):
    rec = _small_record()
    old = _schema2(rec)
    old_path = _write(tmp_path, old)

    def refuse(*a, **k):
        raise AssertionError("migration recomputed a record")

    monkeypatch.setattr(sys.modules["msparse.evaluation.evaluate"], "_eval_batch", refuse)
    assert cli(["results", "migrate", "--store", str(tmp_path)]) == 0
    assert "1 records rewritten under their schema-3 key" in capsys.readouterr().out
    assert not old_path.exists()
    new = R.Store(tmp_path).get(rec["key"])
    assert new["schema"] == SCHEMA and new["spec"] == rec["spec"]           # the key evaluate computes now
    assert new["result"] == old["result"] and new["meta"] == old["meta"]
    assert new["provenance"]["key_history"] == [{"schema": 2, "key": old["key"]}]
    # re-runnable: nothing left to do
    assert V.migrate(tmp_path).counts() == {"migrated": 0, "already_present": 0, "current": 1, "not_rebuilt": 0,
                                            "conflicts": 0, "unreadable": 0, "relabelled": 0}


def test_a_label_citing_a_migrated_record_cites_its_new_key(tmp_path):
    """``rerun`` tags its record ``rerun_of`` the record it reruns: after the migration it names the current key,
    whichever of the two was migrated first."""
    rec = _small_record()
    old = _schema2(rec)
    _write(tmp_path, old)
    rerun = _small_record(tags={"rerun_of": old["key"]}, seed=3)
    R.Store(tmp_path).put(rerun)
    done = V.migrate(tmp_path)
    assert done.renamed == {old["key"]: rec["key"]} and done.relabelled == [rerun["key"]]
    got = R.Store(tmp_path).get(rerun["key"])
    assert got["meta"]["tags"]["rerun_of"] == rec["key"] and got["result"] == rerun["result"]
    assert V.migrate(tmp_path).relabelled == []


def test_the_architecture_of_an_older_record_comes_from_rebuilding_the_model_it_names():
    old = _schema2(_small_record())
    assert V.record_architecture(old) == {"arch": fingerprint(es.load(SMALL)), "source": None}
    other = {**old, "meta": {**old["meta"], "model": "random:resnet18-relu-w4"}}   # same weights, another forward
    assert V.record_architecture(other)["arch"] != fingerprint(es.load(SMALL))
    with pytest.raises(InputError, match="cannot be rebuilt here: the record does not name its model"):
        V.record_architecture({**old, "meta": {}})


def test_a_schema1_record_gets_both_old_keys_in_its_history(tmp_path):
    rec = _small_record()
    two = _schema2(rec)
    spec1 = {**two["spec"], "versions": {"torch": "2.15", "pyautoattack": "0.2.0"}}
    body = {k: v for k, v in two.items() if k not in ("checksum", "key", "spec", "schema")}
    one = seal({"schema": 1, "key": content_hash(spec1), "spec": spec1, **body})
    _write(tmp_path, one)
    assert R.Store(tmp_path).get(two["key"])["schema"] == 2      # still served under its schema-2 key
    done = V.migrate(tmp_path)
    assert done.renamed == {one["key"]: rec["key"]}
    hist = R.Store(tmp_path).get(rec["key"])["provenance"]["key_history"]
    assert hist == [{"schema": 1, "key": one["key"], "versions": spec1["versions"]}, {"schema": 2, "key": two["key"]}]


def test_migration_replaces_a_damaged_file_under_the_new_key_and_only_then_removes_the_old_one(tmp_path):
    rec = _small_record()
    old_path = _write(tmp_path, _schema2(rec))
    new_path = tmp_path / "records" / f"{rec['key']}.json"
    new_path.write_text('{"damaged": ')
    with pytest.warns(RuntimeWarning, match="corrupted"):
        done = V.migrate(tmp_path)
    assert done.counts()["migrated"] == 1 and not old_path.exists()
    assert R.Store(tmp_path).get(rec["key"])["result"] == rec["result"]
    assert (new_path.parent / (new_path.name + ".corrupt")).read_text() == '{"damaged": '


def test_a_schema1_file_is_never_removed_for_a_damaged_file_under_its_new_key(tmp_path):
    """The old migration counted a damaged file under the new key as "already present" and deleted the only valid
    copy (a schema-1 file whose spec already names everything but its versions needs no rebuild)."""
    rec = _small_record()
    spec1 = {**rec["spec"], "versions": {"torch": "2.15", "pyautoattack": "0.2.0"}}
    body = {k: v for k, v in rec.items() if k not in ("checksum", "key", "spec", "schema")}
    one = seal({"schema": 1, "key": content_hash(spec1), "spec": spec1, **body})
    _write(tmp_path, one)
    (tmp_path / "records" / f"{rec['key']}.json").write_text("not json")
    with pytest.warns(RuntimeWarning, match="corrupted"):
        R.Store(tmp_path).migrate()
    assert R.Store(tmp_path).get(rec["key"])["result"] == rec["result"]


def test_migration_keeps_the_old_file_when_the_new_record_does_not_read_back(tmp_path, monkeypatch):
    rec = _small_record()
    old = _schema2(rec)
    old_path = _write(tmp_path, old)

    def bad_put(self, record):   # a write that lands damaged (a full disk the OS did not report, a bad copy)
        self.path(record["key"]).write_text("{}")

    monkeypatch.setattr(R.Store, "put", bad_put)
    done = V.migrate(tmp_path)
    assert done.migrated == [] and len(done.unreadable) == 1 and "did not read back" in done.unreadable[0][1]
    assert json.loads(old_path.read_text()) == old                 # the only valid copy is still there


def test_migration_keeps_both_when_the_new_key_holds_another_result(tmp_path, capsys):
    rec = _small_record()
    old_path = _write(tmp_path, _schema2(rec))
    flags = rec["result"]["clean_flags"]
    other = dict(rec, result={**rec["result"], "diagnostics": {"messages": {"another run": 1}}})
    R.Store(tmp_path).put(other)
    assert cli(["results", "migrate", "--store", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"conflict: {old_path.stem[:12]} -> {rec['key'][:12]}" in out and "1 conflicts" in out
    assert old_path.exists() and R.Store(tmp_path).get(rec["key"])["result"]["clean_flags"] == flags


@pytest.mark.parametrize("why", ["unknown model", "other weights"])
def test_a_record_whose_model_cannot_be_rebuilt_is_left_in_place(tmp_path, capsys, why):
    rec = _small_record()
    old = _schema2(rec)
    if why == "unknown model":
        old = seal({**old, "meta": {**old["meta"], "model": "my-own-model"}})
    else:
        spec = {**old["spec"], "model": "0" * 32}
        old = seal({**old, "spec": spec, "key": content_hash(spec)})
    p = _write(tmp_path, old)
    before = p.read_bytes()
    assert cli(["results", "migrate", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    reason = {"unknown model": "'my-own-model' cannot be loaded here",
              "other weights": f"the weights of {SMALL!r} here differ"}[why]
    assert f"left as it is: {old['key'][:12]}" in out and reason in out and "1 could not be rebuilt" in out
    assert p.read_bytes() == before and sorted(x.name for x in p.parent.iterdir()) == [p.name]
    assert R.Store(tmp_path).get(old["key"]) is not None            # still readable under its old key


def test_migrating_a_read_only_store_is_one_line_and_changes_nothing(tmp_path, capsys, monkeypatch):
    p = _write(tmp_path, _schema2(_small_record()))
    before = p.read_bytes()

    def refuse(*a, **k):   # root may write into a chmod 0500 folder, so the refusal is simulated
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(R, "atomic_write_text", refuse)
    assert cli(["results", "migrate", "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the results store {tmp_path} cannot be written" in err
    assert p.read_bytes() == before
    with pytest.raises(StoreError):
        V.migrate(tmp_path)
