#!/usr/bin/env bash
# #5's middle batches: GPU time per kernel of the layer step graph (Nsight Compute,
# gpu__time_duration, free clocks, warm caches, CUDA graphs off; the bench's batch-1 and
# batch-16 rounds skipped) at each N in ${NS:-128 256 512} -> $OUT/ncu_N.txt, grouped by launch
# geometry.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
NCU=/usr/local/cuda/bin/ncu
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
for n in ${NS:-128 256 512}; do
  timeout 150 $NCU --clock-control none --metrics gpu__time_duration.sum --csv --launch-skip 1150 --launch-count 300 \
    $B/mambatag bench --device cuda --model $M --steps 30 --min-steps 30 --streams $n > /tmp/$n.csv 2>/tmp/$n.err
  python3 scripts/gpu/ncu-summary.py /tmp/$n.csv --grid > $OUT/ncu_$n.txt
done
tail -n 20 $OUT/ncu_*.txt; tail -n 3 /tmp/*.err
