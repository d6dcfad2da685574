"""evaluate() and sweep(): records, resume after a crash, stability, bad inputs, paired tests."""
import json

import numpy as np
import pytest
import torch

import msparse.evaluation.evaluate as ev
from msparse.core.placement import named_operators as meansparse_modules
from msparse.core.placement import set_backward, sites, sparsify
from msparse.evaluation.evaluate import evaluate
from msparse.evaluation.queries import load_records, to_table
from msparse.evaluation.store import Store
from msparse.evaluation.sweep import site_subsets, sweep

from test_attacks import make_data, sparse_model, tiny_model

FAST = dict(eps=8 / 255, n_iter=10, batch_size=16)


@pytest.fixture(scope="module")
def data():
    return make_data(48, 2)


# --- one point ----------------------------------------------------------------------------------

def test_evaluate_result_is_consistent(tmp_path, data):
    x, y = data
    r = evaluate(sparse_model(0.2), x, y, "apgd", store=tmp_path, name="tiny", data="synthetic",
                 **FAST)
    assert r.n == 48 and 0 < r.robust_acc <= r.clean_acc < 1
    assert r.clean_flags.shape == (48,) and r.robust_flags.dtype == bool
    assert not (r.robust_flags & ~r.clean_flags).any()
    assert r.robust_flags.mean() == pytest.approx(r.robust_acc)
    lo, hi = r.robust_ci
    assert lo < r.robust_acc < hi
    comp = r.components["apgd"]
    assert comp["after"]["apgd-ce"] >= comp["after"]["apgd-dlr"] == pytest.approx(r.robust_acc)
    assert r.spec["attack"] == {"name": "apgd", "eps": 8 / 255, "norm": "Linf", "n_iter": 10,
                                "n_restarts": 1, "n_queries": 5000, "n_target_classes": 9}
    assert r.spec["seed"] == 0 and r.spec["data"]["n"] == 48
    assert len(r.spec["sites"]) == 2 and all(s["alpha"] == 0.2 for s in r.spec["sites"].values())
    prov = r.provenance
    assert {"commit", "versions", "device", "wall_s", "n", "created"} <= set(prov)
    d = r.diagnostics
    assert d["n_diag"] == 16 and set(d["blocked"]) == {s.name for s in sites(sparse_model(0.2))}
    assert 0 < d["blocked_mean"] < 1 and d["zero_grad"] == 0.0
    assert r.meta == {"model": "tiny", "data": "synthetic"}


def test_records_are_stable_and_reused(tmp_path, data):
    x, y = data
    a = evaluate(sparse_model(0.2), x, y, "apgd-ce", store=False, **FAST)
    b = evaluate(sparse_model(0.2), x, y, "apgd-ce", store=False, **FAST)
    assert a.key == b.key and a.result == b.result
    c = evaluate(sparse_model(0.2), x, y, "apgd-ce", store=tmp_path, **FAST)
    d = evaluate(sparse_model(0.2), x, y, "apgd-ce", store=tmp_path, **FAST)
    assert not c.cached and d.cached and c.key == a.key
    assert d.result == a.result
    # anything that determines the numbers changes the key (clean-only runs: cheap)
    def key(model=None, xx=x, yy=y, **kw):
        return evaluate(model or sparse_model(0.2), xx, yy, "none", store=False,
                        diagnostics=False, **{**FAST, **kw}).key
    keys = [key(), key(seed=1), key(sparse_model(0.3)), key(xx=x[:32], yy=y[:32]),
            key(eps=4 / 255), key(batch_size=8), key(n_iter=11), key(norm="L2", eps=0.5)]
    assert len(set(keys)) == len(keys)
    assert key() == keys[0] != a.key


def test_alpha_zero_has_the_key_of_the_plain_model(data):
    x, y = data
    plain = evaluate(tiny_model(), x, y, "none", store=False)
    zero = evaluate(sparse_model(0.0), x, y, "none", store=False)
    assert plain.key == zero.key and plain.result["clean_flags"] == zero.result["clean_flags"]


