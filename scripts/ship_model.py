"""Copy a finished training run into the package: the offline default, or a member of the appendix family.

    python scripts/ship_model.py RUN_DIR            # -> msparse/assets/resnet18_gelu_w16_fgsmrs.{pt,json,md}
    python scripts/ship_model.py RUN_DIR --family   # -> msparse/assets/family/<run name>.{pt,json,md}

Writes the weights (as trained; fp16 when the run used --half-weights), the JSON model card (name and file
updated, sha256 re-checked) and a short human-readable card.  ``load_model()`` finds the default;
``load_model("msparse/<run name>")`` a family member.
"""
import hashlib
import json
import shutil
import sys
from pathlib import Path

DEFAULT_NAME = "resnet18_gelu_w16_fgsmrs"
ASSETS = Path(__file__).resolve().parent.parent / "msparse" / "assets"

INTRO = {
    "default": [
        "The offline default of `msparse.load_model()`: an adversarially trained CIFAR-10 ResNet-18, small",
        "enough to train on a 2-core CPU and to ship inside the package. It is a stand-in host for",
        "MeanSparse experiments when the paper's large models cannot be downloaded, not a reproduction of",
        "any model in the paper.",
    ],
    "family": [
        "A member of the paper's appendix ResNet-18 family (Tables 2-8), CPU route: width 8 instead of 64,",
        "5 epochs with a one-step attack instead of 200 epochs of PGD-10 (scripts/train_family.sh), trained on",
        "2 CPU cores. Its accuracies are therefore far below the paper's full-width models; it shows how",
        "MeanSparse behaves on a weaker robust model of the same family, not the paper's numbers.",
    ],
}


def main(run: Path, family: bool = False) -> None:
    card = json.loads((run / "model.json").read_text())
    NAME = card["name"] if family else DEFAULT_NAME
    dest = ASSETS / "family" if family else ASSETS
    dest.mkdir(exist_ok=True)
    src = run / card["weights"]["file"]
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    if digest != card["weights"]["sha256"]:
        raise SystemExit(f"{src} does not match the sha256 in its card")
    if src.stat().st_size > 5 * 2**20:
        raise SystemExit(f"{src} is larger than 5 MiB")
    shutil.copyfile(src, dest / f"{NAME}.pt")
    card["name"] = NAME
    card["weights"]["file"] = f"{NAME}.pt"
    (dest / f"{NAME}.json").write_text(json.dumps(card, indent=2) + "\n")
    (dest / f"{NAME}.md").write_text(markdown(card, f"msparse/{NAME}" if family else "msparse/default",
                                              INTRO["family" if family else "default"]))
    print("shipped", dest / f"{NAME}.pt")


def _mean(values) -> float:
    values = list(values)
    return sum(values) / max(len(values), 1)


def markdown(card: dict, public: str, intro: list) -> str:
    r, a, ev, d = card["recipe"], card["architecture"], card.get("evaluation", {}), card["data"]
    best = next((h for h in card["history"] if h["epoch"] == card["best_epoch"]), {})
    attack = "FGSM-RS" if r["attack"] == "fgsm-rs" else f"PGD-{r['steps']}"
    method = {"pgd-at": "PGD-AT", "trades": f"TRADES (beta {r['beta']:g})",
              "ancra": f"ANCRA (beta {r['beta']:g}, zeta {r['zeta']:g}, cr_beta {r.get('cr_beta', 2.0):g}, "
                       f"reverse attention {'on' if a.get('reverse_attention') else 'off'})"}[r["method"]]
    lines = [
        f"# Model card: `{public}` ({card['name']})",
        "",
        *intro,
        "",
        "| | |",
        "|---|---|",
        f"| architecture | CIFAR ResNet-18, {a['activation'].upper()}, width {a['width']} (stages {a['width']}/"
        f"{2 * a['width']}/{4 * a['width']}/{8 * a['width']}), inputs in [0, 1], no normalisation"
        f"{'; reverse-attention blocks in layer4' if a.get('reverse_attention') else ''} |",
        f"| training | {method} with {attack}, "
        f"eps {r['eps'] * 255:.0f}/255, step {r['step_size'] * 255:.0f}/255; SGD "
        f"(momentum {r['momentum']}, nesterov {r['nesterov']}, wd {r['weight_decay']}), {r['schedule']} lr "
        f"max {r['lr']}, batch {r['batch_size']}, {r['epochs']} epochs, crop+flip, seed {r['seed']} |",
        f"| training data | {d['train']['source']}, rows {d['train_rows_used']} |",
        f"| model selection | best held-out PGD-10 accuracy ({d['validation']}): epoch {card['best_epoch']}, "
        f"clean {best.get('val_clean', float('nan')):.1%}, PGD-10 {best.get('val_pgd', float('nan')):.1%} |",
        f"| wall time | {card['wall_time_s'] / 60:.0f} min on {card['device']} (torch {card['torch']}; "
        f"the cores were shared with other jobs) |",
        f"| time per epoch | {_mean(h['train_s'] for h in card['history']):.0f} s training + "
        f"{_mean(h['epoch_s'] - h['train_s'] for h in card['history']):.0f} s held-out check (mean of "
        f"{len(card['history'])} epochs) |",
        f"| weights | `{card['weights']['file']}`, {card['weights']['dtype']}, sha256 "
        f"`{card['weights']['sha256']}` (checked on load) |",
    ]
    if ev:
        lines += [
            f"| test data | {ev['data']['source']} |",
            f"| clean accuracy | {ev['clean_accuracy']:.1%} (n = {ev['n']}) |",
            f"| APGD-CE accuracy | {ev['apgd_ce_accuracy']:.1%} (L-inf, eps 8/255, 100 iterations, 1 restart, "
            f"seed 0; {ev['apgd_ce']['implementation']}) |",
        ]
        if "apgd_ce_gates" in ev:
            g = ev["apgd_ce_gates"]
            gates = ", ".join(f"gate {k.split('_')[1]} {v:.1%}" for k, v in g.items() if k.startswith("gate_"))
            lines.append(f"| APGD-CE on the reverse-attention gates (adaptive) | {gates}; **worst case {g['worst']:.1%}** "
                         f"(an image counts only if it survives the direct attack and every gate attack; the "
                         f"direct number above is inflated by gradient masking in the argmax gates) |")
    lines += [""] + [f"Note: {n}" for n in card.get("notes", [])] + (["" ] if card.get("notes") else [])
    lines += ["Full recipe, per-epoch history and provenance: the JSON card beside this file.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--family"]
    if len(args) != 1:
        raise SystemExit(__doc__)
    main(Path(args[0]), family="--family" in sys.argv[1:])
