#!/usr/bin/env bash
# GPU suite with and without CUDA graphs, then the step sweep without and with graphs.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
export MAMBATAG_GPU_MODEL=$M
timeout 60 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests_nograph.txt 2>&1
MAMBATAG_GPU_CUDA_GRAPH=1 timeout 60 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests_graph.txt 2>&1
timeout 80 $B/mambatag bench --device cuda --model $M --streams 1,16,1024,4096,16384 --steps 1000 > $OUT/bench_cuda2.txt 2>&1
timeout 70 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,256,1024,4096,16384 --steps 1000 --chunk-streams 1024,4096 > $OUT/bench_cuda_graph2.txt 2>&1
tail -n 40 $OUT/*.txt
