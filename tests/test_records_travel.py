"""Records that travel: the key holds what determines an experiment, library versions are provenance;
schema-1 records are read and migrated; drift is verified by recomputation; msparse and robustbench
coexist."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import msparse as ms
import msparse.evaluation.evaluate as ev_mod
from msparse.cli import main as cli
from msparse.evaluation import provenance as P, store as R
from msparse.evaluation.hashing import content_hash
from msparse.evaluation.integrity import SCHEMA, seal
from msparse.evaluation.migration import has_architecture

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "results"

#: cheap committed records that CI recomputes on every run (seconds each on 2 cores): random-weights
#: APGD-CE with and without statistics, clean accuracy with exact statistics of 100 and 3000 images, and
#: with the official statistics on a class-sorted loader
VERIFY_SAMPLE = ("4826e56e7c37", "aa3f2aca5cb1", "05f6498b3ff0", "6d9f49f1c506", "118941f36393")


def _modules():
    return ev_mod


def _tiny():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(1),
                            torch.nn.Flatten(), torch.nn.Linear(4, 10))
    ms.sparsify(m, "activations", input_size=(3, 8, 8))
    x = torch.rand(64, 3, 8, 8)
    ms.calibrate(m, x)
    return m, x[:12], torch.randint(0, 10, (12,))


def _legacy(rec: dict, torch_minor: str = "2.15") -> dict:
    """``rec`` as a schema-1 writer would have sealed it (library versions inside the key)."""
    spec = {**rec["spec"], "versions": {"torch": torch_minor, "pyautoattack": "0.2.0"}}
    body = {k: v for k, v in rec.items() if k not in ("checksum", "key", "spec", "schema")}
    return seal({"schema": 1, "key": content_hash(spec), "spec": spec, **body})


def _fake_versions(monkeypatch, torch_version: str):
    real = P.versions

    def fake():
        return {**real(), "torch": torch_version}

    monkeypatch.setattr(P, "versions", fake)


# --------------------------------------------------------------------------------------------------
# the key
# --------------------------------------------------------------------------------------------------

def test_the_key_holds_no_library_version_and_a_record_is_reused_under_another_torch(tmp_path, monkeypatch):
    m, x, y = _tiny()
    ms.set_alpha(m, 0.3)
    first = ms.evaluate(m, x, y, attack="none", store=tmp_path, batch_size=6)
    assert "versions" not in first.spec
    assert first.provenance["versions"]["torch"] == torch.__version__   # provenance keeps them
    _fake_versions(monkeypatch, "2.2.0")
    again = ms.evaluate(m, x, y, attack="none", store=tmp_path, batch_size=6)
    assert again.cached and again.key == first.key
    # what does determine it still changes the key
    assert ms.evaluate(m, x, y, attack="none", store=tmp_path, batch_size=4).key != first.key
    ms.set_alpha(m, 0.2)
    assert ms.evaluate(m, x, y, attack="none", store=tmp_path, batch_size=6).key != first.key


def test_a_store_that_refuses_other_versions_recomputes_them(tmp_path, monkeypatch):
    m, x, y = _tiny()
    first = ms.evaluate(m, x, y, attack="none", store=tmp_path)
    rec = R.Store(tmp_path).get(first.key)
    assert P.versions_differ(rec) == {}
    _fake_versions(monkeypatch, "2.2.1")
    assert set(P.versions_differ(rec)) == {"torch"}
    assert R.Store(tmp_path).get(first.key) is not None
    assert R.Store(tmp_path, reuse_other_versions=False).get(first.key) is None
    monkeypatch.setenv(R.RECOMPUTE_ENV, "1")
    assert R.Store(tmp_path).get(first.key) is None
    again = ms.evaluate(m, x, y, attack="none", store=tmp_path)
    assert not again.cached and again.result["clean_flags"] == first.result["clean_flags"]
    assert R.Store(tmp_path).get(first.key)["provenance"]["versions"]["torch"] == "2.2.1"  # overwritten here


# --------------------------------------------------------------------------------------------------
# schema-1 records: read, then migrated once
# --------------------------------------------------------------------------------------------------

def test_schema1_records_are_served_under_their_new_key_and_migrated_once(tmp_path):
    m, x, y = _tiny()
    ms.set_alpha(m, 0.3)
    res = ms.evaluate(m, x, y, attack="none", store=False)
    old = _legacy(res.to_record())
    assert old["key"] != res.key
    (tmp_path / "records").mkdir()
    old_path = tmp_path / "records" / f"{old['key']}.json"
    old_path.write_text(json.dumps(old, indent=1, sort_keys=True))

    st = R.Store(tmp_path)
    assert st.keys() == [res.key]
    got = st.get(res.key)
    assert got["schema"] == SCHEMA and got["key"] == res.key and "versions" not in got["spec"]
    assert got["result"] == old["result"] and got["meta"] == old["meta"]
    assert got["provenance"]["key_history"] == [{"schema": 1, "key": old["key"], "versions": old["spec"]["versions"]}]
    assert old_path.exists()                                         # reading never rewrites
    # evaluate finds it without recomputing
    assert ms.evaluate(m, x, y, attack="none", store=tmp_path).cached

    assert st.migrate().counts() == {"migrated": 1, "already_present": 0, "current": 0, "not_rebuilt": 0,
                                     "conflicts": 0, "unreadable": 0, "relabelled": 0}
    assert not old_path.exists()
    new = json.loads((tmp_path / "records" / f"{res.key}.json").read_text())
    assert new == got
    assert st.migrate().counts()["current"] == 1   # idempotent: nothing left to rewrite


def test_migrate_keeps_an_existing_new_record_and_the_cli_reports(tmp_path, capsys):
    m, x, y = _tiny()
    res = ms.evaluate(m, x, y, attack="none", store=tmp_path)
    old = _legacy(res.to_record(), "2.3")
    (tmp_path / "records" / f"{old['key']}.json").write_text(json.dumps(old))
    assert cli(["results", "migrate", "--store", str(tmp_path)]) == 0
    assert "0 records rewritten under their schema-3 key (architecture in the key), 1 already present" in \
        capsys.readouterr().out
    assert sorted(p.stem for p in (tmp_path / "records").glob("*.json")) == [res.key]


def test_every_committed_record_has_the_library_free_key_naming_its_architecture():
    files = sorted((COMMITTED / "records").glob("*.json"))
    assert len(files) >= 212
    for f in files:
        doc = json.loads(f.read_text())
        assert "versions" not in doc["spec"], f.name
        assert content_hash(doc["spec"]) == doc["key"] == f.stem
        assert P.record_versions(doc)["torch"], f.name        # the versions are in the provenance
        # migrated (`msparse results migrate`) unless no model can be rebuilt for it: it names none
        migrated = doc["schema"] == SCHEMA and has_architecture(doc["spec"])
        assert migrated or not doc["meta"].get("model"), f.name


def test_the_book_lookups_hit_the_committed_store_under_another_torch(monkeypatch):
    """The appendix sweep of Table 2 (GELU member, 6 α, APGD-50 on 500 images) resolves to committed
    records when the running torch differs from the records' (nothing is computed: a batch would raise)."""
    from msparse.experiments import setup as es, sweeps
    from msparse.report import tables
    _fake_versions(monkeypatch, "2.2.0")

    def no_compute(*a, **k):
        raise AssertionError("a record was recomputed: the lookup missed the committed store")

    monkeypatch.setattr(_modules(), "_eval_batch", no_compute)
    s = es.setup("msparse/resnet18-gelu-w8-pgdat", n_examples=500, n_train=1000, results_dir=str(COMMITTED))
    rows = sweeps.evaluate_alphas(s, [0.0, 0.1, 0.2, 0.3, 0.35, 0.4], attack="apgd", n_iter=50, label="appendix",
                                progress=False)
    assert all(r["cached"] for r in rows)
    recs = [R.Store(COMMITTED).get(r["key"]) for r in rows]
    note = tables.versions_note(recs)
    assert note.startswith(f"6 of 6 records on this page were computed with torch {P.record_versions(recs[0])['torch']}")
    assert "this build runs torch 2.2.0" in note


