#!/usr/bin/env bash
# One device call (mambatag only; needs models/weights/mambatag-default-1.6.0.safetensors in the
# tree — move models/test-tiny out for the upload limit): the step sweep with CUDA graphs
# (--kernels auto: the layer step graph up to 512 streams, the fused one above), the PyTorch
# eager loop at the same N in the same call, and chunk-graph throughput (FP32 and TF32).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
S=1,16,64,256,1024,4096,10240,16384
timeout 150 $B/mambatag bench --device cuda --cuda-graph --model $M --streams $S --steps 2000 --min-steps 2000 > $OUT/bench_auto.txt 2>&1
timeout 150 python3 -m models.bench_torch models/weights/mambatag-default-1.6.0.safetensors --streams $S --steps 60 > $OUT/torch.jsonl 2>&1
timeout 60 $B/mambatag bench --device cuda --model $M --streams 1 --steps 200 --chunk-streams 1,256,1024,4096 > $OUT/chunk_fp32.txt 2>&1
timeout 90 $B/mambatag bench --device cuda --tf32 --model $M --streams 1 --steps 200 --chunk-streams 1024,4096 --chunk-frames 1000 > $OUT/chunk_tf32.txt 2>&1
tail -n 30 $OUT/*.txt; cat $OUT/torch.jsonl
