"""The paper at full scale, as a plan: the list of records, the cost estimate, and running it on a cluster."""
from __future__ import annotations

import importlib.util
from dataclasses import replace

import pytest

from msparse.errors import MsparseError
from msparse.experiments import plan


def test_the_plan_covers_every_paper_item_at_full_scale():
    items = plan.paper_plan()
    assert {it.page for it in items} == set(plan.PAGES)
    t1 = [it for it in items if it.page == "table1" and it.model == "Peng2023Robust" and it.dataset == "cifar10"]
    assert len(t1) == 1 and t1[0].records == 18 and t1[0].n == 10_000 and t1[0].in_book   # 9 α, test and train
    assert all(it.n == 5_000 and not it.in_book for it in items if it.dataset == "imagenet")
    attacks = {it.attack for it in items}
    assert {"apgd-ce", "aa", "bpda", "transfer", "apgd"} <= attacks
    only = plan.paper_plan(8, models=["Peng2023Robust"], pages=["table1"])
    assert {it.n for it in only} == {8} and {it.model for it in only} == {"Peng2023Robust"}


def test_the_plan_refuses_unknown_pages_and_models():
    with pytest.raises(MsparseError, match="unknown page"):
        plan.paper_plan(pages=["table99"])
    with pytest.raises(MsparseError, match="no plan item"):
        plan.paper_plan(models=["NoSuchModel"])


def test_the_estimate_scales_with_flops_passes_and_throughput():
    items = {(it.page, it.model, it.dataset, it.attack): it for it in plan.paper_plan()}
    peng = items[("table1", "Peng2023Robust", "cifar10", "apgd-ce")]
    wang = items[("table1", "Wang2023Better_WRN-70-16", "cifar10", "apgd-ce")]
    assert plan.estimate(peng) / plan.estimate(wang) == pytest.approx(120.94 / 77.53)
    assert plan.estimate(peng, gpu_tflops=100) == pytest.approx(plan.estimate(peng) / 2)
    # 18 records x 10,000 images x (100 + 1/3) passes x 3 x 120.94 GFLOPs / 50 TFLOP/s
    assert plan.estimate(peng) == pytest.approx(18 * 1e4 * (100 + 1 / 3) * 3 * 120.94e9 / 50e12 / 3600)
    assert plan.passes("apgd-ce") < plan.passes("apgd") < plan.passes("apgd-ce+t") < plan.passes("aa")
    with pytest.raises(MsparseError, match="no cost model"):
        plan.passes("nosuch")


@pytest.mark.parametrize("n_iter, n_queries", [(100, 5000), (20, 1000)])
def test_passes_come_from_the_registry_and_are_the_old_tables(n_iter, n_queries):
    """The cost table before the registry (first attack on every image, later ones on ROBUST_FRACTION of them,
    + the clean forward), now derived from each attack's AttackMethod.cost."""
    ce, r, fwd = float(n_iter), plan.ROBUST_FRACTION, 1 / 3
    old = {"none": fwd, "apgd-ce": ce, "apgd": ce + r * ce, "apgd-ce+t": ce + r * 9 * ce, "bpda": ce + r * 9 * ce,
           "aa": ce + r * (9 * ce + 9 * ce + n_queries / 3)}
    for name, value in old.items():
        assert plan.passes(name, n_iter, n_queries) == pytest.approx(value + fwd), name
    # transfer = transfer:apgd (APGD-CE then DLR on the base) + the forward on the target; the old table priced
    # it as APGD-CE+T, which transfer has never been
    assert plan.passes("transfer", n_iter, n_queries) == pytest.approx(ce + r * ce + fwd + fwd)
    # every single attack: its own cost; surrogate: once per temperature, later ones on the robust share
    for name, value in {"apgd-dlr": ce, "apgd-t": 9 * ce, "fab-t": 9 * ce, "square": n_queries / 3,
                        "gradest": (1 + n_iter * 65) / 3, "gradest[pairs=8]": (1 + n_iter * 17) / 3,
                        "surrogate:apgd-ce": ce * (1 + 2 * r),
                        "worst:apgd-ce,square": ce + n_queries / 3}.items():
        assert plan.passes(name, n_iter, n_queries) == pytest.approx(value + fwd), name


