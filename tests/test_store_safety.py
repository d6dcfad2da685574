"""The results store never acts outside itself, and verification checks what readers see.

* Nothing under the store is followed through a link, read, replaced or removed unless it is a regular file (or a
  real folder) of the kind msparse writes there; what is left is named in a warning or a one-line error.
* A record's displayed numbers (n, counts, accuracies, Wilson intervals, per-component accuracies, a binarization
  test's pass rate) must follow from its per-image flags on every read, so a record edited and re-sealed is refused.
* A record of a newer schema is refused by name; wrong-typed fields, impossible store names and ``--store ""`` are
  one line each.
"""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import msparse as ms
from msparse.cli import main
from msparse.errors import CorruptRecord, InputError, StoreError
from msparse.evaluation.integrity import SCHEMA, check_record, seal
from msparse.evaluation.significance import wilson
from msparse.evaluation.hashing import content_hash
from msparse.evaluation.store import Store

REPO = Path(__file__).resolve().parent.parent


def _record(n_iter: int = 10) -> dict:
    """An apgd-ce + square evaluation record of 6 images whose numbers follow from its flags."""
    spec = {"model": "abc", "sites": {"s0": {"alpha": 0.25, "centre": "mean", "backward": "exact"}},
            "attack": {"name": "apgd-ce+square", "eps": 8 / 255, "norm": "Linf", "n_iter": n_iter},
            "data": {"hash": "d", "n": 6}, "seed": 0, "batch_size": 6}
    clean, outcome = "111110", "1a1b10"   # image 1 broken by apgd-ce, image 3 by square, image 5 clean-wrong
    robust = "101010"
    comp = {"attacks": ["apgd-ce", "square"], "outcome": outcome, "robust": 3, "robust_acc": 0.5,
            "after": {"apgd-ce": 4 / 6, "square": 3 / 6}}
    result = {"n": 6, "clean": 5, "robust": 3, "clean_acc": 5 / 6, "robust_acc": 0.5,
              "clean_ci": list(wilson(5, 6)), "robust_ci": list(wilson(3, 6)), "clean_flags": clean,
              "robust_flags": robust, "components": {"apgd-ce+square": comp}, "diagnostics": {"messages": {}}}
    return {"key": content_hash(spec), "spec": spec, "result": result, "meta": {"model": "m"},
            "provenance": {"device": "cpu"}}


def _binarization() -> dict:
    spec = {"kind": "binarization", "model": "abc", "sites": {}, "attack": {"name": "apgd-ce", "eps": 8 / 255},
            "data": {"hash": "d", "n": 5}, "seed": 0, "batch_size": 1}
    result = {"n": 5, "valid": 4, "passed": 3, "pass_rate": 0.75, "flags": "11-10"}
    return {"key": content_hash(spec), "spec": spec, "result": result, "meta": {"model": "m"}}


def _write_sealed(st: Store, rec: dict, schema: int = SCHEMA) -> Path:
    """Write ``rec`` as a sealed file (checksum recomputed) without the store's checks: what an edit + re-seal does."""
    doc = seal({**{k: v for k, v in rec.items() if k != "checksum"}, "schema": schema})
    p = st.root / "records" / f"{rec['key']}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc))
    return p


def _tiny():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(1),
                            torch.nn.Flatten(), torch.nn.Linear(4, 10))
    ms.sparsify(m, "activations", input_size=(3, 8, 8))
    x = torch.rand(32, 3, 8, 8)
    ms.calibrate(m, x)
    return m, x[:8], torch.randint(0, 10, (8,))


# ================================================================================================
# 1. nothing outside the store is followed, read or removed
# ================================================================================================

