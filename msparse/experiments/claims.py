"""Every page's primary claim in one family, corrected for multiple comparisons (Holm) across the book.

Each α-sweep page checks the paper's gain claim (Amini et al., arXiv:2406.05927: "MeanSparse raises robust accuracy
at a small clean cost") at its α on its own model, attack and images; the book makes 20-odd such tests, so some would
pass by chance. Here every page's primary claim is collected from its own experiment function (the records it
reads; nothing is recomputed on the default parameters) and judged twice, each family with Holm's step-down
correction (:func:`msparse.evaluation.significance.holm`):

* under the page's **direct attack** (the official gradient: what the paper measured), and
* under the page's **robust accuracy that stands** (the per-image worst case of the direct attack and BPDA, where
  the page runs BPDA at that α; :func:`msparse.experiments.sweeps.stands`).

The claims: Table 1 (default, APGD-CE, α 0.25), Fig. 3 (default, APGD-CE + APGD-T), Table 2 (each activation of the
family, α 0.35), Table 3 (L∞ and L2), Table 4 (each training method), Table 5 (each centre), Table 7 (all sites
active), Table 8 (each site group checked). Table 6's claim is a trend over ε (a sign-flip test on paired gains,
not one paired difference) and the standard-training page's is a ceiling (one-sided Wilson), so neither is in the
family; both keep their own verdicts.

Every claim is tested on the first :data:`N_CLAIM` test images: where a page runs fewer (the appendix family's
pages: 500, as their α sweeps took 3 CPU-hours at 500 images), the claim's own records (the direct attack and
BPDA at α = 0 and α) are extended to them by :func:`msparse.evaluation.verify.rerun` — the same model, sites,
attack and budget, the record's images first — and the page's own verdict is kept beside it.

Every direct test is also repeated under other attack seeds (:data:`SEEDS`: APGD's random starts, AutoAttack's
target order, Square's and the estimator's sampling redrawn; model, images, α and budget the record's, rebuilt by
:func:`msparse.evaluation.verify.rerun`). The seeds size attack noise against each claimed gain; they are
re-measurements of the same claim, not further tests, so they are not in Holm's family: a claim is called stable
when its verdict is the same under every seed. They run on each page's own images.

    led = claims.run(); claims.table(led); claims.summary(led); claims.seed_table(led); claims.seed_summary(led)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .sweeps import worst_case
from .pages import Page, param, register

__all__ = ["Claim", "Ledger", "SEEDS", "N_CLAIM", "run", "table", "summary", "seed_table", "seed_summary", "ClaimDef",
           "CLAIMS", "Answer", "answers", "answer", "answers_for", "answer_table", "bottom_line", "resolve",
           "answers_markdown", "base_ladder", "answer_figure", "claim_at", "IntroParams"]

#: attack seeds besides the pages' own (0) under which every claim's direct test is repeated
SEEDS = (1, 2)
#: test images of every claim (the offline subset's 1000): pages with fewer are extended to them
N_CLAIM = 1000


@dataclass
class Claim:
    """One page's primary claim: the gain claim's verdict (:func:`msparse.report.verdicts.gain_claim`) under the
    direct attack and, where the page runs BPDA at the claim's α, under the robust accuracy that stands; the
    Holm-adjusted p of each (set by :func:`run`)."""
    page: str
    what: str
    model: str
    attack: str
    alpha: float
    n: int
    direct: object                        # Verdict
    stands: object = None                 # Verdict, or None without BPDA at the claim's α
    p_direct_holm: float | None = None
    p_stands_holm: float | None = None
    ident: tuple = ()                     # the records (keys) of the direct test: pages sharing them share a test
    pair: tuple = ()                      # the direct attack's rows at α = 0 and α
    adaptive: tuple = ()                  # BPDA's rows at α = 0 and α (empty without BPDA at the claim's α)
    worst: tuple = ()                     # the per-image worst case of the two at α = 0 and α
    page_n: int = 0                       # the page's own n (n above: the claim's, after extending the records)
    page_pair: tuple = ()                 # the direct attack's rows on the page's own images
    page_direct: object = None            # the direct test's Verdict on the page's own images
    by_seed: dict = field(default_factory=dict)   # {attack seed: Verdict of the direct test under that seed}
    seed_pairs: dict = field(default_factory=dict)   # {attack seed: (row at α = 0, row at α)}
    answer: object = None                 # the claim's one verdict (:class:`Answer`), where it is one of CLAIMS


@dataclass
class Ledger:
    claims: list[Claim]
    rows: list[dict] = field(default_factory=list)    # every row with a record (provenance)


def _pair(rows, alpha):
    """The α = 0 row and the ``alpha`` row of a sweep, or None."""
    from ..report.verdict_lines import _sweep_pair

    b, r = _sweep_pair(rows or [], alpha)
    return (b, r) if b is not None and r is not None else None


def claim_at(page, what, model, attack, alpha, direct_rows, adaptive_rows=None, *, store=None) -> Claim | None:
    """The claim of ``page`` (its label in the ledger, e.g. ``"Table 3"``) that robust accuracy rises at ``alpha``:
    the gain claim on ``direct_rows``' α = 0 and ``alpha`` rows and, with ``adaptive_rows`` (BPDA) at ``alpha``, as it
    stands (every stored attack on these images pooled, in ``store``); None without both rows."""
    from ..report import verdicts as vd
    from .sweeps import pooled_rows

    pair = _pair(direct_rows, alpha)
    if pair is None:
        return None
    direct = vd.gain_claim(*pair)
    ident = tuple(r.get("key") or r["robust_flags"] for r in pair)
    stands, worst = None, ()
    adaptive = _pair(adaptive_rows, alpha)
    if adaptive is not None:   # the robust accuracy that stands: every stored attack on these images, pooled
        worst = tuple(pooled_rows(list(pair), store=store)) if all(r.get("key") for r in pair) else \
            tuple(worst_case(list(pair), list(adaptive)))
        stands = vd.gain_claim({**worst[0], "clean": pair[0]["clean"]}, {**worst[1], "clean": pair[1]["clean"]})
    return Claim(page, what, model, attack, float(alpha), pair[1]["n"], direct, stands, ident=ident, pair=pair,
                 adaptive=adaptive or (), worst=worst, page_n=pair[1]["n"], page_pair=pair, page_direct=direct)


def _stored(rows, st) -> bool:
    return all(r.get("key") and st.get(r["key"]) is not None for r in rows)


def _rerun_rows(rows, st, rb, progress, **change) -> list[dict]:
    """Display rows of ``rows``' records rerun with ``change`` (``seed=`` and/or ``n=``,
    :func:`msparse.evaluation.verify.rerun`): read from the store, computed there when missing."""
    from ..evaluation.verify import rerun
    from ..report.tables import result_row

    extra = {"seed": change["seed"]} if "seed" in change else {}
    return [result_row(rerun(st.get(r["key"]), store=st, rebuilder=rb, progress=progress, **change),
                       alpha=r["alpha"], **extra) for r in rows]


def _extended(c: Claim, n: int, st, rb, progress) -> Claim:
    """``c`` on the first ``n`` test images: its direct and BPDA records rerun on them; the page's own pair and
    verdict kept. ``c`` itself when it already has ``n`` images or its records are not stored."""
    if c.n >= n or not _stored((*c.pair, *c.adaptive), st):
        return c
    new = claim_at(c.page, c.what, c.model, c.attack, c.alpha, _rerun_rows(c.pair, st, rb, progress, n=n),
                _rerun_rows(c.adaptive, st, rb, progress, n=n) if c.adaptive else None, store=st)
    new.page_n, new.page_pair, new.page_direct = c.page_n, c.page_pair, c.page_direct
    return new


def _collect(kw: dict) -> list[Claim]:
    """Every page's primary claims (each registered page's ``claims``, :mod:`msparse.experiments.pages`), in book
    order, on the pages' default parameters (``kw``: data_source, device, use_stored, results_dir, progress)."""
    from .pages import pages

    return [c for p in pages() if p.claims is not None for c in p.claims(kw) if c is not None]


