#!/usr/bin/env bash
# One device call: page-locked host I/O (A/B with MAMBATAG_NO_PIN), TF32 for the chunk graph
# (throughput and CLI parity vs the CPU standard graph), chunk length 250 vs 1000.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
M=models/default
$B/mambatag tag demo/demo.flac --frames --kernels onnx > /tmp/cpu.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda > /tmp/gpu_chunk.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda --tf32 > /tmp/gpu_chunk_tf32.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda --engine step --cuda-graph > /tmp/gpu_step.jsonl
for f in gpu_chunk gpu_chunk_tf32 gpu_step; do python3 scripts/gpu/cli-parity.py /tmp/cpu.jsonl /tmp/$f.jsonl; done > $OUT/cli_parity.txt 2>&1
[ -x $B/gputest ] && timeout 70 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests_fused.txt 2>&1
timeout 100 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,1024,10240,16384 --steps 2000 > $OUT/bench_pinned.txt 2>&1
MAMBATAG_NO_PIN=1 timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,10240 --steps 2000 > $OUT/bench_nopin.txt 2>&1
timeout 70 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1 --steps 400 --chunk-streams 1024,4096 > $OUT/chunk_250.txt 2>&1
timeout 70 $B/mambatag bench --device cuda --cuda-graph --tf32 --model $M --streams 1 --steps 400 --chunk-streams 1024,4096 > $OUT/chunk_250_tf32.txt 2>&1
timeout 90 $B/mambatag bench --device cuda --cuda-graph --tf32 --model $M --streams 1 --steps 400 --chunk-streams 1024,4096 --chunk-frames 1000 > $OUT/chunk_1000_tf32.txt 2>&1
tail -n 30 $OUT/*.txt