def test_resume_after_crash_loses_nothing_and_redoes_nothing(tmp_path, monkeypatch, data):
    x, y = data                          # 48 images, batch 16 -> 3 batches
    reference = evaluate(sparse_model(0.2), x, y, "apgd", store=tmp_path / "ref", **FAST)

    real = ev._eval_batch
    calls = []

    def crashing(model, xb, *a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")        # a kill after two finished batches
        calls.append(len(xb))
        return real(model, xb, *a, **k)
    monkeypatch.setattr(ev, "_eval_batch", crashing)
    with pytest.raises(KeyboardInterrupt):
        evaluate(sparse_model(0.2), x, y, "apgd", store=tmp_path / "run", **FAST)
    st = Store(tmp_path / "run")
    assert st.keys() == [] and len(list(st.shard_dir(reference.key).glob("*.json"))) == 2

    done = []

    def counting(model, xb, *a, **k):
        done.append(k["run_checks"])
        return real(model, xb, *a, **k)
    monkeypatch.setattr(ev, "_eval_batch", counting)
    resumed = evaluate(sparse_model(0.2), x, y, "apgd", store=tmp_path / "run", **FAST)
    assert done == [False]                           # only the missing third batch ran
    assert resumed.result == reference.result
    assert resumed.provenance["batches_resumed"] == 2
    assert not st.shard_dir(reference.key).exists()  # shards merged and removed
    assert st.keys() == [reference.key]


def test_corrupted_record_and_shard_are_recomputed(tmp_path, data):
    x, y = data
    r = evaluate(sparse_model(0.2), x, y, "apgd-ce", store=tmp_path, **FAST)
    st = Store(tmp_path)
    p = st.path(r.key)
    doc = json.loads(p.read_text())
    doc["result"]["robust_acc"] = 1.0               # tampered number: checksum mismatch
    p.write_text(json.dumps(doc))
    with pytest.warns(RuntimeWarning, match="corrupted"):
        again = evaluate(sparse_model(0.2), x, y, "apgd-ce", store=tmp_path, **FAST)
    assert not again.cached and again.result == r.result
    # a damaged shard of an unfinished run is redone
    st.put_shard("k" * 32, 0, {"n": 16})
    (st.shard_dir("k" * 32) / "00000.json").write_text("{not json")
    with pytest.warns(RuntimeWarning, match="corrupted"):
        assert st.get_shard("k" * 32, 0) is None


# --- adaptive evaluation ------------------------------------------------------------------------

def test_worst_case_is_the_per_example_and_of_components(data):
    x, y = data
    model = sparse_model(0.3)
    set_backward(model, "exact")
    r = evaluate(model, x, y, "worst:apgd-ce,bpda:apgd-ce,transfer:apgd-ce", store=False, **FAST)
    comps = list(r.components)
    assert comps == ["apgd-ce", "bpda:apgd-ce", "transfer:apgd-ce"]
    flags = np.logical_and.reduce([r.component_flags(c) for c in comps])
    assert np.array_equal(flags, r.robust_flags)
    assert all(r.components[c]["robust_acc"] >= r.robust_acc for c in comps)
    assert all(m.backward == "exact" for _, m in meansparse_modules(model))
    assert "zero_grad_identity" in r.diagnostics


def test_transfer_from_an_explicit_source_equals_the_base_model(data):
    x, y = data
    model = sparse_model(0.3)
    src = tiny_model().train()
    a = evaluate(model, x, y, "transfer:apgd-ce", store=False, **FAST)
    b = evaluate(model, x, y, "transfer:apgd-ce", source=src, store=False, **FAST)
    assert a.key != b.key and b.spec["source"]["model"] == a.spec["model"]
    assert np.array_equal(a.robust_flags, b.robust_flags)
    assert src.training


def test_aa_runs_end_to_end_with_all_four_attacks(data):
    x, y = data
    r = evaluate(tiny_model(), x[:16], y[:16], "aa", store=False, eps=8 / 255, n_iter=5,
                 n_queries=20, batch_size=16)
    assert list(r.components["aa"]["after"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert r.robust_acc <= r.clean_acc


def test_model_state_is_left_as_it_was(data):
    x, y = data
    model = sparse_model(0.2)
    model.train()
    evaluate(model, x, y, "bpda:apgd-ce", store=False, **FAST)
    assert model.training
    assert all(m.backward == "exact" and float(m.alpha) == pytest.approx(0.2)
               for _, m in meansparse_modules(model))


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("change, msg", [
    (dict(attack="pgd-l7"), "unknown attack 'pgd-l7'"),
    (dict(eps=0), "eps must be a finite number > 0"),
    (dict(eps=-0.1), "eps must be a finite number > 0"),
    (dict(eps=8), "did you mean 8/255"),
    (dict(norm="L3"), "norm must be 'Linf' or 'L2'"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(seed=-1), r"seed must be an integer from 0 to 2\*\*63 - 1"),
    (dict(y=torch.zeros(47, dtype=torch.long)), "x has 48 images but y has 47 labels"),
    (dict(x=torch.zeros(0, 3, 8, 8), y=torch.zeros(0, dtype=torch.long)), "no data"),
    (dict(y=torch.zeros(48)), "integer class labels"),
    (dict(y=torch.full((48,), 7)), r"labels must be in \[0, 4\)"),
    (dict(x=torch.full((48, 3, 8, 8), 2.0)), r"pixels in \[0, 1\]"),
])
def test_bad_input_gives_clear_errors(data, change, msg, tmp_path):
    x, y = data
    kw = dict(x=x, y=y, attack="apgd-ce", eps=8 / 255, norm="Linf", batch_size=16, seed=0)
    kw.update(change)
    with pytest.raises(ValueError, match=msg):
        evaluate(tiny_model(), kw.pop("x"), kw.pop("y"), kw.pop("attack"), store=tmp_path, **kw)
    assert Store(tmp_path).keys() == []


def test_uncalibrated_site_with_alpha_is_refused(data):
    x, y = data
    m = tiny_model()
    sparsify(m, "activations", input_size=(3, 8, 8))
    for _, op in meansparse_modules(m):
        op.alpha.fill_(0.2)
    with pytest.raises(ValueError, match="no statistics"):
        evaluate(m, x, y, "none", store=False)


# --- sweeps -------------------------------------------------------------------------------------

def test_sweep_end_to_end_with_paired_tests(tmp_path, data):
    x, y = data
    model = sparse_model(0.1)
    sw = sweep(model, x, y, alphas=[0.0, 0.2, 0.5], attack="apgd-ce", store=tmp_path,
               progress=False, **FAST)
    assert [p["alpha"] for p in sw.points] == [0.0, 0.2, 0.5]
    rows = sw.rows()
    assert {"alpha", "clean", "robust", "d_robust", "gained", "lost", "p_robust", "p_clean", "clean_lo", "robust_flags"} <= set(rows[0])
    assert len(sw.table()) == 3
    first = sw.paired[0]
    assert first.gained == first.lost == 0 and first.p_value == 1.0       # alpha 0 is the base
    for r, p in zip(sw.results, sw.paired):
        assert p.delta == pytest.approx(r.robust_acc - sw.base[8 / 255].robust_acc)
    assert len(Store(tmp_path).keys()) == 3                 # base shared with alpha = 0
    # model restored, and a rerun is served from the store
    assert all(float(m.alpha) == pytest.approx(0.1) for _, m in meansparse_modules(model))
    again = sweep(model, x, y, alphas=[0.0, 0.2, 0.5], attack="apgd-ce", store=tmp_path,
                  progress=False, **FAST)
    assert all(r.cached for r in again.results)
    assert [r.result for r in again.results] == [r.result for r in sw.results]
    # figures and tables come back from records alone
    tab = to_table(load_records(tmp_path, attack="apgd-ce"))
    tab = tab.to_dict("records") if hasattr(tab, "to_dict") else tab
    assert sorted(r["alpha"] for r in tab) == [0.0, 0.2, 0.5]


def test_sweep_over_sites_and_statistics_modes(tmp_path, data):
    x, y = data
    model = sparse_model(0.0)
    before = {n: m.var.clone() for n, m in meansparse_modules(model)}
    calib = make_data(64, 5)[0]
    sw = sweep(model, x[:16], y[:16], alphas=[0.3], attack="apgd-ce", sites="cumulative",
               stats=["exact", "official"], calib_data=calib, calib_batch_size=16,
               store=tmp_path, progress=False, n_iter=5, batch_size=16)
    assert [(p["stats"], p["sites"]) for p in sw.points] == [
        ("exact", "cumulative:0"), ("exact", "cumulative:1"),
        ("official", "cumulative:0"), ("official", "cumulative:1")]
    assert [len(r.spec["sites"]) for r in sw.results] == [1, 2, 1, 2]
    h = {p["stats"]: {s["stats"] for s in r.spec["sites"].values()}
         for p, r in zip(sw.points, sw.results) if p["sites"] == "cumulative:1"}
    assert h["exact"] != h["official"]                       # statistics are part of the key
    assert sw.results[0].meta["stats"] == "exact"
    # statistics, alpha, centre and backward restored
    assert all(torch.equal(m.var, before[n]) for n, m in meansparse_modules(model))
    assert all(float(m.alpha) == 0 for _, m in meansparse_modules(model))


def test_sweep_over_centres_backward_and_eps(tmp_path, data):
    x, y = data
    model = sparse_model(0.0)
    sw = sweep(model, x[:16], y[:16], alphas=[0.3], eps=[4 / 255, 8 / 255], attack="apgd-ce",
               centres=["mean", "zero"], backward=["exact", "identity"], store=tmp_path,
               progress=False, n_iter=5, batch_size=16)
    assert len(sw) == 8 and set(sw.base) == {4 / 255, 8 / 255}
    assert {(p["centre"], p["backward"]) for p in sw.points} == {
        ("mean", "exact"), ("mean", "identity"), ("zero", "exact"), ("zero", "identity")}
    for p, r in zip(sw.points, sw.results):
        assert {s["centre"] for s in r.spec["sites"].values()} == {p["centre"]}
        assert {s["backward"] for s in r.spec["sites"].values()} == {p["backward"]}
        assert r.eps == p["eps"]
    ops = [m for _, m in meansparse_modules(model)]
    assert all(m.centre == "mean" and m.backward == "exact" for m in ops)


def test_site_subsets_and_sweep_errors(data):
    x, y = data
    m = sparse_model(0.2)
    names = [s.name for s in sites(m)]
    assert site_subsets(m, "single") == {f"single:{i}": [n] for i, n in enumerate(names)}
    assert site_subsets(m, "cumulative")["cumulative:1"] == names
    assert site_subsets(m, "tags") == {"tag:before_activation": names}
    with pytest.raises(ValueError, match="unknown site subset kind"):
        site_subsets(m, "odd")
    with pytest.raises(ValueError, match="calib_data"):
        sweep(m, x, y, alphas=[0.2], stats=["exact"], progress=False, store=False)
    with pytest.raises(ValueError, match="no MeanSparse sites"):
        sweep(tiny_model(), x, y, alphas=[0.2], progress=False, store=False)


def test_sweep_refuses_an_unknown_centre_before_computing(tmp_path, data):
    """An unknown centre used to be computed as the global mean and stored under the unknown name."""
    x, y = data
    m = sparse_model(0.0)
    with pytest.raises(ValueError, match="unknown centre 'median'"):
        sweep(m, x, y, alphas=[0.0, 0.3], centres=["median"], attack="none", store=tmp_path, progress=False)
    assert not list(tmp_path.rglob("*.json"))


# --- the key without running: evaluation_plan; one merge; one site state -----------------------

@pytest.mark.parametrize("alpha, attack, with_source", [
    (0.2, "none", False), (0.2, "apgd-ce", False), (0.2, "bpda", False), (0.2, "transfer", False),
    (0.2, "transfer", True), (0.2, "worst:apgd-ce,bpda", False), (0.2, "worst:apgd-ce,bpda,transfer", False),
    (0.0, "bpda", False), (0.0, "worst:apgd-ce,transfer", False)])
def test_evaluation_plan_gives_the_key_evaluate_stores(tmp_path, data, alpha, attack, with_source):
    """The executor learns which points are stored from evaluation_plan: its key must be the record's key (on a
    model without active sites BPDA and transfer share the direct attack's record, in the plan as in evaluate)."""
    x, y = data[0][:12], data[1][:12]
    m = sparse_model(alpha)
    src = tiny_model() if with_source else None
    kw = dict(eps=8 / 255, n_iter=1, batch_size=8, seed=2)
    m.train()
    plan = ev.evaluation_plan(m, x, y, attack, source=src, **kw)
    assert m.training and not any(tmp_path.iterdir())           # pure: nothing ran, nothing was written
    m.eval()
    r = evaluate(m, x, y, attack, source=src, store=tmp_path, diagnostics=False, name="labels", tags={"t": 1}, **kw)
    assert plan.key == r.key and plan.spec == r.spec and Store(tmp_path).get(plan.key) is not None
    assert plan.batch_size == 8


def test_evaluation_plan_checks_the_inputs_as_evaluate_does(data):
    x, y = data
    with pytest.raises(ValueError, match="n_iter must be >= 1"):
        ev.evaluation_plan(sparse_model(0.2), x, y, "apgd-ce", n_iter=0)
    with pytest.raises(ValueError, match="eps"):
        ev.evaluation_plan(sparse_model(0.2), x, y, "apgd-ce", eps=8)


def test_merge_results_of_any_split_is_the_whole_result(data):
    """The one merge of the result schema (batches in evaluate, shard records in shards.merge_records): any split
    of the images into consecutive ranges merges back into the whole result, rebuilt from per-example flags."""
    x, y = data
    r = evaluate(sparse_model(0.2), x, y, "worst:apgd-ce,bpda", store=False, diagnostics=False, **FAST)
    whole = r.result

    def part(a, b):
        return {"n": b - a, "clean_flags": whole["clean_flags"][a:b],
                "components": {k: {"attacks": c["attacks"], "outcome": c["outcome"][a:b]}
                               for k, c in whole["components"].items()}}
    for cuts in ([0, 48], [0, 5, 48], [0, 16, 17, 40, 48]):
        merged = ev.merge_results([part(a, b) for a, b in zip(cuts, cuts[1:])])
        assert {k: v for k, v in merged.items() if k != "diagnostics"} == \
            {k: v for k, v in whole.items() if k != "diagnostics"}
    assert 0 < whole["robust"] < whole["clean"]   # the split is tested on flags that differ


def test_preserved_sites_restores_every_site_also_on_error():
    from msparse.core.placement import apply_site_state, preserved_sites, set_alpha, site_state

    m = sparse_model(0.2)
    before = site_state(m)
    with pytest.raises(RuntimeError, match="boom"):
        with preserved_sites(m):
            set_alpha(m, 0.7)
            set_backward(m, "identity")
            for _, op in meansparse_modules(m):
                op.centre = "zero"
                op.mean.add_(1.0)
            raise RuntimeError("boom")
    after = site_state(m)
    assert [(b, c) for _, b, c in after] == [(b, c) for _, b, c in before] == [("exact", "mean")] * len(before)
    assert all(torch.equal(sa[k], sb[k]) for (sa, _, _), (sb, _, _) in zip(after, before) for k in sb)
    with pytest.raises(ValueError, match="site state for 1 operators"):
        apply_site_state(m, before[:1])
