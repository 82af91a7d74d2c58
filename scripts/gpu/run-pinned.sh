#!/usr/bin/env bash
# Page-locked host audio/scores: GPU suite with CUDA graphs, then the large-batch sweep.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
export MAMBATAG_GPU_MODEL=$M
MAMBATAG_GPU_CUDA_GRAPH=1 timeout 70 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests_graph.txt 2>&1
timeout 90 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1024,4096,8192,10240,12288,16384 --steps 1000 > $OUT/bench_graph_pinned.txt 2>&1
tail -n 30 $OUT/*.txt
