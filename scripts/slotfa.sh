#!/usr/bin/env bash
# SlotFA on COCO train2017 for 800 epochs, ResNet-50, global batch 512 over 8 GPUs (64 per GPU),
# as the SlotFA seed's scripts/SlotFA.sh (which used 4 GPUs for the same global batch).
# Usage: scripts/slotfa.sh [DATA_DIR] [extra flags...]   (DATA_DIR holds train2017/*.jpg)
# For SlotCon's COCO recipe use --method slotcon --group-loss-weight 0.5 --save-freq 50 --print-freq 10.
set -euo pipefail
cd "$(dirname "$0")/.."  # paths below are relative to the repository root
DATA_DIR=${1:-./coco2017}
shift || true
torchrun --nproc_per_node=8 train_slotfa.py \
    --method slotfa \
    --dataset COCO \
    --data-dir "${DATA_DIR}" \
    --output-dir output/SlotFA_coco_r50_800ep \
    --run-name bs512 \
    --arch resnet50 \
    --dim-hidden 4096 \
    --dim-out 256 \
    --num-prototypes 256 \
    --teacher-momentum 0.99 \
    --teacher-temp 0.07 \
    --group-loss-weight 1.0 \
    --batch-size 512 \
    --optimizer lars \
    --base-lr 1.0 \
    --weight-decay 1e-5 \
    --warmup-epoch 5 \
    --epochs 800 \
    --fp16 \
    --print-freq 1 \
    --save-freq 10 \
    --num-workers 8 \
    --auto-resume \
    "$@"
