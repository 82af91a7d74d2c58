#!/usr/bin/env bash
# One device call (mambatag only): the layer step graph's kernels (register use, spills), CLI
# parity vs the CPU standard graphs, step latency per batch size (2,000 timed steps each).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
/usr/local/cuda/bin/ptxas -arch=sm_90 -v src/engine/fused/kernels.ptx -o /tmp/k.cubin > $OUT/ptxas.txt 2>&1
$B/mambatag tag demo/demo.flac --frames --kernels onnx > /tmp/cpu.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda --engine step --cuda-graph > /tmp/gpu_step_layer.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda > /tmp/gpu_chunk.jsonl
for f in gpu_step_layer gpu_chunk; do python3 scripts/gpu/cli-parity.py /tmp/cpu.jsonl /tmp/$f.jsonl; done > $OUT/cli_parity.txt 2>&1
timeout 150 $B/mambatag bench --device cuda --cuda-graph --model $M --streams ${S:-1,16,64,256,1024,4096,16384} --steps 2000 --min-steps 2000 > $OUT/bench_layer.txt 2>&1
timeout 150 $B/mambatag bench --device cuda --cuda-graph --model $M --kernels fused --streams ${S:-1,16,64,256,1024,4096,16384} --steps 2000 --min-steps 2000 > $OUT/bench_fused.txt 2>&1
tail -n 40 $OUT/*.txt
