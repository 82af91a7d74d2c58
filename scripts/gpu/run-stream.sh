#!/usr/bin/env bash
# One device call (gputest + mambatag; move models/weights/*.safetensors out of the tree for the
# upload limit): the GPU test suite (layer graph, then fused), CLI parity, and step latency with
# the engine's own compute stream (audio upload queued on it) vs ORT's stream
# (MAMBATAG_ORT_STREAM=1), alternating, 2,000 timed steps per size.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
gpu_tests ${KS:-layer fused}
cli_parity "step_auto:--engine step --cuda-graph" "chunk:"
for i in 1 2; do
  timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,64 --steps 3000 > $OUT/bench_own_$i.txt 2>&1
  MAMBATAG_ORT_STREAM=1 timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,64 --steps 3000 > $OUT/bench_ort_$i.txt 2>&1
done
timeout 150 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,64,256,1024,4096,10240,16384 --steps 2000 --min-steps 2000 > $OUT/bench_auto.txt 2>&1
tail -n 30 $OUT/*.txt
