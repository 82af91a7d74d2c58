#!/usr/bin/env bash
# One device call: the GPU test suite (tests/gpu.rs) on the fused graphs and on the standard
# graphs, both with CUDA graphs. Carry .gpubin/gputest.xz (mambatag itself is not needed).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
export MAMBATAG_GPU_MODEL=models/default MAMBATAG_GPU_CUDA_GRAPH=1
timeout 120 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests_fused.txt 2>&1
MAMBATAG_GPU_KERNELS=onnx timeout 120 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests_onnx.txt 2>&1
tail -n 25 $OUT/*.txt
