#!/usr/bin/env bash
# One device call: batch-1/16 step latency of the current step-fused graph with CUDA graphs, CLI
# parity, and PyTorch eager at N = 1 and 16 in the same call.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
M=models/default
$B/mambatag tag demo/demo.flac --frames --kernels onnx > /tmp/cpu.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda --engine step --cuda-graph > /tmp/gpu_step.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda > /tmp/gpu_chunk.jsonl
for f in gpu_step gpu_chunk; do python3 scripts/gpu/cli-parity.py /tmp/cpu.jsonl /tmp/$f.jsonl; done > $OUT/cli_parity.txt 2>&1
for i in 1 2; do timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,10240,16384 --steps 5000 > $OUT/bench_$i.txt 2>&1; done
timeout 60 $B/mambatag bench --device cuda --cuda-graph --tf32 --model $M --streams 1,16 --steps 5000 > $OUT/bench_tf32.txt 2>&1
timeout 60 python3 -m models.bench_torch models/weights/mambatag-default-1.6.0.safetensors --streams 1,16 --steps 200 > $OUT/torch.jsonl 2>&1
tail -n 14 $OUT/*.txt; cat $OUT/torch.jsonl
