#!/usr/bin/env bash
# CPU-sized CellaVision experiments (no GPU in the session that recorded them): 64x64 input
# (the 300x300 crops downsampled 4.7x), 10 epochs of the fivefold set (70 -> 350 samples),
# CSV logging only. The GPU-sized protocol (300x300, 100 epochs) is owed.
# Usage: experiments/cellavision/run_cpu.sh OUT_DIR   (e.g. /work/cv_runs; outputs are not committed)
set -euo pipefail
OUT=${1:?output directory}
DATA="data=cellavision data.root=${CELLAVISION_ROOT:-../shared/data/cellavision_wbc} data.image_size=[64,64] data.num_workers=0"
COMMON="$DATA trainer.max_epochs=10 logger=csv callbacks.progress_bar=none trainer.accelerator=cpu"
PY=${PYTHON:-.venv/bin/python}

# 1. the paper's protocol (SegNet-VGG16, sgdm lr 1e-3, median-frequency weighting), 3 seeds
$PY -m bloodseg.train -m experiment=segnet_vgg16 $COMMON seed=1,2,3 hydra.sweep.dir=$OUT/paper_protocol
# 2. the same network with Adam (tried to get closer to the goal), 3 seeds
$PY -m bloodseg.train -m experiment=segnet_vgg16 $COMMON optimizer=adam optimizer.lr=1e-3 seed=1,2,3 hydra.sweep.dir=$OUT/segnet_adam
# 3. smp baselines at the same budget and split (Adam lr 1e-3), seed 1
for exp in unet_resnet34 fpn_resnet34 deeplabv3plus_resnet34; do
  $PY -m bloodseg.train -m experiment=$exp $COMMON optimizer=adam optimizer.lr=1e-3 seed=1 hydra.sweep.dir=$OUT/$exp
done
# 4. class weighting x learning rate (SegNet, sgdm as in the paper), seed 1, 4 epochs
$PY -m bloodseg.train -m experiment=segnet_vgg16 $DATA trainer.max_epochs=4 logger=csv callbacks.progress_bar=none \
  trainer.accelerator=cpu loss.class_weighting=none,median_frequency optimizer.lr=1e-2,1e-3 \
  hydra.sweep.dir=$OUT/weighting_lr
