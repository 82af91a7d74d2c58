#!/usr/bin/env bash
# One device call: a firmer p99 at 10,240 and 16,384 streams (2,000 timed steps each, CUDA graphs).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
timeout 200 $B/mambatag bench --device cuda --cuda-graph --model models/default --streams 10240,16384 --steps 2000 --min-steps 2000 > $OUT/bench_p99.txt 2>&1
cat $OUT/bench_p99.txt
