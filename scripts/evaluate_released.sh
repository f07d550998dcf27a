#!/usr/bin/env bash
# Import and evaluate every released model found, then tabulate (docs/released_models.md).
#
#   RELEASED=/data/released COCO=/data/COCO2017 VOC=/data/VOC2012 CLEVR=/data/clevr_with_masks \
#   CLEVRTEX=/data/clevrtex DAVIS=/data/DAVIS scripts/evaluate_released.sh runs/released
#
# Files expected under $RELEASED (rename the downloads; a missing file or dataset skips that model):
#   spot_coco.pt.tar  spot_voc.pt.tar  adaslot_coco.ckpt
#   sa_clevr6.ckpt  sa_clevrtex6.ckpt  gnm_clevr6.ckpt  gnm_clevrtex6.ckpt  slate_clevr6.ckpt
#   smtc_vits16.pth  ftdinosaur_b14_518.pth  ftdinosaur_s14_518.pth
# Each model gets OUT/<name>/ (args.yaml, checkpoint.pt.tar, encoder weights, metrics.json); a model
# already imported is evaluated again. Extra eval flags: EVAL_FLAGS="--device cuda:0".
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/evaluate_released.sh OUT_FOLDER (with RELEASED and dataset variables set)}
RELEASED=${RELEASED:?set RELEASED to the folder holding the downloaded checkpoints}
PYTHON=${PYTHON:-python}
EVAL_FLAGS=${EVAL_FLAGS:-}
mkdir -p "$OUT"

# import NAME FILE [--set ...]: import once into OUT/NAME; returns 1 (skip) when FILE is absent.
import_model() {
  local name=$1 file=$RELEASED/$2
  shift 2
  if [[ ! -f $file ]]; then echo "skip $name: $file not found"; return 1; fi
  if [[ ! -f $OUT/$name/checkpoint.pt.tar ]]; then
    "$PYTHON" scripts/import_checkpoint.py "$file" --out "$OUT/$name" "$@"
  fi
}

# needs VAR NAME: returns 1 (skip) when the dataset variable is unset.
needs() {
  if [[ -z ${!1:-} ]]; then echo "skip $2: set $1 to its dataset folder"; return 1; fi
}

evaluate() {  # evaluate NAME eval_spot.py flags...
  local name=$1
  shift
  # shellcheck disable=SC2086
  "$PYTHON" eval_spot.py --checkpoint_path "$OUT/$name" "$@" $EVAL_FLAGS
}

if needs COCO spot_coco && import_model spot_coco spot_coco.pt.tar; then
  evaluate spot_coco --dataset coco --data_path "$COCO" --num_slots 7 --eval_permutations all
fi
if needs VOC spot_voc && import_model spot_voc spot_voc.pt.tar; then
  evaluate spot_voc --dataset voc --data_path "$VOC" --num_slots 6 --eval_permutations all
fi
if needs COCO adaslot_coco && import_model adaslot_coco adaslot_coco.ckpt; then
  evaluate adaslot_coco --dataset coco --data_path "$COCO" --val_mask_size 224
fi
for model in sa gnm slate; do
  if needs CLEVR "${model}_clevr6" && import_model "${model}_clevr6" "${model}_clevr6.ckpt"; then
    evaluate "${model}_clevr6" --dataset clevr6 --data_path "$CLEVR"
  fi
done
for model in sa gnm; do
  if needs CLEVRTEX "${model}_clevrtex6" && import_model "${model}_clevrtex6" "${model}_clevrtex6.ckpt"; then
    evaluate "${model}_clevrtex6" --dataset clevrtex6 --data_path "$CLEVRTEX"
  fi
done
for size in b14_518 s14_518; do
  if needs COCO "ftdinosaur_$size" && import_model "ftdinosaur_$size" "ftdinosaur_$size.pth"; then
    evaluate "ftdinosaur_$size" --dataset coco --data_path "$COCO" --eval_protocol dinosaur
  fi
done
if needs DAVIS smtc && import_model smtc smtc_vits16.pth; then
  "$PYTHON" eval_smtc.py --task propagation --davis_path "$DAVIS" --checkpoint_path "$OUT/smtc" --setting stride16
  "$PYTHON" eval_smtc.py --task discovery --davis_path "$DAVIS" --checkpoint_path "$OUT/smtc"
fi

"$PYTHON" scripts/summarize.py "$OUT" --released
