#!/usr/bin/env bash
# One device call (gputest + mambatag; needs models/weights/*.safetensors moved out of the tree
# for the upload limit): the GPU test suite on the layer, fused and standard graphs, CLI parity,
# the step latency per batch size, and ncu's per-kernel GPU time of a batch-1 layer-graph step.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
gpu_tests ${KS:-layer fused onnx}
cli_parity "step_auto:--engine step --cuda-graph" "chunk:"
timeout 150 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,64,256,1024,4096,10240,16384 --steps 2000 --min-steps 2000 > $OUT/bench_auto.txt 2>&1
timeout 100 /usr/local/cuda/bin/ncu --metrics gpu__time_duration.sum --csv --launch-skip 300 --launch-count 100 \
  $B/mambatag bench --device cuda --model $M --steps 30 --streams 1 > /tmp/ncu.csv 2>/dev/null
python3 scripts/gpu/ncu-summary.py /tmp/ncu.csv > $OUT/ncu_layer_b1.txt
tail -n 30 $OUT/*.txt
