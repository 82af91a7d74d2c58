#!/usr/bin/env bash
# One device call: the fused-op graphs (step-fused.onnx / chunk-fused.onnx) on CUDA — GPU test
# suite for both graph kinds, step latency/streams with CUDA graphs, chunk throughput, and the
# PyTorch eager loop at equal N in the same run.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/gpu.txt
M=models/default
export MAMBATAG_GPU_MODEL=$M MAMBATAG_GPU_CUDA_GRAPH=1
# end to end through the CLI: CPU standard graphs vs CUDA fused graphs (chunk path and step path)
$B/mambatag tag demo/demo.flac --frames --kernels onnx > /tmp/cpu.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda > /tmp/gpu_chunk.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda --engine step --cuda-graph > /tmp/gpu_step.jsonl
{ python3 scripts/gpu/cli-parity.py /tmp/cpu.jsonl /tmp/gpu_chunk.jsonl; python3 scripts/gpu/cli-parity.py /tmp/cpu.jsonl /tmp/gpu_step.jsonl; } > $OUT/cli_parity.txt 2>&1
[ -x $B/gputest ] && timeout 70 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests_fused.txt 2>&1
[ -x $B/gputest ] && MAMBATAG_GPU_KERNELS=onnx timeout 70 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests_onnx.txt 2>&1
timeout 120 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,256,1024,4096,8192,10240,16384 --steps 2000 > $OUT/bench_fused_graph.txt 2>&1
timeout 80 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1 --steps 400 --chunk-streams 1,64,256,1024,4096 > $OUT/bench_fused_chunk.txt 2>&1
[ -n "$TORCH" ] && timeout 100 python3 -m models.bench_torch models/weights/mambatag-default-1.6.0.safetensors --streams 1,16,1024,10240,16384 --steps 60 > $OUT/torch.jsonl 2>&1
tail -n 40 $OUT/*.txt
