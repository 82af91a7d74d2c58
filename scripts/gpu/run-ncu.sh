#!/usr/bin/env bash
# One device call (mambatag only): GPU time of every kernel of a step, measured with Nsight
# Compute (ncu: gpu__time_duration per launch; CUDA graphs off so that each node is a launch),
# for the layer and the fused step graphs at 1 stream, and the layer graph at 4,096 streams.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
NCU=/usr/local/cuda/bin/ncu
prof() {  # prof NAME ARGS...
  local name=$1; shift
  timeout 150 $NCU --metrics gpu__time_duration.sum --csv --launch-skip ${SKIP:-300} --launch-count ${COUNT:-60} \
    $B/mambatag bench --device cuda --model $M --steps 30 "$@" > /tmp/$name.csv 2>/tmp/$name.err
  python3 scripts/gpu/ncu-summary.py /tmp/$name.csv > $OUT/$name.txt
}
prof layer_b1 --streams 1
prof fused_b1 --kernels fused --streams 1
COUNT=40 prof layer_b4096 --streams 4096
prof fused_b4096 --kernels fused --streams 4096
tail -n 40 $OUT/*.txt; tail -n 5 /tmp/*.err
