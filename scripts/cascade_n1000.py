"""Extend a claim's worst case on the first 1000 offline test images with cascade stages (how the committed stage
records of the offline default, the GELU member and ANCRA were made; issue "Stronger and cheaper").

Each stage runs only on the images that every record already stored for the model, α and images leaves standing
(msparse.evaluation.evidence.pool), and none repeats the computation of a record pooled there (it takes the next
unused seed: on the base, where BPDA, the surrogate and the transfer are the direct attack, that is another random
start, as on the defence a new gradient path is). The stage's skip mask - part of its record key - depends on the
store at the time it runs: rerunning this script on a store that has since grown computes new stage records rather
than reusing the committed ones. Each committed stage record is reproduced on its own by ``python -m msparse results verify KEY``
(its mask is in its spec). Stages resume per batch when interrupted. One thread per process on a shared CPU.

    OMP_NUM_THREADS=1 python scripts/cascade_n1000.py msparse/default 0.25 --stages bpda          # BPDA margin PGD, adv-lib
    OMP_NUM_THREADS=1 python scripts/cascade_n1000.py msparse/default 0.0 --stages autoattack     # AutoAttack, stage by stage
    OMP_NUM_THREADS=1 python scripts/cascade_n1000.py msparse/default 0.0 --stages autoattack --only fab-t square
    OMP_NUM_THREADS=1 python scripts/cascade_n1000.py msparse/default 0 --balance 0.25         # the base's missing runs
    OMP_NUM_THREADS=1 python scripts/cascade_n1000.py msparse/default 0.25 --stages adaptive     # BPDA APGD, surrogate, transfer, gradest

A claim whose defence is not the model's default configuration (another centre, one group of sites, the L2 threat
model; msparse.experiments.claims.CLAIMS) is named with --claim, beside its model and α (or its base and --balance):

    python scripts/cascade_n1000.py msparse/resnet18-gelu-w8-pgdat 0.35 --claim gelu-main-a0.35 --stages adaptive
    python scripts/cascade_n1000.py msparse/resnet18-gelu-w8-pgdat 0 --balance 0.35 --claim gelu-main-a0.35
    python scripts/cascade_n1000.py msparse/resnet18-gelu-w8-pgdat 0 --claim gelu-l2-a0.35 --stages adaptive --only bpda:apgd

(the last: the L2 base's stored APGD ran 50 iterations, its defence's runs 100; balancing adds runs, not iterations,
so the base gets APGD-CE + DLR at 100 iterations as a stage - BPDA through α = 0 is the direct attack).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from msparse.core.placement import preserved_sites, set_alpha, set_centre  # noqa: E402
from msparse.evaluation import evidence as ev  # noqa: E402
from msparse.evaluation.cascade import Cascade, Stage, balance_base, cascade  # noqa: E402
from msparse.evaluation.evaluate import evaluate  # noqa: E402
from msparse.evaluation.store import Store  # noqa: E402
from msparse.experiments.claims import CLAIMS  # noqa: E402
from msparse.experiments.setup import setup  # noqa: E402
from msparse.experiments.sweeps import data_label  # noqa: E402

STAGES = {
    "bpda": (Stage("bpda:pgd", n_restarts=2, label="BPDA, margin PGD (2 restarts)"),
             Stage("bpda:advlib-apgd", label="adv-lib APGD (BPDA)"),
             Stage("bpda:advlib-fmn", label="adv-lib FMN (BPDA)")),
    "autoattack": (Stage("apgd-ce", label="AutoAttack as a cascade: APGD-CE"),
                   Stage("apgd-t", label="AutoAttack as a cascade: APGD-T"),
                   Stage("fab-t", label="AutoAttack as a cascade: FAB-T"),
                   Stage("square", n_queries=5000, label="AutoAttack as a cascade: Square 5000")),
    "adaptive": (Stage("bpda:apgd", label="BPDA, APGD-CE + DLR"),
                 Stage("surrogate:apgd-ce", label="surrogate gradient (APGD-CE per temperature)"),
                 Stage("transfer:apgd", label="transfer from the base (APGD)"),
                 Stage("gradest", n_iter=20, label="gradient estimation (20 steps)")),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("alpha", type=float)
    ap.add_argument("--stages", choices=sorted(STAGES), default="bpda")
    ap.add_argument("--only", nargs="+", metavar="ATTACK", default=None,
                    help="run only these stages of --stages (by attack name, e.g. fab-t square): the stages already "
                         "stored are then not recomputed on the smaller standing set they would now see")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--results", default=None, help="results folder (default: the repository's results/)")
    ap.add_argument("--balance", type=float, metavar="ALPHA", default=None,
                    help="with alpha 0: instead of --stages, give the base the runs per loss its defence at ALPHA "
                         "received (msparse.evaluation.cascade.balance_base)")
    ap.add_argument("--claim", metavar="ID", default=None,
                    help="configure the defence as this claim does (centre, active sites, threat model); the model "
                         "and alpha (or --balance) must be the claim's: " + ", ".join(c.id for c in CLAIMS))
    a = ap.parse_args(argv)
    claim = None
    if a.claim is not None:
        claim = {c.id: c for c in CLAIMS}.get(a.claim)
        if claim is None:
            ap.error(f"--claim {a.claim}: no such claim (one of {', '.join(c.id for c in CLAIMS)})")
        if a.model != claim.model or (a.balance is not None and a.balance != claim.alpha) \
                or (a.balance is None and a.alpha not in (0, claim.alpha)):
            ap.error(f"--claim {a.claim} is {claim.model} at alpha {claim.alpha:g}: give that model and alpha "
                     f"(or alpha 0 for its base, with --balance {claim.alpha:g} to balance it)")
    if a.balance is not None and (a.alpha != 0 or a.balance <= 0):
        ap.error(f"--balance {a.balance:g} runs on the base against the defence at that alpha: give alpha 0 and "
                 "--balance > 0")
    stages = STAGES[a.stages]
    if a.only:
        unknown = sorted(set(a.only) - {st.attack for st in stages})
        if unknown:
            ap.error(f"--only {' '.join(unknown)}: not a stage of --stages {a.stages} "
                     f"({', '.join(st.attack for st in stages)})")
        stages = tuple(st for st in stages if st.attack in a.only)
    torch.set_num_threads(1)
    s = setup(a.model, n_examples=a.n, results_dir=a.results)
    store = s.store if isinstance(s.store, Store) else Store(s.store)
    labels = dict(name=s.model_name, data=data_label(s, "test", len(s.x)), stats=str(s.stats["mode"]),
                  tags={"book": "cascade", "split": "test"})
    if claim is not None:
        labels.update(eps=claim.eps, norm=claim.norm)

    def defence(alpha: float) -> None:
        """The defence of the claim (or the model's default configuration) at ``alpha``."""
        if claim is None:
            set_alpha(s.model, alpha)
            return
        set_centre(s.model, claim.centre)
        set_alpha(s.model, alpha if claim.sites == "all" else
                  {t.index: alpha for t in s.sites if claim.sites in t.tags})

    if a.balance is not None:
        with preserved_sites(s.model):
            defence(a.balance)
            new = ev.point_of(evaluate(s.model, s.x, s.y, "none", store=store, **labels).to_record())
            set_alpha(s.model, 0.0)
            t = time.time()
            done = balance_base(s.model, s.x, s.y, store, new, n_iter=100, **labels)
        after = ev.Comparison(ev.pool(store, new.base, len(s.x)), ev.pool(store, new, len(s.x)))
        if done:
            print(Cascade(None, None, done).table().to_string())
        print(f"{len(done)} base stages; {after.describe_budget()}; {time.time() - t:.0f} s")
        return 0
    with preserved_sites(s.model):
        defence(a.alpha)
        first = evaluate(s.model, s.x, s.y, "none", store=store, **labels)
        point = ev.point_of(first.to_record())
        if not ev.records_at(store, point, len(s.x)):
            print(f"no stored attack on {a.model} at α = {a.alpha:g} on these {len(s.x)} images: nothing to extend")
            return 1
        standing = ev.pool(store, point, len(s.x)).flags
        pooled = ev.records_at(store, point, len(s.x))
        print(f"{sum(standing)} of {len(s.x)} images standing before the cascade", flush=True)
        t = time.time()
        c = cascade(s.model, s.x, s.y, stages, n_iter=100, store=store, standing=standing, pooled=pooled,
                    **labels)
    print(c.table().to_string())
    print(f"{int(c.flags.sum())} standing after; {time.time() - t:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
