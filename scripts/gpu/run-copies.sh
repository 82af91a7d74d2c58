#!/usr/bin/env bash
# One device call: driver-API copies (default) vs ORT's copy_into (MAMBATAG_ORT_COPIES=1) for the
# per-step audio upload / scores download, plus CLI parity.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
M=models/default
$B/mambatag tag demo/demo.flac --frames --kernels onnx > /tmp/cpu.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda > /tmp/gpu_chunk.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda --engine step --cuda-graph > /tmp/gpu_step.jsonl
for f in gpu_chunk gpu_step; do python3 scripts/gpu/cli-parity.py /tmp/cpu.jsonl /tmp/$f.jsonl; done > $OUT/cli_parity.txt 2>&1
timeout 100 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,1024,10240,16384 --steps 3000 > $OUT/bench_driver_copies.txt 2>&1
MAMBATAG_ORT_COPIES=1 timeout 100 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,10240 --steps 3000 > $OUT/bench_ort_copies.txt 2>&1
timeout 60 $B/mambatag bench --device cuda --cuda-graph --tf32 --model $M --streams 1,16 --steps 3000 > $OUT/bench_tf32.txt 2>&1
[ -n "$TORCH" ] && timeout 60 python3 -m models.bench_torch models/weights/mambatag-default-1.6.0.safetensors --streams 1,16 --steps 100 > $OUT/torch.jsonl 2>&1
tail -n 30 $OUT/*.txt; cat $OUT/torch.jsonl