# --------------------------------------------------------------------------------------------------
# drift verified
# --------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cheap_committed_records_reproduce_here(capsys):
    """The fixed CI sample: recomputed under this install, every example's flags agree."""
    assert cli(["results", "verify", "--store", str(COMMITTED), *VERIFY_SAMPLE]) == 0
    out = capsys.readouterr().out
    assert f"{len(VERIFY_SAMPLE)} agree, 0 disagree, 0 could not be rebuilt" in out


def test_verify_reports_a_disagreement_and_fails(tmp_path, capsys):
    st = R.Store(tmp_path)
    key = next(k for k in R.Store(COMMITTED).keys() if k.startswith(VERIFY_SAMPLE[2]))
    rec = R.Store(COMMITTED).get(key)
    flags = rec["result"]["clean_flags"]
    assert rec["spec"]["attack"]["name"] == "none"   # robust = clean: one flipped image changes both, consistently
    from msparse.evaluation.significance import wilson
    flipped = ("0" if flags[0] == "1" else "1") + flags[1:]
    k, n = flipped.count("1"), len(flipped)
    nums = {"clean": k, "robust": k, "clean_acc": k / n, "robust_acc": k / n, "clean_ci": list(wilson(k, n)),
            "robust_ci": list(wilson(k, n)), "clean_flags": flipped, "robust_flags": flipped}
    bad = {**rec, "result": {**rec["result"], **nums}}   # a record that reads well but disagrees with a recomputation
    st.put(bad)
    assert cli(["results", "verify", "--store", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "disagree" in out and f"clean {len(flags) - 1}/{len(flags)}" in out
    assert "0 agree, 1 disagree" in out


def test_verify_says_why_a_record_cannot_be_rebuilt(tmp_path, capsys):
    m, x, y = _tiny()
    ms.evaluate(m, x, y, attack="none", store=tmp_path, name="my-own-model")
    assert cli(["results", "verify", "--store", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "cannot rebuild" in out and "'my-own-model' cannot be loaded here" in out


@pytest.mark.slow
def test_verify_sample_and_unknown_keys(tmp_path, capsys):
    shutil.copytree(COMMITTED / "records", tmp_path / "records")
    assert cli(["results", "verify", "--store", str(tmp_path), "--sample", "1", "--max-cost", "200"]) == 0
    assert "verifying 1 record(s)" in capsys.readouterr().out
    assert cli(["results", "verify", "--store", str(tmp_path), "nope"]) == 2
    assert "key 'nope' matches no record" in capsys.readouterr().err


def test_rerun_rebuilds_a_record_under_another_seed_and_then_reads_it(tmp_path):
    """rerun: under the record's own seed the rebuilt experiment is the record (same key, same flags); under another
    seed it is stored under the spec's key with that seed, tagged with the record it reruns, and read back after."""
    from msparse.evaluation import verify as V

    key = next(k for k in R.Store(COMMITTED).keys() if k.startswith(VERIFY_SAMPLE[0]))
    rec = R.Store(COMMITTED).get(key)
    same = V.rerun(rec, seed=rec["spec"]["seed"], store=tmp_path)
    assert same.key == key and not same.cached
    assert same.result["robust_flags"] == rec["result"]["robust_flags"]
    assert same.result["clean_flags"] == rec["result"]["clean_flags"]
    other = V.rerun(rec, seed=7, store=tmp_path)
    assert other.key == V.rerun_key(rec, seed=7) == content_hash({**rec["spec"], "seed": 7}) != key
    stored = R.Store(tmp_path).get(other.key)
    assert stored["spec"]["seed"] == 7 and stored["meta"]["tags"]["rerun_of"] == key
    assert stored["meta"]["model"] == rec["meta"]["model"]

    class NoRebuild(V.Rebuilder):
        def model(self, name):
            raise AssertionError("a stored rerun must not rebuild the model")

    again = V.rerun(rec, seed=7, store=tmp_path, rebuilder=NoRebuild())
    assert again.cached and again.result["robust_flags"] == other.result["robust_flags"]


def test_rerun_says_why_a_record_cannot_be_rebuilt(tmp_path):
    from msparse.errors import InputError
    from msparse.evaluation import verify as V

    m, x, y = _tiny()
    r = ms.evaluate(m, x, y, attack="none", store=tmp_path, name="my-own-model")
    rec = R.Store(tmp_path).get(r.key)
    with pytest.raises(InputError, match=r"cannot be rerun with seed 1 here: model 'my-own-model' cannot be loaded"):
        V.rerun(rec, seed=1, store=tmp_path)


def test_rerun_on_more_images_is_the_experiment_a_page_computes_on_them(tmp_path):
    """rerun(n=...): the first n images of the record's split, the record's images their start; the same key as
    evaluating the rebuilt model on those n images directly; fewer images than the record is refused."""
    from msparse.errors import InputError
    from msparse.evaluation import verify as V

    key = next(k for k in R.Store(COMMITTED).keys() if k.startswith(VERIFY_SAMPLE[0]))
    rec = R.Store(COMMITTED).get(key)
    n0 = rec["spec"]["data"]["n"]
    more = V.rerun(rec, n=n0 + 8, store=tmp_path)
    assert more.key == V.rerun_key(rec, n=n0 + 8) and more.n == n0 + 8
    assert more.result["clean_flags"][:n0] == rec["result"]["clean_flags"]   # the record's images come first
    rb = V.Rebuilder()
    model = rb.model(rec["meta"]["model"])
    x, y = ms.load_data("cifar10", "train", n=n0 + 8)
    direct = ms.evaluate(model, x, y, rec["spec"]["attack"]["name"], n_iter=rec["spec"]["attack"]["n_iter"],
                         store=False, diagnostics=False)
    assert direct.key == more.key and direct.result["robust_flags"] == more.result["robust_flags"]
    assert R.Store(tmp_path).get(more.key)["meta"]["data"] == f"cifar10/train 0..{n0 + 7}"
    with pytest.raises(InputError, match=f"fewer than the record's {n0} images"):
        V.rerun(rec, n=n0 - 1, store=tmp_path)


# --------------------------------------------------------------------------------------------------
# robustbench beside msparse
# --------------------------------------------------------------------------------------------------

def test_robustbench_imports_after_msparse():
    code = ("import msparse, autoattack, pyautoattack.state\n"
            "from robustbench.utils import load_model\n"
            "import autoattack.state\n"
            "assert autoattack.state is pyautoattack.state and autoattack.AutoAttack is pyautoattack.AutoAttack\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_reading_a_record_never_rewrites_it(tmp_path):
    """A cache hit with other labels (model name, tags) serves them in memory; the file stays byte for byte."""
    m, x, y = _tiny()
    first = ms.evaluate(m, x, y, attack="none", store=tmp_path, name="a", tags={"book": "x"})
    path = R.Store(tmp_path).path(first.key)
    before = path.read_bytes()
    again = ms.evaluate(m, x, y, attack="none", store=tmp_path, name="b", tags={"centre": "zero"})
    assert again.cached and again.meta["model"] == "a" and again.meta["tags"] == {"book": "x", "centre": "zero"}
    assert path.read_bytes() == before
