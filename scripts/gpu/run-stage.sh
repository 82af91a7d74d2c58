#!/usr/bin/env bash
# One device call (#3): one more fine-tuning stage of the default tagger (train.py with the
# default model's recipe: --maxpool-w 0.5 --consist-w 3, B 32 x 30 s), then its log and weights.
#   run: carry [".data/bundle", ".data/whl"] (+ the INIT weights' folder when it is git-ignored),
#   command: bash scripts/gpu/run-stage.sh
# Env: INIT (weights to continue from; default the shipped model's), LR (5e-4), SEED (6), SCAN
# (train.py --scan: auto), EXTRA (more train.py args, word-split, e.g. "--freq-mask 2 --time-mask
# 2"), BUDGET_S (seconds left for this script, default 570), DRY=1 (print the train.py command
# line and exit; runs anywhere), NAME (stage: names the outputs, so that run-stages.sh can run
# two at once). run-scan-train.sh calls it after its scan check.
# Results: $OUT/NAME.log (train.py's output) and $OUT/NAME.tar.gz (NAME/: weights.safetensors,
# thresholds.json, train_log.jsonl, train_summary.json).
set -u
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-570}
INIT=${INIT:-models/weights/mambatag-default-1.6.0.safetensors}
LR=${LR:-5e-4}
SEED=${SEED:-6}
EXTRA=${EXTRA:-}
SCAN=${SCAN:-auto}
DRY=${DRY:-0}
NAME=${NAME:-stage}
for f in "$INIT" .data/bundle; do
  [ -e "$f" ] || { echo "run-stage.sh: $f is missing (carry .data/bundle, .data/whl and the INIT weights' folder)"; exit 1; }
done
if [ "$DRY" != 1 ]; then
  [ -d /tmp/site ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .data/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
fi
LEFT=$(( BUDGET_S - ($(date +%s) - T0) ))
# 75 s for loading, setup, the final monitoring/thresholds, saving and the tarball
MIN=$(python3 -c "print(round(($LEFT - 75) / 60, 2))")
DEADLINE=$(python3 -c "print($MIN + 1.0)")
# shellcheck disable=SC2206  # EXTRA is meant to be word-split
# outputs under a folder of their own: on a warm machine /tmp/b holds prelude.sh's binaries, and
# a run named b once wrote its weights there and tarred them up with them
W=/tmp/stages; mkdir -p $W
CMD=(python3 models/train.py --bundle .data/bundle --out $W/$NAME --minutes "$MIN"
  --deadline-minutes "$DEADLINE" --scan "$SCAN"
  --init "$INIT" --lr "$LR" --warmup 30 --consist-w 3 --maxpool-w 0.5 --val-every 100000
  --val-scenes 16 --seed "$SEED" --batch 32 $EXTRA)
echo "== ${LEFT}s left, training ${MIN} min: ${CMD[*]}"
[ "$DRY" = 1 ] && exit 0
# a hard stop short of the call's end, so that the log still comes back if train.py overruns
timeout $(( LEFT - 15 )) "${CMD[@]}" > /tmp/$NAME.log 2>&1
echo "== $NAME: train.py exit $?"
grep -E '"step": (25|100|300|500|800|1200|1600|2000|3000|4000)\b|"event": "(train_start|final|error|oom)"' /tmp/$NAME.log | cut -c1-300
tail -n 2 /tmp/$NAME.log | cut -c1-300
cp /tmp/$NAME.log $OUT/$NAME.log
tar -C $W -czf $OUT/$NAME.tar.gz $NAME
ls -la $OUT
