#!/usr/bin/env bash
# One device call (mambatag only): CLI parity of the CUDA fused graphs vs the CPU standard
# graphs, step latency/streams with CUDA graphs, chunk throughput (FP32 and TF32), and the
# PyTorch eager loop at equal N in the same run.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
M=models/default
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
$B/mambatag tag demo/demo.flac --frames --kernels onnx > /tmp/cpu.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda > /tmp/gpu_chunk.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda --tf32 > /tmp/gpu_chunk_tf32.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda --engine step --cuda-graph > /tmp/gpu_step.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda --engine step --cuda-graph --kernels onnx > /tmp/gpu_step_onnx.jsonl
for f in gpu_chunk gpu_chunk_tf32 gpu_step gpu_step_onnx; do python3 scripts/gpu/cli-parity.py /tmp/cpu.jsonl /tmp/$f.jsonl; done > $OUT/cli_parity.txt 2>&1
timeout 100 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,256,1024,4096,10240,16384 --steps 2000 > $OUT/bench_step.txt 2>&1
timeout 60 $B/mambatag bench --device cuda --cuda-graph --tf32 --model $M --streams 1,16 --steps 2000 > $OUT/bench_step_tf32.txt 2>&1
timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1 --steps 400 --chunk-streams 1,256,1024,4096 > $OUT/chunk_fp32.txt 2>&1
timeout 90 $B/mambatag bench --device cuda --cuda-graph --tf32 --model $M --streams 1 --steps 400 --chunk-streams 1024,4096 --chunk-frames 1000 > $OUT/chunk_tf32.txt 2>&1
[ -n "$TORCH" ] && timeout 100 python3 -m models.bench_torch models/weights/mambatag-default-1.6.0.safetensors --streams 1,16,1024,10240,16384 --steps 60 > $OUT/torch.jsonl 2>&1
tail -n 30 $OUT/*.txt; cat $OUT/torch.jsonl
