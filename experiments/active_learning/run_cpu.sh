#!/usr/bin/env bash
# Active learning on CellaVision at CPU size (64x64 input, 20 epochs, seeds 1-3): 10 random labelled
# training images, then +10 most uncertain (python -m bloodseg.suggest) vs +10 random, all scored on
# the same fixed 30-image test split. 9 trainings + 3 rankings.
# Usage: experiments/active_learning/run_cpu.sh OUT_DIR [more train overrides...]
# (outputs are not committed; results.json and tables.md land in OUT_DIR)
set -euo pipefail
OUT=${1:?output directory}
shift
PY=${PYTHON:-.venv/bin/python}
ROOT=${CELLAVISION_ROOT:-../shared/data/cellavision_wbc}
$PY experiments/active_learning/driver.py "$OUT" --root "$ROOT" --seeds 1 2 3 --labelled 10 --added 10 \
  --epochs ${EPOCHS:-20} -- "$@"
