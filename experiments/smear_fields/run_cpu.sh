#!/usr/bin/env bash
# Real smear fields at native scale on a CPU: U-Net-ResNet18 trained on random 256x256 windows of the
# 1600x1200 fields (data.crop_size), validated and tested on whole fields (no resizing anywhere).
# Usage: experiments/smear_fields/run_cpu.sh OUT_DIR [PART...]   (outputs are not committed)
# PART: plain_seed1 aug_seed1 aug_seed2 aug_seed3 synthetic finetune_seed1 (default: all, in order).
# Each part is one process with OMP_NUM_THREADS=1; run two shells with disjoint parts to use two cores.
set -euo pipefail
OUT=${1:?output directory}
mkdir -p "$OUT"
shift
PARTS=${*:-plain_seed1 aug_seed1 aug_seed2 aug_seed3 synthetic finetune_seed1}
wanted() { [[ " $PARTS " == *" $1 "* ]]; }
ROOT=${SMEAR_FIELDS_ROOT:-../shared/data/smear_fields}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1
# The recipe's common part: 20 epochs of 100 windows (batch 8: 260 steps), Adam + poly, no class
# weighting (cells are 30% of the pixels), validation on the 10 whole val fields every 5 epochs.
COMMON="experiment=unet_resnet34 model.encoder=resnet18 model.encoder_weights=null optimizer=adam optimizer.lr=1e-3 \
scheduler=poly loss.class_weighting=none data.augment_copies=1 data.batch_size=8 trainer.max_epochs=${EPOCHS:-20} \
trainer.check_val_every_n_epoch=5 data.num_workers=0 logger=csv callbacks.progress_bar=none trainer.accelerator=cpu"
REAL="data=smear_fields data.root=$ROOT"
# stain, orientation and magnification vary between labs: colour jitter, any rotation, +-20% zoom
AUG="data.rotation=180 data.color_jitter=0.2 data.scale_range=[0.8,1.25]"
train() {  # NAME OVERRIDES...
  name=$1
  shift
  $PY -m bloodseg.train $COMMON "$@" hydra.run.dir=$OUT/$name > $OUT/$name.log 2>&1
}
wanted plain_seed1 && train plain_seed1 $REAL seed=1
for seed in 1 2 3; do
  wanted aug_seed$seed && train aug_seed$seed $REAL $AUG seed=$seed
done
# the built-in synthetic smears (3 classes) with the same network, windows and schedule
# (check_val_every_n_epoch=1: there is no val split; bloodseg before 2026-12-03 wrote no checkpoint otherwise)
wanted synthetic && train synthetic data=synthetic data.crop_size=[256,256] $AUG seed=1 trainer.check_val_every_n_epoch=1
# fine-tuning: the synthetic run's encoder as the starting point of the real recipe
if wanted finetune_seed1; then
  $PY experiments/smear_fields/encoder_weights.py $OUT/synthetic/checkpoints/last.ckpt $OUT/synthetic_encoder.pt
  train finetune_seed1 $REAL $AUG seed=1 model.encoder_weights=$OUT/synthetic_encoder.pt
fi
