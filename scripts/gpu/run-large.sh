#!/usr/bin/env bash
# Large batches with CUDA graphs (batch sizes past 1,024 grow in multiples of 1,024).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
timeout 100 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 8192,10240,12288 --steps 1000 > $OUT/bench_graph_large.txt 2>&1
tail -n 30 $OUT/*.txt
