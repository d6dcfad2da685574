"""Copy a finished training run into the package as the offline default model.

    python scripts/ship_default.py RUN_DIR

Writes msparse/assets/resnet18_gelu_w16_fgsmrs.{pt,json,md}: the weights (as trained; fp16 when the run
used --half-weights), the JSON model card (name and file updated, sha256 re-checked) and a short human-readable card.
"""
import hashlib
import json
import shutil
import sys
from pathlib import Path

NAME = "resnet18_gelu_w16_fgsmrs"
ASSETS = Path(__file__).resolve().parent.parent / "msparse" / "assets"


def main(run: Path) -> None:
    card = json.loads((run / "model.json").read_text())
    src = run / card["weights"]["file"]
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    if digest != card["weights"]["sha256"]:
        raise SystemExit(f"{src} does not match the sha256 in its card")
    if src.stat().st_size > 5 * 2**20:
        raise SystemExit(f"{src} is larger than 5 MiB")
    shutil.copyfile(src, ASSETS / f"{NAME}.pt")
    card["name"] = NAME
    card["weights"]["file"] = f"{NAME}.pt"
    (ASSETS / f"{NAME}.json").write_text(json.dumps(card, indent=2) + "\n")
    (ASSETS / f"{NAME}.md").write_text(markdown(card))
    print("shipped", ASSETS / f"{NAME}.pt")


def markdown(card: dict) -> str:
    r, a, ev, d = card["recipe"], card["architecture"], card.get("evaluation", {}), card["data"]
    best = next((h for h in card["history"] if h["epoch"] == card["best_epoch"]), {})
    attack = "FGSM-RS" if r["attack"] == "fgsm-rs" else f"PGD-{r['steps']}"
    lines = [
        f"# Model card: `msparse/default` ({NAME})",
        "",
        "The offline default of `msparse.load_model()`: an adversarially trained CIFAR-10 ResNet-18, small",
        "enough to train on a 2-core CPU and to ship inside the package. It is a stand-in host for",
        "MeanSparse experiments when the paper's large models cannot be downloaded, not a reproduction of",
        "any model in the paper.",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | CIFAR ResNet-18, {a['activation'].upper()}, width {a['width']} (stages {a['width']}/"
        f"{2 * a['width']}/{4 * a['width']}/{8 * a['width']}), inputs in [0, 1], no normalisation |",
        f"| training | {r['method'].upper()} with {attack}, "
        f"eps {r['eps'] * 255:.0f}/255, step {r['step_size'] * 255:.0f}/255; SGD "
        f"(momentum {r['momentum']}, nesterov {r['nesterov']}, wd {r['weight_decay']}), {r['schedule']} lr "
        f"max {r['lr']}, batch {r['batch_size']}, {r['epochs']} epochs, crop+flip, seed {r['seed']} |",
        f"| training data | {d['train']['source']}, rows {d['train_rows_used']} |",
        f"| model selection | best held-out PGD-10 accuracy ({d['validation']}): epoch {card['best_epoch']}, "
        f"clean {best.get('val_clean', float('nan')):.1%}, PGD-10 {best.get('val_pgd', float('nan')):.1%} |",
        f"| wall time | {card['wall_time_s'] / 60:.0f} min on {card['device']} (torch {card['torch']}; "
        f"the cores were shared with other jobs) |",
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
    lines += ["", "Full recipe, per-epoch history and provenance: the JSON card beside this file.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
