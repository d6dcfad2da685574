"""The worst case as a cascade: stage records mark what they did not attack, the evidence layer reads them as no
evidence, stages are reused, and the base gets as many runs as the defence."""
import numpy as np
import pytest

from msparse.errors import CorruptRecord, InputError
from msparse.evaluation import evidence as ev
from msparse.evaluation.cascade import Stage, cascade
from msparse.evaluation.evaluate import evaluate, evaluation_plan
from msparse.evaluation.integrity import check_record
from msparse.evaluation.store import Store

from test_attacks import make_data, sparse_model, tiny_model

FAST = dict(eps=8 / 255, n_iter=5, batch_size=32)


@pytest.fixture(scope="module")
def data():
    return make_data(48, 2)


def test_a_skipped_image_is_not_attacked_and_marked(tmp_path, data):
    x, y = data
    model = sparse_model(0.2)
    full = evaluate(model, x, y, "apgd-ce", store=False, **FAST)
    skip = np.zeros(len(x), dtype=bool)
    skip[::2] = True
    part = evaluate(model, x, y, "apgd-ce", store=tmp_path, skip=skip, **FAST)
    assert part.key != full.key and part.spec["skip"] == "".join("1" if s else "0" for s in skip)
    out = part.components["apgd-ce"]["outcome"]
    clean = part.clean_flags
    assert all((ch == "-") == bool(s and c) for ch, s, c in zip(out, skip, clean))
    assert not (part.robust_flags & skip).any()               # a skipped image never counts as robust
    assert part.result["not_attacked"] == int((skip & clean).sum())
    assert (part.skipped == skip).all() and full.skipped is None
    check_record(Store(tmp_path).get(part.key))               # a valid record for the store's checks
    # no image skipped = the full run's key (keys of full runs never change)
    none = evaluation_plan(model, x, y, "apgd-ce", skip=[False] * len(x), **FAST)
    assert none.key == full.key and "skip" not in none.spec


def test_a_forged_skip_mark_is_a_corrupt_record(tmp_path, data):
    x, y = data
    r = evaluate(sparse_model(0.2), x, y, "apgd-ce", store=False, skip=[True] + [False] * (len(x) - 1), **FAST)
    rec = r.to_record()
    rec["spec"] = {k: v for k, v in rec["spec"].items() if k != "skip"}    # "-" without a skip mask
    with pytest.raises(CorruptRecord):
        check_record(rec)


@pytest.mark.parametrize("bad", [[True] * 3, "01x", 5])
def test_a_bad_skip_mask_is_an_input_error(data, bad):
    x, y = data
    with pytest.raises(InputError):
        evaluation_plan(sparse_model(0.2), x, y, "apgd-ce", skip=bad, **FAST)


def test_the_cascade_is_the_pooled_worst_case_of_its_stages(tmp_path, data):
    x, y = data
    model = sparse_model(0.3)
    c = cascade(model, x, y, ["apgd-ce", "bpda:apgd-ce", "transfer:apgd-dlr", "apgd-dlr"], store=tmp_path, **FAST)
    assert [s.reused for s in c.stages] == ["", "", "", ""]
    first = c.stages[0]
    assert first.attacked == int(c.clean.sum())
    for a, b in zip(c.stages, c.stages[1:]):                  # each stage attacks exactly what stood before it
        assert b.attacked == a.standing and b.standing == b.attacked - b.broken
    st = Store(tmp_path)
    later = st.get(c.stages[1].key)
    assert later["spec"]["skip"] and "skip" not in st.get(first.key)["spec"]
    # the evidence layer pools the stage records into exactly the cascade's worst case
    e = ev.pool(st, ev.point_of(later), len(x))
    assert e.flags == list(c.flags) and e.clean == list(c.clean)
    assert any(r["stage"] for r in e.records)
    # a second call computes nothing
    again = cascade(model, x, y, ["apgd-ce", "bpda:apgd-ce", "transfer:apgd-dlr", "apgd-dlr"], store=tmp_path, **FAST)
    assert [s.reused for s in again.stages] == ["full", "stored", "stored", "stored"] and (again.flags == c.flags).all()
    assert again.keys == c.keys


def test_a_stored_full_run_serves_as_a_stage(tmp_path, data):
    x, y = data
    model = sparse_model(0.3)
    full = evaluate(model, x, y, "apgd-dlr", store=tmp_path, **FAST)
    c = cascade(model, x, y, ["apgd-ce", "apgd-dlr"], store=tmp_path, **FAST)
    assert c.stages[1].reused == "full" and c.stages[1].key == full.key