def test_cli_plan_lists_records_and_estimate(capsys):
    from msparse.cli import main

    assert main(["plan", "paper", "--pages", "table1", "--no-measure", "--store", "/nonexistent-msparse"]) == 0
    out = capsys.readouterr().out
    assert "Peng2023Robust" in out and "GPU-h" in out and "54 records" in out and "GPU-hours" in out
    assert main(["plan", "paper", "--models", "NoSuchModel", "--no-measure"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no plan item" in err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                    reason="distributed is not installed (pip install 'msparse[cluster]')")
def test_plan_run_on_a_local_cluster_is_what_the_book_page_reads(tmp_path, no_compute):
    """A tiny plan item (random weights, 8 images, 1 iteration) run through local:2; the page's own function
    with the same parameters then finds every record stored (no_compute fails on any computed batch)."""
    from msparse.evaluation import executor
    from msparse.experiments import table8

    item = next(it for it in plan.paper_plan(8, pages=["table8"]))
    item = replace(item, alphas=(0.0, 0.35))
    try:
        done = plan.run_plan([item], n_iter=1, cluster="local:2", random_weights=True, results_dir=str(tmp_path),
                             device="cpu", n_train=64, progress=False)
    finally:
        executor._close_clients()
    assert [s.startswith("done") for _, s in done] == [True]
    res = table8.run("random:" + item.model, n_examples=8, n_iter=1, n_train=64, alphas=(0.0, 0.35),
                     results_dir=str(tmp_path), device="cpu", progress=False)
    rows = [r for rs in res.by_group.values() for r in rs]
    assert len(rows) == 4 and all(r["n"] == 8 for r in rows)


def test_the_cascade_estimate_weights_each_stage_by_the_share_reaching_it():
    """At a point where several items attack the same model and images, stage k costs reach[k] × its passes (+ the
    clean forward); an estimate that ignored the shares would equal the independent one and fail here."""
    items = plan.paper_plan()
    key = {(it.page, it.model, it.dataset, it.attack): i for i, it in enumerate(items)}
    reach = (1.0, 0.6, 0.5, 0.45, 0.4)
    casc = plan.estimate_cascade(items, reach=reach)
    indep = [plan.estimate(it) for it in items]
    # Peng (CIFAR-10): at α = 0 apgd-ce, apgd-ce+t, bpda, aa; at its α = 0.25 the transfer joins second
    stages = plan.cascade_stages(items)
    pt = ("Peng2023Robust", "cifar10", round(8 / 255, 9), 10_000)
    assert stages[(*pt, 0.0)] == ["apgd-ce", "apgd-ce+t", "bpda", "aa"]
    assert stages[(*pt, 0.25)] == ["apgd-ce", "transfer", "apgd-ce+t", "bpda", "aa"]
    aa = items[key[("fig3", "Peng2023Robust", "cifar10", "aa")]]
    p, fwd = plan.passes("aa"), 1 / 3
    hours = aa.n * ((reach[3] * (p - fwd) + fwd) + (reach[4] * (p - fwd) + fwd)) * 3 * 120.94e9 / 50e12 / 3600
    assert casc[key[("fig3", "Peng2023Robust", "cifar10", "aa")]] == pytest.approx(hours)
    assert hours < 0.5 * indep[key[("fig3", "Peng2023Robust", "cifar10", "aa")]]
    # the first stage attacks every image: Table 1's APGD-CE (first at every α, training images apart) is unchanged
    t1 = key[("table1", "Peng2023Robust", "cifar10", "apgd-ce")]
    assert casc[t1] == pytest.approx(indep[t1])
    # a point with one attack (the appendix grids on the family) costs what it does today
    fam = [i for i, it in enumerate(items) if it.model == plan.FAMILY]
    assert fam and all(casc[i] == pytest.approx(indep[i]) for i in fam)
    # reach 1 everywhere: the independent estimate, item by item; smaller shares: cheaper
    assert plan.estimate_cascade(items, reach=(1.0,)) == pytest.approx(indep)
    lower = plan.estimate_cascade(items, reach=(1.0, 0.3))
    assert sum(lower) < sum(casc) < sum(indep)


def test_the_committed_reach_is_the_benchmark_s_and_is_checked(tmp_path):
    from pathlib import Path

    r = plan.CASCADE_REACH
    assert r[0] == 1.0 and len(r) > 1 and all(b <= a for a, b in zip(r, r[1:]))   # measured, not a placeholder
    bench = Path(__file__).resolve().parent.parent / "bench" / "results" / "cascade.json"
    if bench.exists():
        reach, src = plan.reach_from_bench(bench)
        assert reach == pytest.approx(r, abs=1e-4) and "msparse/default" in src
    for bad in [(), (0.5, 0.4), (1.0, 0.3, 0.6), (1.0, 0.0), ("x",)]:
        with pytest.raises(MsparseError, match="reach"):
            plan.estimate_cascade(plan.paper_plan(), reach=bad)
    (tmp_path / "other.json").write_text('{"models": [], "budget": {}}')
    with pytest.raises(MsparseError, match="no cascade of"):
        plan.reach_from_bench(tmp_path / "other.json")
    with pytest.raises(MsparseError, match="not a bench"):
        plan.reach_from_bench(tmp_path / "missing.json")


def test_cli_plan_prints_the_cascade_estimate_beside_the_independent_one(capsys, tmp_path):
    import json

    from msparse.cli import main

    doc = {"budget": {"n_iter": 20, "n_queries": 1000, "gradest_steps": 10},
           "models": [{"model": "msparse/default", "alpha": 0.25, "n": 64,
                       "cascade": {"stages": [{"attack": "apgd", "reach_of_clean": 1.0},
                                              {"attack": "aa", "reach_of_clean": 0.25}]}}]}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    assert main(["plan", "paper", "--pages", "fig3", "--no-measure", "--store", "/nonexistent-msparse",
                 "--reach", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "GPU-h cascade" in out and "as cascades" in out and "1.00, 0.25" in out and "c.json" in out
    items = plan.paper_plan(pages=["fig3"])
    total = sum(round(v, 2) for v in plan.estimate_cascade(items, reach=(1.0, 0.25)))
    assert f"about {total:.0f} GPU-hours" in out


def _bench_cascade():
    import importlib.util
    import os
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "bench_cascade.py"
    spec = importlib.util.spec_from_file_location("bench_cascade", path)
    mod = importlib.util.module_from_spec(spec)
    env = os.environ.copy()
    try:
        spec.loader.exec_module(mod)
    finally:                               # the script sets OMP_NUM_THREADS for itself, not for this test session
        os.environ.clear()
        os.environ.update(env)
    return mod


def test_the_cascade_floor_is_each_stage_s_cost_on_the_images_that_end_robust():
    """The benchmark's floor: a stage that attacked only the final robust images costs all it cost; one that
    attacked four times as many, a quarter; the bound on the ratio is independent / floor."""
    floor = _bench_cascade().floor
    m = {"n": 10, "independent": {"cpu_s": 30.0}, "ratio_independent_over_cascade": 1.5,
         "cascade": {"cpu_s": 20.0, "robust": 2,
                     "stages": [{"attacked": 8, "record_wall_s": 8.0}, {"attacked": 2, "record_wall_s": 12.0}]}}
    f = floor(m)
    assert f["floor_cpu_s"] == pytest.approx(20.0 * (8 * 2 / 8 + 12) / 20)   # 14 s
    assert f["ratio_bound"] == pytest.approx(30.0 / 14.0, abs=1e-3) and f["ratio"] == 1.5
    m["cascade"]["stages"][0]["attacked"] = 2                                  # nothing to skip: the floor is the cost
    assert floor(m)["floor_cpu_s"] == pytest.approx(20.0)


def test_the_committed_benchmark_s_cascade_is_above_its_floor():
    from pathlib import Path
    import json

    bench = Path(__file__).resolve().parent.parent / "bench" / "results" / "cascade.json"
    if not bench.exists():
        pytest.skip("no committed bench/results/cascade.json")
    mod = _bench_cascade()
    for m in json.loads(bench.read_text())["models"]:
        f = mod.floor(m)
        assert 0 < f["floor_cpu_s"] <= m["cascade"]["cpu_s"] and f["ratio"] <= f["ratio_bound"]
        assert "no order of these attacks" in mod.summary_line(m)
