#!/usr/bin/env bash
# Session 13's last call (a lean run-verify.sh for a short device budget): the GPU tests on both
# step graphs, CLI parity, the FP32 chunk graph, then run-ab13b.sh's one-round A/B of the log-mel
# row split, which doubles as the step sweep.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
gpu_tests layer fused
cli_parity "step_auto:--engine step --cuda-graph" "step_fused:--engine step --kernels fused" "chunk:"
timeout 60 $B/mambatag bench --device cuda --model $M --streams 1 --steps 200 --chunk-streams 4096 > $OUT/chunk_fp32.txt 2>&1
ROUNDS=1 bash scripts/gpu/run-ab13b.sh
