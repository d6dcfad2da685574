"""Each page's experiment function, run with its default parameters on the committed records: nothing is
recomputed, every number it returns is the number of the record it cites, and its verdict is worded by the
tested rules (msparse.report.verdicts)."""
import re

import pytest
from pathlib import Path



COMMITTED = Path(__file__).resolve().parent.parent / "results"


def test_table1(no_compute, rows_match_records):
    from msparse.experiments import table1

    res = table1.run(results_dir=str(COMMITTED), progress=False)
    assert [r["alpha"] for r in res.test] == [0.0, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
    assert [r["alpha"] for r in res.train] == [0.0, 0.25, 0.5]
    assert all(r["cached"] for r in res.rows)
    rows_match_records(res.rows)
    assert res.verdict.startswith("**Verdict: ")
    t = table1.table(res)
    assert list(t.index) == [0.0, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
    # BPDA beside the direct attack on the same images (α = 0 is the direct attack's own record)
    assert [r["alpha"] for r in res.bpda] == [r["alpha"] for r in res.test]
    assert res.bpda[0]["key"] == res.test[0]["key"] and {r["attack"] for r in res.bpda[1:]} == {"bpda:apgd-ce"}
    assert list(table1.bpda_table(res).index) == [r["alpha"] for r in res.test]
    assert "ours: stands % [95% CI]" in table1.bpda_table(res).columns and "stands" in table1.bpda_caption(res)
    for cap in (table1.caption(res), table1.bpda_caption(res)):
        assert "n = 100" in cap and "α ∈ {0, 0.15" in cap and "20 iterations" in cap and "msparse/default" in cap
    # the verdict re-checked on the first half of the images: a note exactly when the two verdicts differ
    from msparse.report import verdicts as vd
    from msparse.report.tables import clean_flags

    b, r = res.test[0], next(x for x in res.test if x["alpha"] == table1.CLAIM_ALPHA)
    st = res.setup.store
    vs = vd.prefix_verdicts(vd.gain_claim, b, r, [50, 100], clean_base=clean_flags(st, b), clean_new=clean_flags(st, r))
    assert bool(res.fragility) == (vs[50].status != vs[100].status)


def test_the_demo_says_what_it_is_computing_before_each_slow_step(monkeypatch, capsys):
    """`python -m msparse demo` prints a progress line (with elapsed seconds) before loading, the statistics and
    each attack, so a minutes-long run on CPU is never silent."""
    from types import SimpleNamespace

    import torch

    from msparse import demo

    def fake_eval(model, x, y, attack="none", **kw):
        print(f"<evaluate {attack}>")
        return SimpleNamespace(robust_acc=0.4, robust_ci=(0.3, 0.5), clean_acc=0.7, clean_ci=(0.6, 0.8), cached=False)

    info = SimpleNamespace(source="fake")
    monkeypatch.setattr(demo, "load_model", lambda: SimpleNamespace(width=8))
    monkeypatch.setattr(demo, "load_data", lambda *a, **k: (torch.zeros(2, 3, 32, 32), torch.zeros(2), info))
    monkeypatch.setattr(demo, "sparsify", lambda m, p: ["s"] * 17)
    monkeypatch.setattr(demo, "calibrate", lambda *a, **k: {"n_samples": 2, "seconds": 0.0})
    monkeypatch.setattr(demo, "set_alpha", lambda m, a: None)
    monkeypatch.setattr(demo, "evaluate", fake_eval)
    demo.run(n=2, alpha=0.35, n_stats=2, progress=False)
    out = capsys.readouterr().out
    for line in ("loading the shipped offline ResNet-18", "statistics (exact μ, σ) at 17 sites",
                 "[1/3] α = 0: apgd-ce", "[2/3] α = 0.35: apgd-ce", "[3/3] α = 0.35: bpda:apgd-ce"):
        assert line in out, line
    assert out.index("[3/3] α = 0.35: bpda:apgd-ce") < out.index("<evaluate bpda:apgd-ce>")
    assert re.search(r"^\[\s*\d+\.\d s\] loading", out, flags=re.M)


def test_claims_ledger_one_test_per_record_pair_with_holm(no_compute, rows_match_records):
    from msparse.evaluation.significance import holm
    from msparse.experiments import claims

    led = claims.run(results_dir=str(COMMITTED))
    rows_match_records(led.rows)
    idents = [c.ident for c in led.claims]
    assert len(idents) == len(set(idents)) and len(led.claims) >= 10          # pages sharing records share a test
    merged = next(c for c in led.claims if "Table 3" in c.page and "Table 7" in c.page)
    assert merged.model == "msparse/resnet18-gelu-w8-pgdat" and merged.alpha == 0.35
    direct = [c for c in led.claims if c.direct.difference is not None]
    assert [c.p_direct_holm for c in direct] == holm([c.direct.difference.p_value for c in direct])
    stood = [c for c in led.claims if c.stands is not None]
    assert [c.p_stands_holm for c in stood] == holm([c.stands.difference.p_value for c in stood])
    for c in stood:   # what stands (every stored attack pooled) never beats the direct attack on the same images
        assert c.worst[0]["robust"] <= c.pair[0]["robust"] and c.worst[1]["robust"] <= c.pair[1]["robust"]
    # every page's claim carries its one answer (the same object the chapter and the start page show)
    answers = claims.answers(str(COMMITTED))
    assert all(c.answer is answers[c.answer.claim.id] for c in led.claims)
    t = claims.table(led)
    assert len(t) == len(led.claims) and "verdict (stands, after Holm)" in t.columns
    # "reproduced" survives only with a Holm-adjusted p below the level
    for c, v in zip(led.claims, t["verdict (direct, after Holm)"]):
        assert v != "reproduced" or c.p_direct_holm < 0.05
    assert "Holm" in claims.summary(led)
    # every claim on all 1000 offline test images: the page's own records extended (same experiment, more images)
    from msparse.evaluation.store import Store
    from msparse.evaluation.verify import rerun_key

    st = Store(COMMITTED)
    assert {c.n for c in led.claims} == {claims.N_CLAIM} and {c.page_n for c in led.claims} == {500, 1000}
    for c in led.claims:
        if c.page_n < c.n:
            for new, old in zip(c.pair, c.page_pair):
                assert new["key"] == rerun_key(st.get(old["key"]), n=c.n) and new["alpha"] == old["alpha"]
                new_rec, old_rec = st.get(new["key"]), st.get(old["key"])   # the page's images come first
                assert new_rec["result"]["clean_flags"][:c.page_n] == old_rec["result"]["clean_flags"]
        else:
            assert c.pair == c.page_pair and c.direct is c.page_direct
    # every claim's direct test repeated under seeds 1 and 2 on the page's images: the same records but the seed
    for c in led.claims:
        assert sorted(c.by_seed) == sorted(c.seed_pairs) == list(claims.SEEDS)
        for k, rows in c.seed_pairs.items():
            for new, old in zip(rows, c.page_pair):
                assert new["key"] == rerun_key(st.get(old["key"]), seed=k)
                assert (new["n"], new["alpha"]) == (old["n"], old["alpha"])
            assert c.by_seed[k].difference.delta_pp == pytest.approx(rows[1]["robust"] - rows[0]["robust"])
    seeds = claims.seed_table(led)
    assert len(seeds) == len(led.claims) and "same verdict under every seed" in seeds.columns
    stable = (seeds["same verdict under every seed"] == "yes").sum()
    assert f"{stable} of {len(led.claims)} keep their verdict under every seed" in claims.seed_summary(led)


def test_table1_claim_at_n_claim_images_has_every_attack_and_the_worst_case(tmp_path):
    from msparse.experiments import table1

    res = table1.run("random:resnet18-gelu-w16", n_examples=4, n_claim=24, n_train=64, n_iter=1,
                     alphas=(0.0, 0.25), train_alphas=(0.0,), results_dir=str(tmp_path), progress=False)
    assert list(res.claim) == list(table1.CLAIM_ATTACKS)
    assert all([r["n"] for r in rows] == [24, 24] and [r["alpha"] for r in rows] == [0.0, 0.25]
               for rows in res.claim.values())
    assert res.claim["BPDA"][1]["attack"] == "bpda:apgd-ce" and res.claim["surrogate"][1]["attack"].startswith("surr")
    for i in (0, 1):   # an image stands only if it survives every attack
        flags = [r[i]["robust_flags"] for r in res.claim.values()]
        assert res.claim_worst[i]["robust_flags"] == "".join("1" if set(c) == {"1"} else "0" for c in zip(*flags))
    t = table1.claim_table(res)
    assert list(t.index) == [*table1.CLAIM_ATTACKS, "stands (every stored attack, pooled)"] and set(t["n"]) == {24}
    assert table1.claim_line(res).startswith("**This page at n = 24: ") and "n = 24 test images" in table1.claim_caption(res)
    assert all(r in res.rows for rows in res.claim.values() for r in rows)
    assert table1.run("random:resnet18-gelu-w16", n_examples=4, n_train=64, n_iter=1, alphas=(0.0, 0.25),
                      train_alphas=(0.0,), results_dir=str(tmp_path), progress=False).claim == {}


@pytest.mark.parametrize("bad", [-1, 2.5, "1000", True])
def test_table1_n_claim_must_be_a_whole_number(bad):
    from msparse.errors import InputError
    from msparse.experiments import table1

    with pytest.raises(InputError, match=r"n_claim \(test images for the claim; 0 or None: skip\) must be a whole number >= 0"):
        table1.run("random:resnet18-gelu-w16", n_claim=bad)


def test_first_images_restricts_flags_and_recomputes_accuracy():
    from msparse.errors import InputError
    from msparse.experiments.sweeps import first_images, worst_case

    rows = [{"alpha": 0.0, "n": 6, "robust": 50.0, "robust_flags": "110100", "attack": "a", "key": "k0"},
            {"alpha": 0.3, "n": 6, "robust": 50.0, "robust_flags": "011001", "attack": "a", "key": "k1",
             "d_robust": 0.0, "p_robust": 1.0}]
    got = first_images(rows, 4)
    assert [(r["n"], r["robust_flags"], r["robust"]) for r in got] == [(4, "1101", 75.0), (4, "0110", 50.0)]
    assert all("key" not in r and "p_robust" not in r and r["robust_lo"] < r["robust"] < r["robust_hi"] for r in got)
    other = [{**r, "n": 4, "robust_flags": f, "attack": "b"} for r, f in zip(rows, ("1111", "0010"))]
    assert [r["robust_flags"] for r in worst_case(other, got)] == ["1101", "0010"]
    with pytest.raises(InputError, match="first 7 images of a row of 6"):
        first_images(rows, 7)


@pytest.mark.parametrize("bad", [-1, 2.5, True, "200"])
def test_adaptive_n_aa_must_be_a_whole_number(bad):
    from msparse.errors import InputError
    from msparse.experiments import adaptive

    with pytest.raises(InputError, match="n_aa .* whole number >= 0"):
        adaptive.run("random:resnet18-gelu-w16", n_aa=bad)


def test_claims_seeds_must_be_whole_numbers():
    from msparse.errors import InputError
    from msparse.experiments import claims

    with pytest.raises(InputError, match=r"each of seeds \(an attack seed; \[\] for none\) must be a whole number >= 0"):
        claims.run(seeds=[1, -2])
    with pytest.raises(InputError, match=r"each of seeds \(an attack seed; \[\] for none\) must be a whole number >= 0"):
        claims.run(seeds=["1"])


def test_claims_n_claim_must_be_a_whole_number():
    from msparse.errors import InputError
    from msparse.experiments import claims

    with pytest.raises(InputError, match=r"n_claim \(test images per claim; 0: each page's own n\) must be a whole "
                                         r"number >= 0, got -1"):
        claims.run(n_claim=-1)