def _merge(found: list[Claim]) -> list[Claim]:
    """One claim per test: pages whose claim rests on the same records (the GELU member at α 0.35 is Table 2's,
    Table 3's L∞, Table 4's first method, Table 5's mean centre and Table 7's all-sites point) are one test in
    Holm's family, listed together."""
    merged: dict[tuple, Claim] = {}
    for c in found:
        m = merged.get(c.ident)
        if m is None:
            merged[c.ident] = c
            continue
        if c.page not in m.page.split(", "):
            m.page += f", {c.page}"
        m.what += f"; {c.page}: {c.what}"
        if m.stands is None:
            m.stands, m.adaptive, m.worst = c.stands, c.adaptive, c.worst
    return list(merged.values())


def _rerun_seeds(found: list[Claim], seeds, st, rb, progress) -> list[dict]:
    """Each claim's direct test on its page's images under each of ``seeds`` (other than the page's). Sets
    ``by_seed`` and ``seed_pairs``; returns the rows (provenance)."""
    from ..report import verdicts as vd

    rows = []
    for c in found:
        if not _stored(c.page_pair, st):
            continue
        for k in seeds:
            if k == st.get(c.page_pair[1]["key"])["spec"]["seed"]:
                continue
            pair = tuple(_rerun_rows(c.page_pair, st, rb, progress, seed=k))
            c.seed_pairs[k], c.by_seed[k] = pair, vd.gain_claim(*pair)
            rows += pair
    return rows


