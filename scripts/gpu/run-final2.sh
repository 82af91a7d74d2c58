#!/usr/bin/env bash
# One device call (gputest + mambatag; move models/weights/*.safetensors out of the tree for the
# upload limit): the GPU test suite (layer and fused graphs), CLI parity, step latency with and
# without ORT's end-of-run synchronisation (MAMBATAG_RUN_SYNC=1), alternating, the full batch
# sweep, and chunk-graph throughput (FP32, TF32).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
gpu_tests ${KS:-layer fused}
cli_parity "step_auto:--engine step --cuda-graph" "chunk:" "chunk_tf32:--tf32"
for i in 1 2 3; do
  timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16 --steps 3000 > $OUT/bench_nosync_$i.txt 2>&1
  MAMBATAG_RUN_SYNC=1 timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16 --steps 3000 > $OUT/bench_sync_$i.txt 2>&1
done
timeout 150 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,64,256,1024,4096,10240,16384 --steps 2000 --min-steps 2000 > $OUT/bench_auto.txt 2>&1
timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1 --steps 400 --chunk-streams 1,256,1024,4096 > $OUT/chunk_fp32.txt 2>&1
timeout 90 $B/mambatag bench --device cuda --cuda-graph --tf32 --model $M --streams 1 --steps 400 --chunk-streams 1024,4096 --chunk-frames 1000 > $OUT/chunk_tf32.txt 2>&1
tail -n 30 $OUT/*.txt
