#!/usr/bin/env bash
# One device call: one more fine-tuning stage of the default tagger with the Triton selective scan
# (run-scan-train.sh without its scan check), by default with SpecAugment-style feature masking
# (train.py --freq-mask/--time-mask) against the overfitting to the training sources.
#   run: carry [".data/bundle", ".data/whl", ".data/r2"], command: bash scripts/gpu/run-stage.sh
# Env: INIT (weights to continue from, default .data/r2/stage/weights.safetensors: git-ignored,
# so carry .data/r2), LR (4e-4), SEED (6), EXTRA (more train.py args, word-split; default
# "--freq-mask 2 --time-mask 2 --wd 0.05", 0.05 being train.py's default decay; EXTRA= gives a
# control run without masking), BUDGET_S (the whole call, default 570). DRY=1 prints the
# train.py command line and exits (runs anywhere).
# Results: $OUT/train.log (train.py's output) and $OUT/stage.tar.gz (stage/: weights.safetensors,
# thresholds.json, train_log.jsonl, train_summary.json).
set -u
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-570}
INIT=${INIT:-.data/r2/stage/weights.safetensors}
LR=${LR:-4e-4}
SEED=${SEED:-6}
EXTRA=${EXTRA---freq-mask 2 --time-mask 2 --wd 0.05}  # EXTRA= (set, empty): no extra args
DRY=${DRY:-0}
for f in "$INIT" .data/bundle; do
  [ -e "$f" ] || { echo "run-stage.sh: $f is missing (carry .data/bundle, .data/whl and the INIT weights' folder)"; exit 1; }
done
if [ "$DRY" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .data/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
fi
LEFT=$(( BUDGET_S - ($(date +%s) - T0) ))
# 75 s for loading, setup, the final monitoring/thresholds, saving and the tarball
MIN=$(python3 -c "print(round(($LEFT - 75) / 60, 2))")
DEADLINE=$(python3 -c "print($MIN + 1.0)")
# shellcheck disable=SC2206  # EXTRA is meant to be word-split
CMD=(python3 models/train.py --bundle .data/bundle --out /tmp/stage --minutes "$MIN"
  --deadline-minutes "$DEADLINE" --scan triton
  --init "$INIT" --lr "$LR" --warmup 30 --consist-w 3 --maxpool-w 0.5 --val-every 100000
  --val-scenes 16 --seed "$SEED" --batch 32 $EXTRA)
echo "== ${LEFT}s left, training ${MIN} min: ${CMD[*]}"
[ "$DRY" = 1 ] && exit 0
# a hard stop short of the call's end, so that the log still comes back if train.py overruns
timeout $(( LEFT - 15 )) "${CMD[@]}" > /tmp/stage.log 2>&1
echo "== train.py exit $?"
grep -E '"step": (25|100|300|500|800|1200|1600|2000|3000|4000)\b|"event": "(train_start|final|error|oom)"' /tmp/stage.log | cut -c1-300
tail -n 2 /tmp/stage.log | cut -c1-300
cp /tmp/stage.log $OUT/train.log
tar -C /tmp -czf $OUT/stage.tar.gz stage
ls -la $OUT
