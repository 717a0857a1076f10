#!/usr/bin/env bash
# CellaVision at native scale on a CPU: train on random 128x128 windows of the 300x300 crops
# (data.crop_size), score whole 300x300 images (train's own test pass; no resizing anywhere).
# Usage: experiments/cellavision/run_native.sh OUT_DIR [PART...]   (outputs are not committed)
# PART is any of best best_weighted best_rotation best_long tta augment (default: best augment, in order); two shells with disjoint parts and
# OMP_NUM_THREADS=1 use two cores. Aggregate with:
#   python -m bloodseg.aggregate OUT_DIR/native_best_seed* OUT_DIR/native_best_weighted OUT_DIR/native_aug_* out=...
set -euo pipefail
OUT=${1:?output directory}
mkdir -p "$OUT"  # the per-seed logs are written there before Hydra creates it
shift
PARTS=${*:-best augment}
wanted() { [[ " $PARTS " == *" $1 "* ]]; }
# seeds 1-3 of one configuration, one process each (OMP_NUM_THREADS=1: they share the cores): NAME OVERRIDES...
three_seeds() {
  name=$1
  shift
  for seed in 1 2 3; do
    $PY -m bloodseg.train -m $COMMON trainer.max_epochs=${EPOCHS:-10} "$@" seed=$seed \
      hydra.sweep.dir=$OUT/${name}_seed$seed > $OUT/${name}_seed$seed.log 2>&1 &
  done
  wait
}
ROOT=${CELLAVISION_ROOT:-../shared/data/cellavision_wbc}
PY=${PYTHON:-.venv/bin/python}
COMMON="data=cellavision data.root=$ROOT data.crop_size=[128,128] data.num_workers=0 logger=csv \
callbacks.progress_bar=none trainer.accelerator=cpu experiment=unet_resnet34 optimizer=adam optimizer.lr=1e-3 scheduler=poly"

# 1. the best configuration of the 64x64 runs (U-Net-ResNet34, Adam) at native scale without class
#    weighting, 3 seeds
if wanted best; then
  three_seeds native_best loss.class_weighting=none
fi
# 1b. the same with the paper's median-frequency weighting, 12 epochs, seed 1 (recorded for comparison)
if wanted best_weighted; then
  $PY -m bloodseg.train -m $COMMON trainer.max_epochs=12 seed=1 hydra.sweep.dir=$OUT/native_best_weighted
fi
# 1c. the best configuration with random rotation of the augmented copies (the best of part 2), 3 seeds
if wanted best_rotation; then
  three_seeds native_rot loss.class_weighting=none data.rotation=180
fi
# 1d. the same as 1c trained 2.4x longer (the poly schedule stretches with it), 3 seeds
if wanted best_long; then
  three_seeds native_rot_long loss.class_weighting=none data.rotation=180 trainer.max_epochs=${LONG_EPOCHS:-24}
fi
# 1e. the checkpoints of 1d scored again with test-time augmentation (flip: 4 views, dihedral: 8)
if wanted tta; then
  for mode in flip dihedral; do
    for seed in 1 2 3; do
      $PY -m bloodseg.evaluate ckpt_path=$OUT/native_rot_long_seed$seed/0/checkpoints/last.ckpt evaluation.tta=$mode \
        output_dir=$OUT/tta_${mode}_seed$seed > $OUT/tta_${mode}_seed$seed.log 2>&1 &
    done
    wait
  done
fi
# 2. what the literature adds, each on its own at a short budget (seed 1, one process each): none,
#    rotation, colour jitter, zoom
if wanted augment; then
  for extra in "data.rotation=0" "data.rotation=180" "data.color_jitter=0.2" "data.scale_range=[0.8,1.25]"; do
    name=$(echo "$extra" | tr -c 'a-z0-9\n' '_')
    $PY -m bloodseg.train -m $COMMON loss.class_weighting=none trainer.max_epochs=${AUG_EPOCHS:-6} seed=1 "$extra" \
      hydra.sweep.dir=$OUT/native_aug_$name > $OUT/native_aug_$name.log 2>&1 &
  done
  wait
fi
