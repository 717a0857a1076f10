#!/usr/bin/env bash
# Classic SegNet pooling (argmax indices, model.pool_tie_tolerance=0) vs tie-robust pooling
# (the default, 0.01) under the paper's protocol on CellaVision (SegNet-VGG16, sgdm lr 1e-3,
# median-frequency weighting, the same 70/30 split), CPU-sized: 64x64 training, 4 epochs
# (the budget of experiments/cellavision's weighting x lr sweep, whose median_frequency / 1e-3
# cell is this protocol's seed 1 with classic pooling), seeds 1,2,3, the two settings
# interleaved per seed so that a cut-off run still holds complete pairs. Every checkpoint is
# then scored at the crops' native 300x300 into OUT/native300/<setting>_seed<seed>/.
# Usage: experiments/pool_ties/run_cpu.sh OUT_DIR   (about 10 min per run on 2 idle CPU cores;
# SEEDS="2" runs only that seed, so seeds can run side by side, each with OMP_NUM_THREADS=1)
set -euo pipefail
OUT=${1:?output directory}
ROOT=${CELLAVISION_ROOT:-../shared/data/cellavision_wbc}
DATA="data=cellavision data.root=$ROOT data.image_size=[64,64] data.num_workers=0"
COMMON="$DATA trainer.max_epochs=4 logger=csv callbacks.progress_bar=none trainer.accelerator=cpu"
PY=${PYTHON:-.venv/bin/python}

for seed in ${SEEDS:-1 2 3}; do
  for tolerance in 0.01 0.0; do
    name=tolerance_${tolerance}_seed$seed
    [ -f "$OUT/native300/$name/0/metrics.json" ] && continue   # resumable: finished pairs are kept
    $PY -m bloodseg.train -m experiment=segnet_vgg16 $COMMON model.pool_tie_tolerance=$tolerance seed=$seed \
      hydra.sweep.dir=$OUT/$name
    dest="$OUT/native300/$name/0"
    mkdir -p "$dest/.hydra" && cp "$OUT/$name/0/.hydra/overrides.yaml" "$dest/.hydra/"
    $PY -m bloodseg.evaluate ckpt_path="$OUT/$name/0/checkpoints/last.ckpt" data=cellavision data.root=$ROOT \
      trainer.accelerator=cpu output_dir="$dest"
  done
done
