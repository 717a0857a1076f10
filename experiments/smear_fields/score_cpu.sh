#!/usr/bin/env bash
# After run_cpu.sh: tune the cell splitting on train/, score every model on the 10 val fields with
# it, time whole-field prediction, and score the synthetic-trained model on the real fields.
# Usage: experiments/smear_fields/score_cpu.sh RUNS_DIR [PART...]
# PART: tune rescore timing synthetic (default: all, in order). Outputs go to RUNS_DIR/scores/.
set -euo pipefail
RUNS=${1:?the run_cpu.sh output directory}
shift
PARTS=${*:-tune rescore timing synthetic}
wanted() { [[ " $PARTS " == *" $1 "* ]]; }
ROOT=${SMEAR_FIELDS_ROOT:-../shared/data/smear_fields}
PY=${PYTHON:-.venv/bin/python}
OUT=$RUNS/scores
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# 1. every 5th training field predicted by the seed-1 model, then the splitting grid on them
if wanted tune; then
  mkdir -p "$OUT/train_every5"
  for mask in $(ls "$ROOT/train/masks" | sort | awk 'NR % 5 == 1'); do
    ln -sf "$(realpath "$ROOT/train/images/${mask%.png}".*)" "$OUT/train_every5/"
  done
  $PY -m bloodseg.predict ckpt_path=$RUNS/aug_seed1/checkpoints/last.ckpt input=$OUT/train_every5 \
    output_dir=$OUT/train_pred predict.outlines=false > $OUT/train_pred.log 2>&1
  $PY experiments/smear_fields/tune_counting.py "$ROOT" --every 5 --labels $OUT/train_pred --out $OUT/tune.csv \
    > $OUT/tune.log
  tail -2 $OUT/tune.log
fi
# 2. each checkpoint scored on val/ with the tuned splitting (TUNED: the best F1 setting of step 1)
TUNED=${TUNED:-}
if wanted rescore; then
  for run in plain_seed1 aug_seed1 aug_seed2 aug_seed3 finetune_seed1; do
    [ -f $RUNS/$run/metrics.json ] || continue  # finished runs only
    $PY -m bloodseg.evaluate ckpt_path=$RUNS/$run/checkpoints/last.ckpt split=test batch_size=1 $TUNED \
      output_dir=$OUT/$run overwrite=true > $OUT/$run.log 2>&1
  done
fi
# 3. whole-field prediction of the 10 val fields on the CPU (user+sys and wall, outputs and counting included)
if wanted timing; then
  for n in 1 10; do
    mkdir -p $OUT/val_first$n
    for image in $(ls "$ROOT/val/images" | sort | head -$n); do ln -sf "$(realpath "$ROOT/val/images/$image")" $OUT/val_first$n/; done
    /usr/bin/time -f "$n fields: wall %e s, user %U s, sys %S s, max RSS %M KB" \
      $PY -m bloodseg.predict ckpt_path=$RUNS/aug_seed1/checkpoints/last.ckpt input=$OUT/val_first$n \
      output_dir=$OUT/predict_val$n > $OUT/predict_val$n.log 2>&1
    tail -1 $OUT/predict_val$n.log
  done
fi
# 4. the synthetic-trained model on the real val fields: as trained (scale 1) and at the real cells' size
#    (synthetic red cells are ~40 px across, real ones ~107 px: predict.scale=0.375), rbc + wbc = cell
if wanted synthetic; then
  for scale in 1.0 0.375; do
    $PY -m bloodseg.predict ckpt_path=$RUNS/synthetic/checkpoints/last.ckpt input=$ROOT/val/images \
      output_dir=$OUT/synthetic_pred_$scale predict.scale=$scale predict.outlines=false > $OUT/synthetic_pred_$scale.log 2>&1
    $PY experiments/smear_fields/merge_cell_classes.py $OUT/synthetic_pred_$scale $OUT/synthetic_cells_$scale
    $PY -m bloodseg.evaluate pred_dir=$OUT/synthetic_cells_$scale gt_dir=$ROOT/val/masks data=smear_fields $TUNED \
      output_dir=$OUT/synthetic_$scale overwrite=true > $OUT/synthetic_$scale.log 2>&1
  done
fi
