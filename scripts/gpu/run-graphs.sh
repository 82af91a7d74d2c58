#!/usr/bin/env bash
# CUDA graphs after the resize fix: GPU suite with graphs, then the batch sweep.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
export MAMBATAG_GPU_MODEL=$M
MAMBATAG_GPU_CUDA_GRAPH=1 timeout 80 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests_graph.txt 2>&1
timeout 50 $B/gputest --ignored --nocapture --test-threads 1 gpu_batch_growth > $OUT/gpu_tests_growth_nograph.txt 2>&1
timeout 100 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,64,256,1024,4096,16384 --steps 1000 > $OUT/bench_graph.txt 2>&1
for n in 1024 16384; do timeout 40 $B/mambatag bench --device cuda --cuda-graph --model $M --streams $n --steps 400 > $OUT/bench_graph_only_$n.txt 2>&1; done
tail -n 25 $OUT/*.txt
