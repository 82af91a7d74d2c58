#!/usr/bin/env bash
# One device call (mambatag only): the layer step graph (step-layer.onnx, one MambaLayer kernel
# per layer; what --kernels auto runs on a GPU) against the fused step graph: CLI parity vs the
# CPU standard graphs, step latency/streams with CUDA graphs (2,000 timed steps at every size),
# and the PyTorch eager loop at equal N in the same call.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
$B/mambatag tag demo/demo.flac --frames --kernels onnx > /tmp/cpu.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda --engine step --cuda-graph > /tmp/gpu_step_layer.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda --engine step --cuda-graph --kernels fused > /tmp/gpu_step_fused.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda > /tmp/gpu_chunk.jsonl
for f in gpu_step_layer gpu_step_fused gpu_chunk; do python3 scripts/gpu/cli-parity.py /tmp/cpu.jsonl /tmp/$f.jsonl; done > $OUT/cli_parity.txt 2>&1
S=1,16,64,256,1024,4096,10240,16384
timeout 150 $B/mambatag bench --device cuda --cuda-graph --model $M --streams $S --steps 2000 --min-steps 2000 > $OUT/bench_layer.txt 2>&1
timeout 150 $B/mambatag bench --device cuda --cuda-graph --model $M --kernels fused --streams $S --steps 2000 --min-steps 2000 > $OUT/bench_fused.txt 2>&1
timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16 --steps 5000 > $OUT/bench_layer_again.txt 2>&1
timeout 120 python3 -m models.bench_torch models/weights/mambatag-default-1.6.0.safetensors --streams 1,16,64,256,1024,4096,10240,16384 --steps 60 > $OUT/torch.jsonl 2>&1
tail -n 30 $OUT/*.txt; cat $OUT/torch.jsonl
