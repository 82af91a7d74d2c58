#!/usr/bin/env bash
# One device call (mambatag + gputest; move models/weights/*.safetensors out of the tree for the
# upload limit): the GPU test suite (layer + fused graphs), CLI parity against the CPU, the step
# sweep, chunk throughput FP32 / TF32 (the #6 numbers of BENCHMARKS.md), and Nsight Compute's
# per-kernel time of the TF32 chunk run.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
gpu_tests layer fused
cli_parity "step_auto:--engine step --cuda-graph" "step_fused:--engine step --kernels fused" "chunk:" "chunk_tf32:--tf32"
timeout 90 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,64,256,1024,4096,10240 --steps 2000 > $OUT/bench_step.txt 2>&1
chunk_benches
WHICH=tf32 bash scripts/gpu/run-chunkncu.sh > /dev/null 2>&1
head -n 8 $OUT/ncu_tf32.txt
tail -n 12 $OUT/gpu_tests_*.txt $OUT/cli_parity.txt $OUT/bench_step.txt $OUT/chunk_*.txt