def run(*, data_source: str = "auto", device: str = "cpu", use_stored: bool = True, results_dir: str | None = None,
        n_claim: int = N_CLAIM, seeds=SEEDS, progress: bool = False) -> Ledger:
    """Every page's primary claim on its own default parameters (the records the book renders from), with Holm's
    correction over the direct-attack tests and, separately, over the tests of the robust accuracy that stands; each
    claim on the first ``n_claim`` test images (pages with fewer extended to them; 0: each page's own n); each
    direct test repeated on the page's images under the attack ``seeds``. Extensions and seeds are read from the
    store and computed into it when missing; neither runs when ``use_stored`` is False (they are rebuilt from the
    stored records)."""
    from ..evaluation.significance import holm

    from .setup import check_count

    seeds = [check_count("each of seeds", k, "an attack seed; [] for none") for k in seeds or ()]
    check_count("n_claim", n_claim, "test images per claim; 0: each page's own n")
    kw = dict(data_source=data_source, device=device, use_stored=use_stored, results_dir=results_dir,
              progress=progress)
    found = _collect(kw)
    if use_stored:   # extensions and seeds are rebuilt from the stored records
        from ..evaluation.verify import Rebuilder
        from ..report.tables import open_store

        st, rb = open_store(results_dir), Rebuilder(device)
    if n_claim and use_stored:
        found = [_extended(c, n_claim, st, rb, progress) for c in found]
    found = _merge(found)
    # the records the ledger shows (provenance): each claim's tests, and the page's own direct pair where extended
    # (BPDA's records are pooled into the one answers, whose records the start page lists)
    rows = [r for c in found for r in (*c.pair, *(c.page_pair if c.n != c.page_n else ()))]
    for attr, adj in (("direct", "p_direct_holm"), ("stands", "p_stands_holm")):
        judged = [c for c in found if getattr(c, attr) is not None and getattr(c, attr).difference is not None]
        for c, p in zip(judged, holm([getattr(c, attr).difference.p_value for c in judged])):
            setattr(c, adj, p)
    if seeds and use_stored:
        rows += _rerun_seeds(found, seeds, st, rb, progress)
    _attach_answers(found, results_dir)
    return Ledger(found, rows)


def _attach_answers(found: list[Claim], results_dir) -> None:
    """Each ledger claim's one verdict (:func:`answers`), matched by the configuration of its α record."""
    from ..evaluation import evidence as ev
    from ..report.tables import open_store

    st = open_store(results_dir)
    by_point = {a.cmp.new.point: a for a in answers(results_dir).values() if a.cmp is not None}
    for c in found:
        rec = st.get(c.pair[1].get("key")) if c.pair and c.pair[1].get("key") else None
        c.answer = by_point.get(ev.point_of(rec)) if rec is not None else None


def _after_holm(v, p_adj) -> str:
    """The verdict's status, with "reproduced" kept only when the Holm-adjusted p is below the test level."""
    from ..evaluation.significance import ALPHA_TEST

    if v is None:
        return "—"
    if v.status == "reproduced" and (p_adj is None or p_adj >= ALPHA_TEST):
        return "inconclusive after Holm"
    return v.status


def _cell(v, p_adj, base: float, new: float, prefix: str = "") -> str:
    if v is None or v.difference is None:
        return "not run at this α"
    d = v.difference
    return f"{prefix}{base:.1f}% → {new:.1f}% ({d.delta_pp:+.1f} pp, p = {d.p_value:.2g}, Holm {p_adj:.2g})"


def table(led: Ledger):
    """One row per claim: page, what, model, attack, α, n, robust accuracy at α = 0 → α under the direct attack and
    as it stands (BPDA's own number at α beside it), each with Δ in pp, exact McNemar p and Holm-adjusted p, and
    each verdict after Holm."""
    import pandas as pd

    return pd.DataFrame([{
        "page": c.page, "claim": c.what.split("; ")[0], "attack": c.attack, "α": c.alpha,
        "n": c.n, "the page's direct attack": _cell(c.direct, c.p_direct_holm, c.pair[0]["robust"], c.pair[1]["robust"]),
        "verdict (direct, after Holm)": _after_holm(c.direct, c.p_direct_holm),
        "verdict (stands, after Holm)": _after_holm(c.stands, c.p_stands_holm),
        "one answer": (f"[{c.answer.claim.id}](#claim-{c.answer.claim.id}): {c.answer.phrase}"
                       if c.answer is not None else "—"),
    } for c in led.claims])