def test_the_cascade_is_never_weaker_than_its_first_stage_and_no_stronger_than_all_stages(data):
    x, y = data
    model = sparse_model(0.3)
    c = cascade(model, x, y, [Stage("apgd-ce"), Stage("apgd-dlr", n_iter=10)], store=False, **FAST)
    first = evaluate(model, x, y, "apgd-ce", store=False, **FAST)
    assert not (c.flags & ~first.robust_flags).any()


def test_the_base_gets_another_random_start_where_a_route_collapses(tmp_path, data):
    x, y = data
    base = tiny_model()                      # no site: bpda:apgd-ce is apgd-ce
    c = cascade(base, x, y, ["apgd-ce", "bpda:apgd-ce"], store=tmp_path, **FAST)
    assert [s.seed for s in c.stages] == [0, 1] and c.stages[0].key != c.stages[1].key
    st = Store(tmp_path)
    runs = ev.runs_of(st.get(c.stages[0].key)) | ev.runs_of(st.get(c.stages[1].key))
    assert ev.budget(runs)["CE"][0] == 2     # two CE runs, as the defence's official gradient + BPDA


def test_a_cascade_extending_stored_evidence_repeats_none_of_its_computations(tmp_path, data):
    """On the base, a surrogate stage after a stored APGD-CE stage would recompute it (the surrogate is the direct
    gradient there): with the stored records as ``pooled`` it takes the next seed instead, and so does a stage
    whose own full run is stored."""
    from msparse.evaluation.cascade import run_key

    x, y = data
    base = tiny_model()
    first = evaluate(base, x, y, "apgd-dlr", store=tmp_path, **FAST)
    stage = cascade(base, x, y, ["apgd-ce"], store=tmp_path, standing=first.robust_flags, **FAST)
    st = Store(tmp_path)
    recs = [st.get(first.key), st.get(stage.stages[0].key)]
    assert run_key(recs[0]) == first.key                       # a full run's own key
    assert run_key(recs[1]) == evaluation_plan(base, x, y, "apgd-ce", **FAST).key != recs[1]["key"]
    without = cascade(base, x, y, ["surrogate:apgd-ce", "apgd-dlr"], store=tmp_path, standing=stage.flags,
                      **FAST)
    assert [s.seed for s in without.stages] == [0, 0] and without.stages[1].reused == "full"
    with_ = cascade(base, x, y, ["surrogate:apgd-ce", "apgd-dlr"], store=tmp_path, standing=stage.flags,
                    pooled=recs, **FAST)
    assert [s.seed for s in with_.stages] == [1, 1] and not any(s.reused == "full" for s in with_.stages)


def test_the_base_is_balanced_with_stages_until_it_has_the_defence_s_runs_per_loss(tmp_path, data):
    """The surrogate's temperatures are several CE runs on the defence and one on the base (where it is the direct
    gradient): balance_base adds base stages under new seeds until every loss has as many runs, then stops."""
    from msparse.core.placement import set_alpha
    from msparse.evaluation.cascade import balance_base

    x, y = data
    model = sparse_model(0.3)
    new = evaluate(model, x, y, "surrogate:apgd-ce", store=tmp_path, **FAST)
    set_alpha(model, 0.0)
    evaluate(model, x, y, "apgd-ce", store=tmp_path, **FAST)
    st = Store(tmp_path)
    point = ev.point_of(st.get(new.key))
    before = ev.Comparison(ev.pool(st, point.base, len(x)), ev.pool(st, point, len(x)))
    k_new, k_base = before.new.budget["CE"][0], before.base.budget["CE"][0]
    assert k_new > k_base == 1 and "CE" in before.missing
    done = balance_base(model, x, y, st, point, n_iter=FAST["n_iter"], batch_size=FAST["batch_size"])
    assert [s.seed for s in done] == list(range(1, k_new)) and all(s.key for s in done)
    after = ev.Comparison(ev.pool(st, point.base, len(x)), ev.pool(st, point, len(x)))
    assert after.fair and after.base.budget["CE"][0] == k_new
    assert all("skip" in st.get(s.key)["spec"] for s in done)          # stages on the standing images only
    assert balance_base(model, x, y, st, point, n_iter=FAST["n_iter"]) == []   # nothing left to give


