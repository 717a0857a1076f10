#!/usr/bin/env bash
# CPU-sized CellaVision experiments (no GPU in the session that recorded them): 64x64 input
# (the 300x300 crops downsampled 4.7x), 10 epochs of the fivefold set (70 -> 350 samples),
# CSV logging only. Every checkpoint is then scored a second time at the crops' native 300x300
# (the network still runs at 64x64, its prediction is upsampled) into OUT/native300/, a mirror of
# the multirun folders that `bloodseg.aggregate` and `bloodseg.sweep_report` read like any multirun.
# The GPU-sized protocol (300x300, 100 epochs) is owed.
# Usage: experiments/cellavision/run_cpu.sh OUT_DIR [PART...]   (e.g. /work/cv_runs; outputs are not
# committed). PART is any of paper_protocol weighting_lr baselines best_cell (default: all, in order);
# two shells with disjoint parts and OMP_NUM_THREADS=1 use two cores.
set -euo pipefail
OUT=${1:?output directory}
shift
PARTS=${*:-paper_protocol weighting_lr baselines best_cell}
wanted() { [[ " $PARTS " == *" $1 "* ]]; }
ROOT=${CELLAVISION_ROOT:-../shared/data/cellavision_wbc}
DATA="data=cellavision data.root=$ROOT data.image_size=[64,64] data.num_workers=0"
COMMON="$DATA trainer.max_epochs=10 logger=csv callbacks.progress_bar=none trainer.accelerator=cpu"
PY=${PYTHON:-.venv/bin/python}

# score every job of multirun OUT/$1 at 300x300 into OUT/native300/$1/<job>/
native() {
  for job in "$OUT/$1"/*/; do
    dest="$OUT/native300/$1/$(basename "$job")"
    mkdir -p "$dest/.hydra" && cp "$job/.hydra/overrides.yaml" "$dest/.hydra/"
    $PY -m bloodseg.evaluate ckpt_path="$job/checkpoints/last.ckpt" data=cellavision data.root=$ROOT \
      trainer.accelerator=cpu output_dir="$dest" overwrite=true
  done
}

# 1. the paper's protocol (SegNet-VGG16, sgdm lr 1e-3, median-frequency weighting), 3 seeds
if wanted paper_protocol; then
  $PY -m bloodseg.train -m experiment=segnet_vgg16 $COMMON seed=1,2,3 hydra.sweep.dir=$OUT/paper_protocol
  native paper_protocol
fi
# 2. class weighting x learning rate (SegNet, sgdm as in the paper), seed 1, 4 epochs
if wanted weighting_lr; then
  $PY -m bloodseg.train -m experiment=segnet_vgg16 $DATA trainer.max_epochs=4 logger=csv callbacks.progress_bar=none \
    trainer.accelerator=cpu loss.class_weighting=none,median_frequency optimizer.lr=1e-2,1e-3 \
    hydra.sweep.dir=$OUT/weighting_lr
  native weighting_lr
fi
# 3. SegNet with Adam vs smp baselines at the same budget, split and seed (Adam lr 1e-3), seed 1
if wanted baselines; then
  for exp in segnet_vgg16 unet_resnet34 fpn_resnet34 deeplabv3plus_resnet34; do
    $PY -m bloodseg.train -m experiment=$exp $COMMON optimizer=adam optimizer.lr=1e-3 seed=1 hydra.sweep.dir=$OUT/adam_$exp
    native adam_$exp
  done
fi
# 4. the sweep's best cell (no class weighting, lr 1e-2, 4 epochs) again with 2 seeds
if wanted best_cell; then
  $PY -m bloodseg.train -m experiment=segnet_vgg16 $DATA trainer.max_epochs=4 logger=csv callbacks.progress_bar=none \
    trainer.accelerator=cpu loss.class_weighting=none optimizer.lr=0.01 seed=1,2 hydra.sweep.dir=$OUT/best_sweep_cell
  native best_sweep_cell
fi