def summary(led: Ledger) -> str:
    """One paragraph: how many claims hold before and after Holm, under the direct attack and as they stand."""
    from ..evaluation.significance import ALPHA_TEST

    def count(attr, adj):
        cs = [c for c in led.claims if getattr(c, attr) is not None and getattr(c, attr).difference is not None]
        raw = sum(getattr(c, attr).status == "reproduced" for c in cs)
        held = sum(_after_holm(getattr(c, attr), getattr(c, adj)) == "reproduced" for c in cs)
        down = sum(getattr(c, attr).difference.delta < 0 and getattr(c, adj) is not None
                   and getattr(c, adj) < ALPHA_TEST for c in cs)
        return len(cs), raw, held, down

    def loss(k):
        return f"{k} show{'s' if k == 1 else ''} a significant loss after it"

    ns = " or ".join(map(str, sorted({c.n for c in led.claims})))
    k = sum(c.n != c.page_n for c in led.claims)
    ext = (f" ({k} claim{'s' if k != 1 else ''} extended beyond {'their pages' if k != 1 else 'its page'}' images; "
           "the pages' own verdicts are beside them)") if k else ""
    n_d, raw_d, held_d, down_d = count("direct", "p_direct_holm")
    n_s, raw_s, held_s, down_s = count("stands", "p_stands_holm")
    return (f"Of the book's {n_d} primary gain claims (one per distinct test: pages that share records share it), "
            f"{raw_d} are reproduced under the direct attack (the official gradient) before correction and {held_d} "
            f"after Holm's correction over those {n_d} tests; {loss(down_d)}. Of the {n_s} claims whose page runs "
            f"BPDA at the claim's α, the robust accuracy that stands (per-image worst case of the direct attack and "
            f"BPDA) reproduces {raw_s} before and {held_s} after Holm's correction over those {n_s}; {loss(down_s)}. "
            f"Level {ALPHA_TEST:g}; {ns} test images per claim{ext}.")


def _seed_spread(c: Claim) -> tuple[float, set]:
    """The range of the gain (pp) over the page's seed and the other seeds, and the set of verdicts."""
    verdicts = [c.page_direct, *c.by_seed.values()]
    gains = [v.difference.delta_pp for v in verdicts]
    return max(gains) - min(gains), {v.status for v in verdicts}


def _verdict_cell(v, pair) -> str:
    d = v.difference
    return f"{pair[0]['robust']:.1f}% → {pair[1]['robust']:.1f}% ({d.delta_pp:+.1f} pp, p = {d.p_value:.2g}): {v.status}"


def seed_table(led: Ledger):
    """One row per claim with reruns: the direct test under the page's seed and each other attack seed (robust
    accuracy at α = 0 → α, Δ, exact McNemar p, verdict before correction), the spread of the gain across seeds and
    whether the verdict is the same under every seed."""
    import pandas as pd

    out = []
    for c in led.claims:
        if not c.by_seed:
            continue
        seed0 = c.page_pair[1].get("seed", 0)
        row = {"page": c.page, "claim": c.what.split("; ")[0], "n (the page's)": c.page_n,
               f"seed {seed0} (the page's)": _verdict_cell(c.page_direct, c.page_pair)}
        row.update({f"seed {k}": _verdict_cell(v, c.seed_pairs[k]) for k, v in c.by_seed.items()})
        spread, statuses = _seed_spread(c)
        row["gain range (pp)"] = round(spread, 1)
        row["same verdict under every seed"] = "yes" if len(statuses) == 1 else "no: " + " / ".join(sorted(statuses))
        out.append(row)
    return pd.DataFrame(out)


def seed_summary(led: Ledger) -> str:
    """One paragraph: how many claims keep their verdict under every attack seed and how far the gains move."""
    cs = [c for c in led.claims if c.by_seed]
    if not cs:
        return "No claim was repeated under other attack seeds in this run (the reruns are built from stored records)."
    seeds = sorted({k for c in cs for k in c.by_seed})
    stable = [c for c in cs if len(_seed_spread(c)[1]) == 1]
    spread = [_seed_spread(c)[0] for c in cs]
    moved = [c for c in cs if c not in stable]
    which = "; ".join(f"{c.page} ({c.what.split('; ')[0]}): " + " / ".join(
        [f"seed {c.page_pair[1].get('seed', 0)} {c.page_direct.status}"]
        + [f"seed {k} {v.status}" for k, v in c.by_seed.items()])
        for c in moved)
    return (f"Each of the {len(cs)} direct tests was repeated under attack seed{'s' if len(seeds) > 1 else ''} "
            f"{', '.join(map(str, seeds))} on its page's images (same model, images, α and budget; the attack's "
            "random choices redrawn). "
            f"{len(stable)} of {len(cs)} keep their verdict under every seed"
            + (f"; the others change: {which}" if moved else "")
            + f". The gain moves across seeds by {min(spread):.1f} to {max(spread):.1f} pp (median "
              f"{sorted(spread)[len(spread) // 2]:.1f} pp). The seeds are re-measurements of the same claims, not "
              "further tests, so Holm's family above is unchanged.")


