#!/usr/bin/env bash
# One device call (#3): several fine-tuning stages side by side on the one GPU (run-stage.sh once
# per argument, same INIT, LR, SEED and budget), so that recipes are compared on equal terms.
# Each argument is NAME=EXTRA (train.py arguments added to the shipped recipe; empty: the control):
#   run: carry [".data/bundle", ".data/whl"], command:
#   bash scripts/gpu/run-stages.sh "a=" "b=--onset-w 2" "c=--onset-w 2 --distill-w 0.5"
# Runs sharing the GPU each get a share of the steps (BENCHMARKS.md: two together gave 1.1x the
# throughput of one). Results: $OUT/NAME.{log,tar.gz} per run (see run-stage.sh).
set -u
D=$(dirname "$0")
export BUDGET_S=${BUDGET_S:-570}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .data/whl/*.whl || exit 1
for spec in "$@"; do
  NAME=${spec%%=*} EXTRA=${spec#*=} bash "$D/run-stage.sh" > "/tmp/run_${spec%%=*}.txt" 2>&1 &
done
wait
for spec in "$@"; do cat "/tmp/run_${spec%%=*}.txt"; done