def test_a_stored_point_never_empties_the_folder_a_partial_link_points_to(tmp_path):
    """The reported bug: partial/<key> a link to a user's folder, the point already stored -> the clean-up emptied
    the folder. Now the link and the folder are left as they are, with a warning."""
    m, x, y = _tiny()
    st = Store(tmp_path / "store")
    r = ms.evaluate(m, x, y, attack="none", store=st, batch_size=4, progress=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    (mine / "00000.json").write_text("named like a shard, but not in the store")
    link = st.shard_dir(r.key)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(mine, target_is_directory=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = ms.evaluate(m, x, y, attack="none", store=st, batch_size=4, progress=False)
    assert sorted(p.name for p in mine.iterdir()) == ["00000.json", "thesis.tex"]   # the user's folder is intact
    assert link.is_symlink() and again.cached
    assert any("symbolic link" in str(w.message) and "left as it is" in str(w.message) for w in caught)


def test_drop_shards_removes_only_the_shard_files_msparse_writes(tmp_path):
    st = Store(tmp_path / "store")
    st.put_shard("k", 0, {"n": 2})
    d = st.shard_dir("k")
    (d / "00001.json.corrupt").write_text("a shard moved aside")
    (d / ".00002.json.abc123.tmp").write_text("an unfinished write")
    (d / "notes.txt").write_text("the user's")
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (d / "00003.json").symlink_to(outside)
    with pytest.warns(RuntimeWarning, match=r"holds 2 entries that msparse did not write.*00003\.json, notes\.txt"):
        st.drop_shards("k")
    assert sorted(p.name for p in d.iterdir()) == ["00003.json", "notes.txt"]
    assert outside.read_text() == "{}" and (d / "00003.json").is_symlink()
    (d / "00003.json").unlink()
    (d / "notes.txt").unlink()
    st.drop_shards("k")   # only msparse's files left (none): the folder goes, silently
    assert not d.exists()


def test_a_partial_folder_that_is_a_link_is_neither_written_through_nor_cleared(tmp_path):
    st = Store(tmp_path / "store")
    theirs = tmp_path / "theirs"
    (theirs / "k").mkdir(parents=True)
    (theirs / "k" / "00000.json").write_text("someone else's file, named like a shard")
    st.root.mkdir()
    (st.root / "partial").symlink_to(theirs, target_is_directory=True)
    with pytest.warns(RuntimeWarning, match="not saved"):
        st.put_shard("k", 1, {"n": 2})
    with pytest.warns(RuntimeWarning, match="not resumed"):
        assert st.get_shard("k", 0) is None
    with pytest.warns(RuntimeWarning, match="left as it is"):
        st.drop_shards("k")
    assert [p.name for p in (theirs / "k").iterdir()] == ["00000.json"]


def test_a_partial_entry_that_is_a_file_is_a_warning_and_the_evaluation_still_finishes(tmp_path):
    m, x, y = _tiny()
    st = Store(tmp_path)
    key = ms.evaluate(m, x, y, attack="none", store=False, batch_size=4).key
    blocker = st.shard_dir(key)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="not a folder msparse wrote"):
        r = ms.evaluate(m, x, y, attack="none", store=st, batch_size=4, progress=False)
    assert not r.cached and st.get(key) is not None
    assert blocker.read_text() == "not a folder"
    with pytest.warns(RuntimeWarning, match="not resumed"):
        assert st.get_shard(key, 0) is None


def test_a_shard_that_is_a_link_is_neither_read_nor_replaced(tmp_path):
    st = Store(tmp_path / "store")
    st.put_shard("k", 0, {"n": 2, "clean": "10"})
    real = st.shard_dir("k") / "00000.json"
    elsewhere = tmp_path / "elsewhere.json"
    real.rename(elsewhere)
    real.symlink_to(elsewhere)
    with pytest.warns(RuntimeWarning, match="symbolic link"):
        assert st.get_shard("k", 0) is None
    with pytest.warns(RuntimeWarning, match="not saved"):
        st.put_shard("k", 0, {"n": 2, "clean": "11"})
    assert real.is_symlink() and json.loads(elsewhere.read_text())["payload"]["clean"] == "10"


def test_a_record_file_that_is_a_link_is_not_followed(tmp_path):
    st = Store(tmp_path / "store")
    rec = _record()
    outside = Store(tmp_path / "outside").put(rec)
    p = st.path(rec["key"])
    p.parent.mkdir(parents=True)
    p.symlink_to(outside)
    with pytest.warns(RuntimeWarning, match="not regular files.*neither follows nor reads them"):
        assert st.keys() == []
    with pytest.warns(RuntimeWarning, match="symbolic link"):
        assert st.get(rec["key"]) is None
    with pytest.raises(StoreError, match="symbolic link"):
        st.put(rec)
    out = st.repair()
    assert out == [] and [q for q, _ in out.left] == [p] and "symbolic link" in out.left[0][1]
    assert p.is_symlink() and outside.exists()


def test_a_records_folder_that_is_a_link_is_not_followed(tmp_path):
    outside = tmp_path / "outside"
    rec = _record()
    Store(outside).put(rec)
    st = Store(tmp_path / "store")
    st.root.mkdir()
    (st.root / "records").symlink_to(outside / "records", target_is_directory=True)
    with pytest.warns(RuntimeWarning, match="symbolic link"):
        assert st.keys() == []
    with pytest.warns(RuntimeWarning, match="symbolic link"):
        assert st.get(rec["key"]) is None
    for call in (lambda: st.put(rec), st.check_writable, st.repair):
        with pytest.raises(StoreError, match="neither follows nor changes it"):
            call()
    assert [p.name for p in (outside / "records").iterdir()] == [f"{rec['key']}.json"]


def test_a_pipe_in_the_store_is_never_opened(tmp_path):
    """A named pipe at records/<key>.json: reading it would block forever; it is listed as not a regular file."""
    rec = _record()
    code = (f"import os, warnings; from msparse.evaluation.store import Store\n"
            f"st = Store({str(tmp_path)!r}); os.makedirs(st.root / 'records')\n"
            f"os.mkfifo(st.path({rec['key']!r}))\n"
            f"warnings.simplefilter('ignore')\n"
            f"print(st.keys(), st.get({rec['key']!r}), len(st.repair().left))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["[]", "None", "1"]


# ================================================================================================
# 2. repair says what it could not move
# ================================================================================================

def test_repair_reports_a_file_it_could_not_move_and_exits_non_zero(tmp_path, capsys):
    bad = tmp_path / "records" / ("0" * 32 + ".json")
    bad.parent.mkdir()
    bad.write_text("{not json")
    blocker = bad.with_name(bad.name + ".corrupt")
    blocker.mkdir()
    (blocker / "x").write_text("a non-empty folder where the aside copy would go")
    with pytest.warns(RuntimeWarning, match="could NOT be moved aside"):
        assert main(["results", "repair", "--store", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "moved aside:" not in out and f"NOT moved: {bad.name}" in out and "1 could not be moved" in out
    assert bad.read_text() == "{not json"


# ================================================================================================
# 3. the numbers readers see follow from the flags, on every read and in `results verify`
# ================================================================================================

def _edit(rec, path, value):
    *parents, last = path
    obj = rec
    for k in parents:
        obj = obj[k]
    obj[last] = value


EDITS = [
    (("result", "n"), 5, "result.n"),
    (("result", "clean"), 6, "result.clean"),
    (("result", "robust"), 4, "result.robust"),
    (("result", "clean_acc"), 0.9, "result.clean_acc"),
    (("result", "robust_acc"), 0.99, "result.robust_acc"),
    (("result", "clean_ci"), [0.5, 0.99], "result.clean_ci"),
    (("result", "robust_ci"), [0.4, 0.6], "result.robust_ci"),
    (("result", "robust_flags"), "111010", "result.robust"),
    (("result", "components", "apgd-ce+square", "robust_acc"), 0.9, "robust_acc"),
    (("result", "components", "apgd-ce+square", "robust"), 5, r"components\['apgd-ce\+square'\]\.robust"),
    (("result", "components", "apgd-ce+square", "after", "square"), 0.9, r"after\['square'\]"),
    (("result", "components", "apgd-ce+square", "outcome"), "111b10", "outcome"),
]


@pytest.mark.parametrize("path, value, field", EDITS, ids=[".".join(p[1:]) for p, _, _ in EDITS])
def test_a_resealed_record_whose_numbers_disagree_with_its_flags_is_corrupted(tmp_path, path, value, field):
    st = Store(tmp_path)
    rec = _record()
    st.put(rec)
    assert st.get(rec["key"]) is not None
    _edit(rec, path, value)
    _write_sealed(st, rec)   # checksum recomputed: only the numbers against the flags can tell
    with pytest.warns(RuntimeWarning, match=f"corrupted result file.*{field}"):
        assert st.get(rec["key"]) is None
    with pytest.raises(CorruptRecord, match=field):
        check_record(rec)
    with pytest.raises(InputError, match="cannot be stored"):
        st.put(rec)   # what get would refuse is never written


@pytest.mark.parametrize("field, value", [("pass_rate", 1.0), ("passed", 4), ("valid", 5), ("n", 4)])
def test_a_binarization_record_is_checked_against_its_flags(tmp_path, field, value):
    st = Store(tmp_path)
    rec = _binarization()
    st.put(rec)
    assert st.get(rec["key"])["result"]["pass_rate"] == 0.75
    rec["result"][field] = value
    _write_sealed(st, rec)
    with pytest.warns(RuntimeWarning, match=f"result.{field}"):
        assert st.get(rec["key"]) is None


def test_every_committed_record_passes_the_check_and_reads_without_a_warning(committed_results):
    files = sorted((committed_results / "records").glob("*.json"))
    assert len(files) >= 500
    for p in files:
        check_record(json.loads(p.read_text()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(Store(committed_results))) == len(files)


def test_results_verify_reports_a_resealed_edited_record_as_corrupted(tmp_path, capsys):
    from msparse.evaluation.verify import verify

    st = Store(tmp_path)
    rec = _record()
    rec["result"]["robust_acc"] = 0.99
    _write_sealed(st, rec)
    checks = verify(st, log=None)   # the strict reader: the reason is in the check, not a warning
    assert [c.status for c in checks] == ["corrupted"] and "result.robust_acc" in checks[0].detail
    assert main(["results", "verify", "--store", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "0 agree" in out and "1 corrupted" in out


def test_verify_compares_the_displayed_numbers_not_only_the_flags():
    from msparse.evaluation.verify import _differing

    stored = _record()["result"]
    assert _differing(stored, json.loads(json.dumps(stored))) == []
    now = json.loads(json.dumps(stored))
    now["robust_acc"] = 0.25
    now["components"]["apgd-ce+square"]["after"]["square"] = 0.25
    assert _differing(stored, now) == ["robust_acc (0.5 stored, 0.25 now)",
                                      "components['apgd-ce+square'].after ({'apgd-ce': 0.6666666666666666, "
                                      "'square': 0.5} stored, {'apgd-ce': 0.6666666666666666, 'square': 0.25} now)"]
    b = _binarization()["result"]
    assert _differing(b, {**b, "pass_rate": 0.5}, binarization=True) == ["pass_rate (0.75 stored, 0.5 now)"]


# ================================================================================================
# 4. verifying nothing is not a pass
# ================================================================================================

def test_results_verify_of_an_empty_store_fails_in_one_line(tmp_path, capsys):
    assert main(["results", "verify", "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no records to verify" in err and len(err.splitlines()) == 1


def test_results_verify_with_no_record_under_the_cost_limit_fails_in_one_line(tmp_path, capsys):
    Store(tmp_path).put(_record())
    assert main(["results", "verify", "--store", str(tmp_path), "--max-cost", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "costs at most 1 image-iterations" in err and "raise --max-cost" in err and len(err.splitlines()) == 1


# ================================================================================================
# 5. a newer schema is refused by name
# ================================================================================================

def test_a_record_of_a_newer_schema_is_refused_by_name_and_never_overwritten(tmp_path):
    st = Store(tmp_path)
    rec = _record()
    p = _write_sealed(st, rec, schema=SCHEMA + 1)
    before = p.read_bytes()
    msg = rf"has schema {SCHEMA + 1}, newer than this msparse \({SCHEMA}\): upgrade msparse"
    with pytest.warns(RuntimeWarning, match=msg):
        assert st.get(rec["key"]) is None
    with pytest.raises(StoreError, match=msg):
        st.put(rec)
    out = st.repair()
    assert out == [] and out.left and "newer than this msparse" in out.left[0][1]
    assert p.read_bytes() == before


# ================================================================================================
# 6. one line for wrong types, impossible names and an empty --store
# ================================================================================================

@pytest.mark.parametrize("edit, field", [
    (lambda r: r["result"].update(n="6"), r"result\.n is a string \('6'\)"),
    (lambda r: r["spec"]["attack"].update(n_iter="10"), "spec.attack.n_iter is a string"),
    (lambda r: r["spec"]["sites"]["s0"].update(alpha=[0.25]), r"spec.sites\['s0'\].alpha is a list"),
    (lambda r: r.update(meta=["m"]), "meta is a list"),
])
def test_a_wrong_typed_field_is_a_warning_naming_it(tmp_path, capsys, edit, field):
    st = Store(tmp_path)
    rec = _record()
    edit(rec)
    rec["key"] = content_hash(rec["spec"])
    _write_sealed(st, rec)
    with pytest.warns(RuntimeWarning, match=field):
        assert st.get(rec["key"]) is None
    with pytest.warns(RuntimeWarning, match=field):
        assert main(["results", "--store", str(tmp_path)]) == 0


def test_a_record_whose_spec_is_a_list_is_one_warning_not_a_traceback(tmp_path, capsys):
    st = Store(tmp_path)
    spec = ["not", "a", "spec"]
    _write_sealed(st, {**_record(), "key": content_hash(spec), "spec": spec})
    with pytest.warns(RuntimeWarning, match="spec is a list, not an object"):
        assert main(["results", "--store", str(tmp_path)]) == 0
    assert "no records" in capsys.readouterr().out


def test_a_store_name_too_long_is_one_line(tmp_path, capsys):
    long = tmp_path / ("x" * 300)
    with pytest.raises(StoreError, match="cannot be used"):
        Store(long)
    assert main(["results", "--store", str(long)]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be used" in err and len(err.splitlines()) == 1


def test_an_empty_store_name_is_refused_not_the_repository_store(capsys):
    with pytest.raises(InputError, match="empty name"):
        Store("")
    for argv in (["results", "--store", ""], ["results", "verify", "--store", ""], ["results", "repair", "--store", " "]):
        with pytest.raises(SystemExit) as exit_:   # argparse's one-line error
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "--store needs a folder" in err and "records in" not in err


def test_a_key_that_is_not_a_file_name_is_refused(tmp_path):
    st = Store(tmp_path)
    for bad in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(InputError, match="record key"):
            st.get(bad)
    with pytest.raises(InputError, match="record key"):
        st.drop_shards("..")


def test_concurrent_write_checks_of_one_store_do_not_fail_each_other(tmp_path):
    """Dask workers check one store at once; with a shared probe name one worker's unlink removed another's probe
    (FileNotFoundError surfaced as 'the results store cannot be written')."""
    import threading

    st = Store(tmp_path / "store")
    errors = []

    def check():
        try:
            for _ in range(200):
                st.check_writable()
        except Exception as e:   # noqa: BLE001 -- collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=check) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in (tmp_path / "store" / "records").iterdir()] == []   # no probe left behind