# --------------------------------------------------------------------------------------------------
# one claim, one verdict: the claims of the paper as data, each judged once on the pooled evidence
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClaimDef:
    """One claim of the paper ("MeanSparse raises robust accuracy at a small clean cost") at one configuration:
    ``id`` (the anchor every page links to), the host ``model`` (registry name), ``alpha`` at every active site,
    the ``centre``, which ``sites`` are active (``"all"`` 17, or the 8 of one group: ``"main_path"`` /
    ``"after_add"``), the threat model, and the pages that make it."""
    id: str
    model: str
    alpha: float
    pages: tuple[str, ...]
    what: str
    centre: str = "mean"
    sites: str = "all"
    norm: str = "Linf"
    eps: float = 8 / 255


_FAMILY = "msparse/resnet18-{}-w8-pgdat"
#: every claim the book judges, once each (Table 6's trend and the standard-training ceiling are other claims; their
#: pages keep their own verdicts)
CLAIMS: tuple[ClaimDef, ...] = (
    ClaimDef("default-a0.25", "msparse/default", 0.25, ("Table 1", "Fig. 3"), "the offline default at Fig. 3's α"),
    ClaimDef("gelu-a0.35", _FAMILY.format("gelu"), 0.35,
             ("Table 2", "Table 3 (L∞)", "Table 4 (PGD-AT)", "Table 5 (mean centre)", "Table 7 (all sites)"),
             "GELU member, every site"),
    ClaimDef("relu-a0.35", _FAMILY.format("relu"), 0.35, ("Table 2",), "ReLU activation"),
    ClaimDef("elu-a0.35", _FAMILY.format("elu"), 0.35, ("Table 2",), "ELU activation"),
    ClaimDef("silu-a0.35", _FAMILY.format("silu"), 0.35, ("Table 2",), "SiLU activation"),
    ClaimDef("psilu-a0.35", _FAMILY.format("psilu"), 0.35, ("Table 2",), "PSiLU activation"),
    ClaimDef("pssilu-a0.35", _FAMILY.format("pssilu"), 0.35, ("Table 2",), "PSSiLU activation"),
    ClaimDef("gelu-l2-a0.35", _FAMILY.format("gelu"), 0.35, ("Table 3 (L2)",), "L2 attacker (ε = 128/255)",
             norm="L2", eps=128 / 255),
    ClaimDef("trades-a0.35", "msparse/resnet18-gelu-w8-trades", 0.35, ("Table 4",), "TRADES training"),
    ClaimDef("ancra-a0.35", "msparse/resnet18-gelu-w8-ancra", 0.35, ("Table 4",), "ANCRA training"),
    ClaimDef("gelu-global-a0.35", _FAMILY.format("gelu"), 0.35, ("Table 5",), "one global centre", centre="global"),
    ClaimDef("gelu-zero-a0.35", _FAMILY.format("gelu"), 0.35, ("Table 5",), "centre zero", centre="zero"),
    ClaimDef("gelu-main-a0.35", _FAMILY.format("gelu"), 0.35, ("Table 8",), "main-path sites only", sites="main_path"),
    ClaimDef("gelu-add-a0.35", _FAMILY.format("gelu"), 0.35, ("Table 8",), "after-addition sites only",
             sites="after_add"),
)
_SITE_GROUPS = {"main_path": "act1", "after_add": "act2"}   # the ResNet-18 family's 8 sites of each group


def _matches_def(d: ClaimDef, point, recs) -> bool:
    if not point.sites or point.norm != d.norm or abs(point.eps - d.eps) > 1e-6:
        return False
    if not point.images.startswith("cifar10/test"):
        return False
    if point.alpha != round(d.alpha, 7) or any(s[2] != d.centre for s in point.sites):
        return False
    names = [s[0] for s in point.sites]
    if d.sites == "all" and len(names) != 17:
        return False
    if d.sites != "all" and (len(names) != 8 or not all(_SITE_GROUPS[d.sites] in n for n in names)):
        return False
    return any((r.get("meta") or {}).get("model") == d.model and (r.get("meta") or {}).get("stats") == "exact"
               for r in recs)


def resolve(d: ClaimDef, st):
    """The point of the store that ``d`` names (the one with the most images when statistics differ), or None."""
    from ..evaluation import evidence as ev

    found = [(max(r["spec"]["data"]["n"] for r in recs), p) for p, recs in ev.load_index(st).items()
             if _matches_def(d, p, recs)]
    return max(found, key=lambda t: t[0])[1] if found else None


