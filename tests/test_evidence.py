"""Evidence, pooled: one robust accuracy that stands per configuration and images, the attack budget each side of a
comparison received, and one verdict per claim (msparse.evaluation.evidence, msparse.experiments.claims)."""
from pathlib import Path

import pytest
import torch

import msparse as ms
from msparse.evaluation import evidence as ev
from msparse.evaluation.store import Store
from msparse.report import referee, verdicts as vd

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "results"


def _tiny():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(1),
                            torch.nn.Flatten(), torch.nn.Linear(4, 10))
    ms.sparsify(m, "activations", input_size=(3, 32, 32))
    x, _ = ms.load_data("cifar10", "train", n=64)
    ms.calibrate(m, x)
    return m


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with the tiny model attacked at α = 0 and α = 0.3 on the first 24 (and 12) CIFAR-10 test images."""
    root = tmp_path_factory.mktemp("evidence")
    m = _tiny()
    x, y = ms.load_data("cifar10", "test", n=24)
    kw = dict(store=root, eps=8 / 255, n_iter=2, name="tiny", progress=False)
    out = {}
    for a in (0.0, 0.3):
        ms.set_alpha(m, a)
        for attack, seed, n in (("apgd-ce", 0, 24), ("apgd-ce", 1, 24), ("bpda:apgd-ce", 0, 12),
                                ("surrogate:apgd-ce", 0, 24)):
            if a == 0.0 and attack != "apgd-ce":
                continue
            r = ms.evaluate(m, x[:n], y[:n], attack=attack, seed=seed, data=f"cifar10/test 0..{n - 1} (offline)",
                            **kw)
            out[(a, attack, seed, n)] = r
    return Store(root), out


def test_pool_is_the_per_image_worst_case_of_every_record_on_the_images(store):
    st, got = store
    point = ev.point_of(st.get(got[(0.3, "apgd-ce", 0, 24)].key))
    e = ev.pool(st, point, 12)
    recs = [r for k, r in got.items() if k[0] == 0.3]
    want = [all(bool(r.robust_flags[i]) for r in recs) for i in range(12)]   # the 24-image records' first 12
    assert e.flags == want and len(e.records) == len(recs)
    assert e.robust == pytest.approx(100 * sum(want) / 12)
    # on all 24 images, the 12-image BPDA record cannot serve
    assert {r["attack"] for r in ev.pool(st, point, 24).records} == {"apgd-ce", "surrogate:apgd-ce"}
    # the backward mode is not part of the point: BPDA's record pools with the official gradient's
    assert ev.point_of(st.get(got[(0.3, "bpda:apgd-ce", 0, 12)].key)) == point


def test_a_record_whose_images_are_not_the_prefix_is_not_pooled(store, tmp_path):
    st, got = store
    rec = st.get(got[(0.3, "apgd-ce", 0, 24)].key)
    point = ev.point_of(rec)
    m = _tiny()
    ms.set_alpha(m, 0.3)
    x, y = ms.load_data("cifar10", "test", n=36)
    # labelled as the first 12 test images, but they are images 24..35: the hash check keeps it out
    liar = ms.evaluate(m, x[24:], y[24:], attack="apgd-ce", seed=5, eps=8 / 255, n_iter=2, store=st.root,
                       data="cifar10/test 0..11 (offline)", progress=False)
    assert ev.point_of(st.get(liar.key)) == point
    assert liar.key not in {r["key"] for r in ev.pool(st, point, 12).records}


def test_runs_collapse_to_the_official_gradient_at_alpha_zero_and_count_distinct_computations(store):
    st, got = store
    a = st.get(got[(0.3, "apgd-ce", 0, 24)].key)
    s = st.get(got[(0.3, "surrogate:apgd-ce", 0, 24)].key)
    assert {r.route for r in ev.runs_of(s)} == {"surrogate τ=0.3", "surrogate τ=0.1", "surrogate τ=0.03"}
    assert {r.route for r in ev.runs_of(s, base=True)} == {"direct"}
    # APGD-CE inside APGD-CE+T is APGD-CE with the same seed: one run, not two
    both = {**a, "spec": {**a["spec"], "attack": {**a["spec"]["attack"], "name": "apgd-ce+t"}}}
    assert ev.runs_of(a) < ev.runs_of(both) and ev.budget(ev.runs_of(both))["CE"] == (1, 2)


def test_an_unequal_budget_is_measured_and_filled_by_other_seeds(store):
    st, got = store
    point = ev.point_of(st.get(got[(0.3, "apgd-ce", 0, 24)].key))
    cmp = ev.compare(st, point)
    assert cmp.n == 24
    # α: CE from seeds 0 and 1 and three surrogate stages = 5 runs; the base: seeds 0 and 1
    assert cmp.new.budget["CE"] == (5, 2) and cmp.base.budget["CE"] == (2, 2)
    assert not cmp.fair and cmp.missing == {"CE": "3 more runs (2 of 5)"}
    from msparse.evaluation.verify import Rebuilder

    class TinyRebuilder(Rebuilder):   # the tiny model is no registry entry: hand it over, statistics and all
        def model(self, name):
            return self.models.setdefault(name, (_tiny(), None))[0]

        def calibrate_to(self, name, model, wanted):
            return "the tiny model's own"

    made = ev.fill_base(st, cmp, rebuilder=TinyRebuilder())
    assert len(made) == 3
    again = ev.compare(st, point)
    assert again.fair and again.base.budget["CE"] == (5, 2)
    seeds = sorted(r["seed"] for r in again.base.records)
    assert seeds == [0, 1, 2, 3, 4]
    # pooled flags never exceed any single record's
    for r in again.base.records:
        assert all(not f or c == "1" for f, c in zip(again.base.flags, r["flags"]))


def test_unequal_budget_withholds_a_verdict_against_the_claim_but_not_a_gain():
    base = [True] * 60 + [False] * 40
    worse = [True] * 40 + [False] * 60          # a significant loss
    better = [True] * 80 + [False] * 20         # a significant gain
    miss = {"CE": "3 more runs (2 of 5)"}
    assert referee.referee_verdict(base, better, base, worse).phrase == "broken by an adaptive attack"
    v = referee.referee_verdict(base, better, base, worse, missing=miss)
    assert v.phrase == "unequal budget" and "attacked more weakly" in v.reason()
    assert referee.referee_verdict(base, worse, base, worse, missing=miss).phrase == "unequal budget"
    assert referee.referee_verdict(base, better, base, better, missing=miss).phrase == "reproduced"


def test_a_base_attacked_harder_than_its_defence_withholds_a_gain_but_not_a_verdict_against_it():
    base = [True] * 60 + [False] * 40
    worse = [True] * 40 + [False] * 60
    better = [True] * 80 + [False] * 20
    extra = {"targeted DLR": "1 more run (0 of 1)"}
    v = referee.referee_verdict(base, better, base, better, extra=extra)
    assert v.phrase == "unequal budget" and "base was attacked harder" in v.reason()
    assert "attacked harder" not in referee.referee_verdict(base, worse, base, worse, extra=extra).reason()
    assert referee.referee_verdict(base, worse, base, worse, extra=extra).phrase == "not reproduced"
    assert referee.referee_verdict(base, better, base, worse, extra=extra).phrase == "broken by an adaptive attack"


def test_comparison_extra_is_the_converse_of_missing():
    class E:   # only the budget is read
        def __init__(self, budget):
            self.budget = budget

    strong, weak = E({"CE": (3, 100), "DLR": (1, 100)}), E({"CE": (2, 50)})
    c = ev.Comparison(strong, weak)
    assert c.missing == {} and c.fair
    assert c.extra == {"CE": "1 more run (2 of 3) and a budget of 100 per run (has 50)",
                       "DLR": "1 more run (0 of 1) and a budget of 100 per run (has 0)"}
    assert ev.Comparison(weak, strong).missing == c.extra and ev.Comparison(weak, strong).extra == {}


def test_one_image_that_would_flip_a_verdict_is_named():
    base = [False] * 100
    # 6 gained, 0 lost: p = 0.031 < 0.05; with one image fewer robust it is 5/0 (p = 0.0625)
    new = [True] * 6 + [False] * 94
    note = vd.one_image_flips(vd.gain_claim, base, new)
    assert note.startswith("fragile:") and "one fewer robust image would make it 'inconclusive'" in note
    assert vd.one_image_flips(vd.gain_claim, base, [True] * 40 + [False] * 60) == ""


# --------------------------------------------------------------------------------------------------
# the committed store: one answer per claim
# --------------------------------------------------------------------------------------------------

def test_every_claim_has_one_answer_from_the_committed_store():
    from msparse.experiments import claims

    got = claims.answers(str(COMMITTED))
    assert list(got) == [d.id for d in claims.CLAIMS]
    for a in got.values():
        assert a.cmp is not None, a.claim.id
        assert a.n == ev.largest_n(Store(COMMITTED), a.cmp.new.point, a.cmp.base.point)
        # as it stands never beats the official gradient alone at α, nor the base's
        assert a.cmp.new.robust <= 100 * sum(a.cmp.new.direct_flags()) / a.n + 1e-9
        assert a.phrase in referee.REFEREE_PHRASES
        if a.phrase != "unequal budget" and a.stands.difference.delta < 0 and a.p_stands_holm < 0.05:
            assert a.cmp.fair
    # the offline default's claim pools Table 1's and Fig. 3's records: one point, one answer
    d = got["default-a0.25"]
    attacks = set(d.cmp.new.attacks)
    assert {"apgd-ce", "apgd-ce+t", "bpda:apgd-ce", "surrogate:apgd-ce"} <= attacks


def test_pages_show_the_answer_word_for_word():
    from msparse.experiments import claims

    chapter = claims.answers_markdown(str(COMMITTED))
    for d in claims.CLAIMS:
        for page in {p.split(" (")[0] for p in d.pages}:
            text = claims.answers_for(page, str(COMMITTED))
            line = claims.answer(d.id, str(COMMITTED)).markdown()
            assert line in text and line in chapter, (page, d.id)
            nb = {"Table 1": "table1_alpha", "Fig. 3": "fig3_headline", "Table 2": "table2_activations",
                  "Table 3": "table3_threat_models", "Table 4": "table4_training", "Table 5": "table5_centre",
                  "Table 7": "table7_sites", "Table 8": "table8_main_vs_add"}[page]
            assert f'claims.answers_for("{page}", results_dir)' in (REPO / "notebooks" / f"{nb}.md").read_text()


def test_one_stands_per_configuration_and_images():
    """Two different attacks' rows on the same point and images get the same robust accuracy that stands."""
    from msparse.experiments.sweeps import pooled

    st = Store(COMMITTED)
    point = next(p for p, recs in ev.load_index(st).items()
                 if p.sites and p.alpha == 0.25 and any(r["meta"].get("model") == "msparse/default" for r in recs)
                 and p.images.startswith("cifar10/test") and any(r["spec"]["data"]["n"] == 1000 for r in recs))
    recs = [r for r in ev.records_at(st, point, 1000)]
    assert len({r["spec"]["attack"]["name"] for r in recs}) >= 3
    got = {round(pooled({"key": r["key"], "n": 1000}, st)["stands"], 9) for r in recs}
    assert len(got) == 1 and got == {round(ev.pool(st, point, 1000).robust, 9)}


