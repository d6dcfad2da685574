#!/usr/bin/env bash
# Train one member of the appendix ResNet-18 family (Tables 2-8), CPU route (issue 6):
# width 8 (stages 8/16/32/64), one-step attacks during training, one-cycle schedule, 5 epochs on the
# JPEG copy of the CIFAR-10 training set; fp16 weights + model card, then shipped into
# msparse/assets/family/ with `scripts/ship_model.py RUN_DIR --family`.
#
#   scripts/train_family.sh KEY [JPEG_DIR] [RUN_ROOT]
#
# KEY: relu | elu | gelu | silu | psilu | pssilu   (PGD-AT with FGSM-RS)
#      gelu-trades                                  (TRADES beta 6, 1-step KL attack of size eps)
#      gelu-ancra                                   (ANCRA: TRADES-style loss with PGD-CE examples,
#                                                    ANC negatives, reverse-attention blocks in layer4)
# Re-running resumes an interrupted run.  THREADS (default 1) sets torch's CPU threads: on 2 cores two
# runs with one thread each train ~1.4x faster in total than one run with two.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
key="$1"
jpeg="${2:-$here/../shared/data}"
root="${3:-$here/runs/family}"
py="${PYTHON:-$here/.venv/bin/python}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
eps=0.03137254901960784
case "$key" in
  relu|elu|gelu|silu|psilu|pssilu)
    act="$key"; name="resnet18-$key-w8-pgdat"
    method=(--method pgd-at --attack fgsm-rs --step-size 0.0392156862745098) ;;
  gelu-trades)
    act=gelu; name="resnet18-gelu-w8-trades"
    method=(--method trades --beta 6 --steps 1 --step-size "$eps") ;;
  gelu-ancra)
    act=gelu; name="resnet18-gelu-w8-ancra"
    method=(--method ancra --beta 6 --zeta 3 --steps 1 --step-size "$eps") ;;
  *) echo "unknown KEY '$key' (relu elu gelu silu psilu pssilu gelu-trades gelu-ancra)" >&2; exit 2 ;;
esac
out="$root/$name"
resume=()
[ -f "$out/last.pt" ] && resume=(--resume)
cd "$here"
"$py" -m msparse train "${method[@]}" --eps "$eps" --activation "$act" --width 8 \
  --epochs 5 --batch-size 128 --schedule onecycle --lr 0.2 --nesterov --weight-decay 5e-4 \
  --data-source jpeg --data-dir "$jpeg" --val-n 500 --val-steps 10 \
  --eval-n 1000 --half-weights --seed 0 --threads "${THREADS:-1}" --no-progress --out "$out" "${resume[@]}"