def _official(base, new) -> tuple[list[bool], list[bool]]:
    """Per-image flags under the official gradient on both sides, with the same attacks: the defence's direct-route
    records, and the base's records of those attacks (on the base BPDA and transfer collapse to direct attacks the
    defence only received through another route; they count in the worst case, not here)."""
    same = new.direct_attacks()
    return base.direct_flags(same) or base.direct_flags() or base.flags, new.direct_flags() or new.flags


@dataclass
class Answer:
    """The one verdict of one claim: its :class:`ClaimDef`, the pooled comparison at the largest n both sides have
    (:func:`msparse.evaluation.evidence.compare`), the gain under the official gradient (per-image worst case of the
    direct-route attacks: what the paper measures) and as it stands (every attack), each a
    :func:`~msparse.report.verdicts.gain_claim`, the referee's phrase after Holm over :data:`CLAIMS`."""
    claim: ClaimDef
    cmp: object = None                    # evidence.Comparison (None: not in the store)
    direct: object = None                 # Verdict on the pooled official-gradient flags
    stands: object = None                 # Verdict on the pooled worst case
    referee: object = None                # RefereeVerdict
    p_stands_holm: float | None = None
    p_direct_holm: float | None = None

    @property
    def phrase(self) -> str:
        return self.referee.phrase if self.referee is not None else "not in the store"

    @property
    def n(self) -> int:
        return self.cmp.n if self.cmp is not None else 0

    def link(self, html: bool = False) -> str:
        """A link to this claim's verdict on the chapter page (every page lives beside it in the built book):
        Markdown, or HTML with ``html``."""
        href = f"does_it_work.html#claim-{self.claim.id}"
        return f'<a href="{href}">{self.claim.id}</a>' if html else f"[{self.claim.id}]({href})"

    def markdown(self) -> str:
        """The verdict line every page that makes this claim shows, word for word."""
        c = self.claim
        if self.cmp is None:
            return f"**One answer ({c.id}): not in the store** — no records of both α = 0 and α = {c.alpha:g}."
        b, a = self.cmp.base, self.cmp.new
        db, da = (100 * sum(f) / self.n for f in _official(b, a))
        return (f"**One answer for claim `{c.id}`: {self.phrase}** — {c.model.replace('msparse/', '')}, "
                f"α = {c.alpha:g}, n = {self.n}: robust accuracy {db:.1f}% → {da:.1f}% under the official gradient, "
                f"{b.robust:.1f}% → {a.robust:.1f}% as it stands; "
                f"{self.referee.reason()}. Runs{self.cmp.describe_budget()[4:]}.")


def _judge(d: ClaimDef, st) -> Answer:
    from ..evaluation import evidence as ev
    from ..report import verdicts as vd

    point = resolve(d, st)
    if point is None:
        return Answer(d)
    cmp = ev.compare(st, point)
    b, a = cmp.base, cmp.new
    db, da = _official(b, a)
    direct = vd.gain_claim(db, da, clean_base=b.clean, clean_new=a.clean)
    stands = vd.gain_claim(b.flags, a.flags, clean_base=b.clean, clean_new=a.clean)
    return Answer(d, cmp, direct, stands)


_ANSWERS: dict[str, tuple] = {}


def answers(results_dir=None) -> dict[str, Answer]:
    """Every claim of :data:`CLAIMS` judged once from the store alone (no page runs; cached until the store
    changes): pooled evidence at the largest n, Holm's correction over the claims' as-it-stands tests and, apart,
    over their official-gradient tests, and the referee's phrase (``"unequal budget"`` where the base received
    less than the defence)."""
    from ..evaluation import evidence as ev
    from ..evaluation.significance import holm
    from ..report.referee import referee_verdict
    from ..report.tables import open_store

    st = open_store(results_dir)
    stamp = ev._stamp(st)
    hit = _ANSWERS.get(str(st.root))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    out = {d.id: _judge(d, st) for d in CLAIMS}
    judged = [a for a in out.values() if a.cmp is not None]
    for attr, adj in (("stands", "p_stands_holm"), ("direct", "p_direct_holm")):
        for a, p in zip(judged, holm([getattr(a, attr).difference.p_value for a in judged])):
            setattr(a, adj, p)
    for a in judged:
        b, n = a.cmp.base, a.cmp.new
        a.referee = referee_verdict(*_official(b, n), b.flags, n.flags,
                                    clean_base=b.clean, clean_new=n.clean, p_adjusted=a.p_stands_holm,
                                    missing=a.cmp.missing, extra=a.cmp.extra, adaptive=n.beyond_official)
    _ANSWERS[str(st.root)] = (stamp, out)
    return out


def answer(claim_id: str, results_dir=None) -> Answer:
    """The one verdict of ``claim_id`` (an id of :data:`CLAIMS`)."""
    got = answers(results_dir)
    if claim_id not in got:
        from ..errors import UnknownNameError
        raise UnknownNameError(f"no claim {claim_id!r}; claims: {', '.join(got)}")
    return got[claim_id]


