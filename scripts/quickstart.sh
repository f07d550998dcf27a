#!/usr/bin/env bash
# Quickstart: set up .venv, train a small model on the built-in synthetic scenes (GPU if present,
# else CPU), evaluate it on 256 held-out scenes next to three trivial baselines, draw its masks and
# its evaluation curves. Extra arguments are passed to train_spot.py (e.g. --epochs 2 for a shorter
# run). What the figures show, and what they cannot: docs/quickstart.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
LOG_PATH=${LOG_PATH:-runs/quickstart}

.venv/bin/python train_spot.py \
  --dataset shapes --image_size 64 --train_samples 2048 --val_samples 256 \
  --which_encoder vit_patch_p2 --no_pretrained \
  --dec_type transformer --train_permutations standard --num_dec_blocks 2 --num_heads 4 \
  --num_slots 15 --num_iterations 8 --slot_size 64 --mlp_hidden_size 128 \
  --batch_size 16 --epochs 4 --lr_main 1e-3 --lr_warmup_steps 128 \
  --eval_every 1 --eval_viz_percent 0.5 --num_workers 1 \
  --log_path "$LOG_PATH" "$@"

RUN=$(ls -d "$LOG_PATH"/*/ | sort | tail -n 1)
.venv/bin/python eval_spot.py --checkpoint_path "$RUN" --dataset shapes --val_samples 256 --num_workers 1 --baselines
.venv/bin/python scripts/plot_metrics.py "$RUN" --metrics mse fg_ari mbo_i
echo "masks picture: ${RUN}masks.png (rows: image, ground truth, decoder masks, slot-attention masks)"
echo "curves: ${RUN}curves.png"
