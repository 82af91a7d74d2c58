#!/usr/bin/env bash
# One device call: the GPU test suite (tests/gpu.rs) on the layer step graph (the default on a
# GPU), the fused graphs and the standard graphs, all with CUDA graphs. Carry .gpubin/gputest.xz
# (mambatag itself is not needed).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
export MAMBATAG_GPU_MODEL=models/default MAMBATAG_GPU_CUDA_GRAPH=1
for k in layer fused onnx; do
  MAMBATAG_GPU_KERNELS=$k timeout 150 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests_$k.txt 2>&1
done
tail -n 25 $OUT/*.txt