def answers_for(page: str, results_dir=None) -> str:
    """Markdown: the one verdict of every claim ``page`` makes (e.g. ``"Table 2"``), each with its link."""
    lines = [f"{a.markdown()} (→ {a.link()})" for a in answers(results_dir).values()
             if any(p == page or p.startswith(page + " ") for p in a.claim.pages)]
    return "\n\n".join(lines)


def _pp(x: float) -> str:
    """A change in pp with its sign, never "-0.0"."""
    from ..report.tables import signed

    return f"{signed(x)} pp"


def answer_table(results_dir=None, *, links: bool = True):
    """The compact table of the start page: one row per claim — model, α, n, gain under the paper's attack (the
    official gradient, pooled), change as it stands (every attack, pooled), the verdict, a link."""
    import pandas as pd

    from ..report.tables import signed

    rows = []
    for a in answers(results_dir).values():
        if a.cmp is None:
            continue
        dd, ds = a.direct.difference, a.stands.difference
        rows.append({
            "claim": a.link(html=True) if links else a.claim.id,
            "what (α in the id)": a.claim.what, "n": a.n,
            "official gradient": f"{_pp(dd.delta_pp)} (p = {dd.p_value:.2g})",
            "as it stands": f"{_pp(ds.delta_pp)} [{signed(100 * ds.ci[0])}, {signed(100 * ds.ci[1])}]",
            "verdict": a.phrase,
        })
    return pd.DataFrame(rows)


def bottom_line(results_dir=None) -> str:
    """One paragraph: what the book found, from :func:`answers`."""
    got = [a for a in answers(results_dir).values() if a.cmp is not None]
    if not got:
        return "The store holds no claim's records yet."
    count = {}
    for a in got:
        count[a.phrase] = count.get(a.phrase, 0) + 1
    gains_d = sum(a.direct.difference.delta > 0 and a.p_direct_holm is not None and a.p_direct_holm < 0.05 for a in got)
    losses_s = sum(a.stands.difference.delta < 0 and a.p_stands_holm is not None and a.p_stands_holm < 0.05
                   for a in got)
    gains_s = sum(a.stands.difference.delta > 0 and a.p_stands_holm is not None and a.p_stands_holm < 0.05
                  for a in got)
    ns = sorted({a.n for a in got})
    unequal = [a.claim.id for a in got if not a.cmp.fair]
    harder_base = [a.claim.id for a in got if a.cmp.extra]
    return (f"**Verdict:** on {len(got)} configurations the book can run (the offline default and the appendix ResNet-18 family, "
            f"{' or '.join(map(str, ns))} test images each), MeanSparse raises robust accuracy under the attack the "
            f"paper used (the official gradient) significantly in {gains_d} after Holm's correction; once every "
            f"stored attack is pooled image by image (BPDA, the smooth surrogate, transfer, other seeds) against a "
            f"base attacked at least as hard, the gain stands in {gains_s} and robust accuracy is significantly "
            f"lower in {losses_s}. Verdicts: "
            + ", ".join(f"{k} {v}" for k, v in sorted(count.items(), key=lambda t: -t[1]))
            + (f". Base attacked more weakly than the defence (verdict withheld): {', '.join(unequal)}" if unequal
               else ". In every comparison the base received at least the defence's attack budget (runs per loss and "
                    "iterations, counted by msparse.evaluation.evidence)")
            + (f". The base was attacked harder than its defence in {', '.join(harder_base)}: this can only favour "
               "MeanSparse, so a loss there stands and a gain would be withheld" if harder_base else "")
            + ". Each claim's α is the paper's own for that experiment, not chosen on these images; the effect sizes "
              "are a few pp and each verdict says what its n detects.")


def answers_markdown(results_dir=None) -> str:
    """Every claim's one verdict (:meth:`Answer.markdown`), each under an anchor ``claim-<id>`` that the pages and
    the start page link to, with the pages that make it."""
    out = []
    for a in answers(results_dir).values():
        out.append(f'<a id="claim-{a.claim.id}"></a>\n\n{a.markdown()} Pages: {", ".join(a.claim.pages)}.')
    return "\n\n".join(out)


