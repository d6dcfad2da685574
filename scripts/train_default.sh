#!/usr/bin/env bash
# Train the offline default model shipped in msparse/assets/ (CIFAR ResNet-18, width 16, GELU,
# FGSM-RS adversarial training with a one-cycle schedule) on the JPEG copy of the CIFAR-10 training set,
# then copy its fp16 weights and model card into the package.
#
#   scripts/train_default.sh [JPEG_DIR] [OUT_DIR]
#
# JPEG_DIR holds cifar10_jpeg_train.npz (default ../shared/data); OUT_DIR is the run directory
# (default /tmp/msparse_default; kept outside the repository). Re-running resumes an interrupted run.
# About 20-40 minutes on 2 otherwise idle CPU cores. OMP_WAIT_POLICY=PASSIVE keeps two OpenMP threads from
# spinning against each other when the cores are shared (4-5x faster under load, no cost when idle).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
jpeg="${1:-$here/../shared/data}"
out="${2:-/tmp/msparse_default}"
py="${PYTHON:-$here/.venv/bin/python}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
resume=()
[ -f "$out/last.pt" ] && resume=(--resume)
cd "$here"
"$py" -m msparse train \
  --method pgd-at --attack fgsm-rs --eps 0.03137254901960784 --step-size 0.0392156862745098 \
  --activation gelu --width 16 \
  --epochs 12 --batch-size 128 --schedule onecycle --lr 0.2 --nesterov --weight-decay 5e-4 \
  --data-source jpeg --data-dir "$jpeg" --val-n 500 --val-steps 10 \
  --eval-n 1000 --half-weights --seed 0 --out "$out" "${resume[@]}"
# ship: fp16 weights + JSON card + a short markdown card
"$py" scripts/ship_model.py "$out"