def test_a_gain_measured_only_through_the_official_gradient_is_not_reproduced():
    base = [True] * 60 + [False] * 40
    better = [True] * 80 + [False] * 20
    assert referee.referee_verdict(base, better, base, better, adaptive=False).phrase == "not attacked adaptively"
    assert referee.referee_verdict(base, better, base, better).phrase == "reproduced"


def test_beyond_official_names_adaptive_and_gradient_free_runs(store):
    st, got = store
    point = ev.point_of(st.get(got[(0.3, "apgd-ce", 0, 24)].key))
    assert ev.pool(st, point, 24).beyond_official            # the surrogate attacked it
    only = ev.Evidence(point, 1, [True], [True], {ev.Run("CE", "direct", 0, 0, 20)})
    assert not only.beyond_official
    assert ev.Evidence(point, 1, [True], [True], {ev.Run("Square (margin)", "direct", 0, 0, 5000)}).beyond_official


def test_the_start_page_leads_with_the_answer_table_and_figure():
    from msparse.experiments import claims

    t = claims.answer_table(str(COMMITTED))
    assert len(t) == len(claims.CLAIMS)
    assert all(c.startswith('<a href="does_it_work.html#claim-') for c in t["claim"])
    assert set(t["verdict"]) <= set(referee.REFEREE_PHRASES)
    assert not t.astype(str).apply(lambda col: col.str.contains("-0.0|nan", regex=True)).any().any()
    assert claims.answer_figure(str(COMMITTED)) is not None
    nb = (REPO / "notebooks" / "intro.md").read_text()
    first = nb.index("claims.bottom_line(")
    assert first < nb.index("claims.answer_figure(") < nb.index("claims.answer_table(") < nb.index("MeanSparse has been broken")