def base_ladder(claim_id: str, results_dir=None):
    """Is the base's robust accuracy converged? The base of ``claim_id`` pooled on the claim's images record by
    record, in order of cost (one loss first, then more runs of it, then other losses): one row per step with the
    attack added, the runs per loss so far and the robust accuracy that stands so far. A drop when a loss is added
    (not only when runs are added) means the base was not converged under the first loss alone."""
    import pandas as pd

    from ..evaluation import evidence as ev

    a = answer(claim_id, results_dir)
    if a.cmp is None:
        return pd.DataFrame()
    base = a.cmp.base
    order = sorted(base.records, key=lambda r: (len(ev.budget(r["runs"])), r["attack"], r["seed"]))
    rows, flags, runs = [], [True] * base.n, set()
    for r in order:
        flags = [f and c == "1" for f, c in zip(flags, r["flags"])]
        runs |= r["runs"]
        rows.append({"adds": f"{r['attack']} (seed {r['seed']})",
                     "runs so far": ", ".join(f"{k} {v[0]}" for k, v in ev.budget(runs).items()),
                     "robust % (this record)": round(r["robust"], 1) if not r["stage"] else
                     f"stage: {r['attacked']} attacked, {r['broken']} broken",
                     "robust % (pooled so far)": round(100 * sum(flags) / base.n, 1)})
    return pd.DataFrame(rows)



def answer_figure(results_dir=None):
    """Per claim, the change in robust accuracy at α vs α = 0 (pp, paired, same images) under the official gradient
    and as it stands (every stored attack pooled), each with its 95% paired interval (Tango's score interval); a
    hollow marker where the base was attacked more weakly than the defence. One row per claim."""
    import matplotlib.pyplot as plt

    from ..report import plots

    got = [a for a in answers(results_dir).values() if a.cmp is not None]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.42 * max(1, len(got))), layout="constrained")
    for k, (label, attr, marker) in enumerate((("official gradient", "direct", "o"),
                                               ("as it stands (every attack pooled)", "stands", "s"))):
        for fair in (True, False):
            pts = [(i, getattr(a, attr).difference) for i, a in enumerate(got) if a.cmp.fair is fair]
            if not pts:
                continue
            ys = [i + (k - 0.5) * 0.3 for i, _ in pts]
            ds = [d.delta_pp for _, d in pts]
            err = [[d.delta_pp - 100 * d.ci[0] for _, d in pts], [100 * d.ci[1] - d.delta_pp for _, d in pts]]
            ax.errorbar(ds, ys, xerr=err, fmt=marker, capsize=3, color=f"C{k}", mfc=f"C{k}" if fair else "white",
                        label=label + ("" if fair else " (hollow: weaker base)"))
    ax.axvline(0, color="0.3", lw=1)
    ax.set_yticks(range(len(got)), [f"{a.claim.id} (n = {a.n})" for a in got])
    ax.invert_yaxis()
    ax.set_xlabel("robust accuracy at α minus at α = 0 (pp, same images, 95% paired CI)")
    ax.set_title("MeanSparse's gain per claim: the paper's attack vs every attack")
    fig.legend(loc="outside lower center", ncol=2, frameon=False)
    return plots.readable(fig)


# ================================================================================================
# the page (msparse.experiments.pages)
# ================================================================================================
@dataclass
class IntroParams:
    """The parameters of the page ``intro`` in the order of its notebook's parameters cell, which is
    rendered from them (:func:`msparse.experiments.pages.render_parameters`)."""
    model: str = param("msparse/default", "unused: every claim of the book is listed")
    device: str = param("cpu")
    seed: int = param(0)
    use_stored: bool = param(True)
    results_dir: str | None = param(None, "None means $MSPARSE_RESULTS or results/")


def _run_intro(params, **extra) -> dict:
    """The start page's content: every claim's one verdict (:func:`answers`), read from the store."""
    return answers(params.results_dir)


PAGE = register(Page("intro", "MeanSparse, reproduced and stress-tested (the start page: what the book found)",
                     None, IntroParams, __name__,
                     header="Parameters (papermill: -p NAME VALUE). The start page reads the results store only; "
                            "nothing is computed here.",
                     runner=_run_intro))


def answer_records(results_dir=None):
    """Every record behind the one answers: per claim and side (α = 0, α), each stored attack pooled — record key
    (12 characters), attack, seed, its images, its robust accuracy on the claim's images (%) — and the display rows
    for :func:`msparse.report.tables.provenance_table` (``key``, ``alpha``, ``n``, ``cached``)."""
    import pandas as pd

    table, rows = [], []
    for a in answers(results_dir).values():
        if a.cmp is None:
            continue
        for side, e in (("α = 0", a.cmp.base), (f"α = {a.claim.alpha:g}", a.cmp.new)):
            for r in e.records:
                table.append({"claim": a.claim.id, "side": side, "record": r["key"][:12], "attack": r["attack"],
                              "seed": r["seed"], "its n": r["n_record"], f"robust % on the claim's images":
                              f"{r['robust']:.1f}" if not r["stage"] else
                              f"cascade stage: {r['attacked']} attacked, {r['broken']} broken"})
                rows.append({"key": r["key"], "alpha": e.point.alpha, "n": r["n_record"], "cached": True})
    return pd.DataFrame(table), rows
