#!/usr/bin/env bash
# One device call: the Triton selective scan (models/scan_triton.py) on the GPU, next to the
# PyTorch scan (models.mamba.selective_scan). Not run yet: written when no device time was left.
#   1. parity at the training shape (B 32, T 3000, E 256, N 16, fp32): y, h_T and all gradients,
#      relative to the PyTorch scan run in float64;
#   2. forward + backward time of each (synchronized wall clock, median of 10 after 3 warm-ups);
#   3. 60 training steps of models/train.py with each (--scan torch / triton): step_s in the logs.
#   run: carry [".data/bundle", ".data/whl"], command: bash scripts/gpu/run-scan.sh
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .data/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
timeout 240 python3 scripts/gpu/scan_check.py 2>&1 | tee $OUT/scan_kernel.txt
for scan in torch triton; do
  timeout 150 python3 models/train.py --bundle .data/bundle --out /tmp/s_$scan --max-steps 60 --val-scenes 8 \
    --scan $scan --batch 32 > $OUT/train_$scan.log 2>&1
  echo "== train --scan $scan"; grep -E '"step": (50|60)\b|"event": "(final|error)"' $OUT/train_$scan.log | cut -c1-220
done
