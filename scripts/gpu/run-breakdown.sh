#!/usr/bin/env bash
# Where a CUDA step's time goes: audio upload, session run, scores download (B = 1, 16, 1024).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
timeout 60 $B/mambatag bench --device cuda --model $M --streams 1,16,1024 --steps 1000 > $OUT/breakdown.txt 2>&1
timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,1024 --steps 1000 > $OUT/breakdown_graph.txt 2>&1
tail -n 30 $OUT/*.txt
