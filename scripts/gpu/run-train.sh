#!/usr/bin/env bash
# One device call (#3): fine-tunes of the default model, run side by side on the one GPU so that
# the segment max-pool loss gets its control run in the same call. Carry: .data/bundle and
# .data/whl (soundfile wheels). Needs no Rust binaries or ONNX Runtime.
#   run: carry [".data/bundle", ".data/whl"], command: bash scripts/gpu/run-train.sh
# Each variant writes weights, logs and thresholds; one tarball comes back: $OUT/runs.tar.gz.
# Variants are "NAME ARGS..." lines in $VARIANTS (default below); MINUTES is each run's budget.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .data/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
MINUTES=${MINUTES:-8.0}
INIT=models/weights/mambatag-default-1.6.0.safetensors
FT="--init $INIT --lr 1e-3 --warmup 30 --consist-w 3 --val-every 100000 --val-scenes 16 --seed 2 --batch 32"
VARIANTS=${VARIANTS:-"maxpool $FT --maxpool-w 0.5
control $FT --maxpool-w 0"}
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv
mkdir -p /tmp/runs
while read -r name args; do
  [ -n "$name" ] || continue
  echo "== $name: $args"
  python3 models/train.py --bundle .data/bundle --out /tmp/runs/$name --minutes $MINUTES \
    --deadline-minutes $(python3 -c "print($MINUTES + 1.2)") $args > /tmp/runs/$name.log 2>&1 &
done <<< "$VARIANTS"
# GPU load while they run (is one run already filling the chip?)
for i in 1 2 3 4; do sleep 75; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader; done
wait
for f in /tmp/runs/*.log; do echo "== $f"; grep -E '"step": (25|100|300|500|800)\b|"event": "(final|error|oom)"' $f | cut -c1-400; tail -n 2 $f | cut -c1-300; done
tar -C /tmp -czf $OUT/runs.tar.gz runs
ls -la $OUT