def test_a_loss_no_base_record_runs_is_given_to_the_base_by_the_defence_s_attack(tmp_path, data):
    """The defence's margin-loss BPDA PGD has no counterpart among the base's records: balance_base runs that attack
    itself on the base (BPDA through α = 0 is the direct gradient), as many times as the defence has runs of it, and
    then stops."""
    from msparse.core.placement import set_alpha
    from msparse.evaluation.cascade import balance_base

    x, y = data
    model = sparse_model(0.3)
    new = evaluate(model, x, y, "bpda:pgd", store=tmp_path, n_restarts=2, **FAST)
    evaluate(model, x, y, "apgd-ce", store=tmp_path, **FAST)
    set_alpha(model, 0.0)
    evaluate(model, x, y, "apgd-ce", store=tmp_path, **FAST)
    st = Store(tmp_path)
    point = ev.point_of(st.get(new.key))
    before = ev.Comparison(ev.pool(st, point.base, len(x)), ev.pool(st, point, len(x)))
    margin = [loss for loss in before.missing if "margin" in loss]
    assert margin and ev.base_record_for_gap(st, before) is None   # no base record runs the margin loss
    done = balance_base(model, x, y, st, point, n_iter=FAST["n_iter"], batch_size=FAST["batch_size"])
    # recorded as what it is on the base: the direct attack
    assert [st.get(s.key)["spec"]["attack"]["name"] for s in done] == ["pgd"]
    assert st.get(done[0].key)["spec"]["attack"]["n_restarts"] == 2
    after = ev.Comparison(ev.pool(st, point.base, len(x)), ev.pool(st, point, len(x)))
    assert after.fair and after.base.budget[margin[0]] == after.new.budget[margin[0]]
    assert balance_base(model, x, y, st, point, n_iter=FAST["n_iter"]) == []


def test_an_empty_cascade_is_an_input_error(data):
    x, y = data
    with pytest.raises(InputError):
        cascade(tiny_model(), x, y, [], store=False)


def test_a_cascade_can_start_from_what_the_store_already_broke(tmp_path, data):
    x, y = data
    model = sparse_model(0.3)
    first = evaluate(model, x, y, "apgd-ce", store=tmp_path, **FAST)
    c = cascade(model, x, y, ["apgd-dlr"], store=tmp_path, standing=first.robust_flags, **FAST)
    rec = Store(tmp_path).get(c.stages[0].key)
    assert rec["spec"]["skip"] == "".join("0" if f else "1" for f in first.robust_flags)
    assert c.stages[0].attacked == int(first.robust_flags.sum())
    e = ev.pool(Store(tmp_path), ev.point_of(rec), len(x))
    assert e.flags == list(c.flags)
    with pytest.raises(InputError):
        cascade(model, x, y, ["apgd-dlr"], store=False, standing=[True], **FAST)


def test_the_official_gradient_compares_the_same_attacks_on_both_sides():
    """On a base, bpda:pgd collapses to a direct pgd record; the official-gradient comparison must not count it for
    the base when the defence received pgd only through BPDA (the base would look attacked harder)."""
    from msparse.experiments.claims import _official

    def rec(attack, direct, flags):
        return {"attack": attack, "direct": direct, "flags": flags, "stage": False}

    point = ev.Point("m", None, (), 0.03, "Linf", "hash:x")
    base = ev.Evidence(point, 4, [False, False, True, True], [True] * 4, set(),
                       [rec("apgd", True, "1111"), rec("pgd", True, "0011")])
    new = ev.Evidence(point, 4, [False, True, True, True], [True] * 4, set(),
                      [rec("apgd", True, "1111"), rec("bpda:pgd", False, "0111")])
    b, n = _official(base, new)
    assert b == [True] * 4 and n == [True] * 4          # apgd on both sides only
    assert base.direct_flags() == [False, False, True, True]   # every direct record of the base, as before


@pytest.mark.parametrize("argv, says", [
    (["msparse/default", "0.25", "--claim", "no-such-claim"], "no such claim"),
    (["msparse/default", "0.35", "--claim", "gelu-main-a0.35"], "resnet18-gelu-w8-pgdat at alpha 0.35"),
    (["msparse/resnet18-gelu-w8-pgdat", "0", "--balance", "0.25", "--claim", "gelu-main-a0.35"], "--balance 0.35"),
    (["msparse/resnet18-gelu-w8-pgdat", "0.25", "--claim", "gelu-main-a0.35"], "alpha 0 for its base"),
])
def test_the_cascade_script_refuses_a_claim_it_would_not_configure_in_one_line(argv, says, capsys):
    """scripts/cascade_n1000.py --claim: an unknown claim, or a model/α that is not the claim's, is a usage error
    (exit 2) naming what to give, before any model is loaded."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "cascade_n1000.py"
    spec = importlib.util.spec_from_file_location("cascade_n1000", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit) as e:
        mod.main(argv)
    assert e.value.code == 2 and says in capsys.readouterr().err
