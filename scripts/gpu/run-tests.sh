#!/usr/bin/env bash
# One device call: the GPU test suite (tests/gpu.rs) on the layer step graph (the default on a
# GPU), the fused graphs and the standard graphs, all with CUDA graphs. Carry .gpubin/gputest.xz
# (mambatag itself is not needed).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
gpu_tests layer fused onnx
tail -n 25 $OUT/*.txt
