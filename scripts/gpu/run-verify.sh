#!/usr/bin/env bash
# One device call (#5/#6, mambatag + gputest; models/weights/*.safetensors may stay home): the
# checks and numbers of a release build, in one call and on one card: the GPU test suite (layer
# and fused step graphs), per-frame CLI parity against the CPU, the chunk-graph throughput (FP32
# and TF32), the step sweep with CUDA graphs (--kernels auto), and the PyTorch eager loop at the
# same N on random weights of the default model's shape (speed does not depend on their values).
# Seven files come back (the tool returns at most eight). QUICK=1: the tests and parity only.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
S=${STREAMS:-1,16,64,256,1024,4096,10240,16384}
gpu_tests layer fused
cli_parity "step_auto:--engine step --cuda-graph" "step_fused:--engine step --kernels fused" "chunk:" "chunk_tf32:--tf32"
[ "${QUICK:-0}" = 1 ] && { tail -n 12 $OUT/gpu_tests_*.txt $OUT/cli_parity.txt; exit 0; }
chunk_benches
timeout 150 $B/mambatag bench --device cuda --cuda-graph --model $M --streams $S --steps 2000 --min-steps 2000 > $OUT/bench_auto.txt 2>&1
torch_loop $S
tail -n 12 $OUT/gpu_tests_*.txt $OUT/cli_parity.txt
tail -n 20 $OUT/chunk_*.txt $OUT/bench_auto.txt; cat $OUT/torch.jsonl
