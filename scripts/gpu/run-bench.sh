#!/usr/bin/env bash
# One device call: CUDA EP benchmarks, the GPU test suite, and the PyTorch eager baseline.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/gpu.txt
lscpu | grep -E "Model name|^CPU\(s\)" >> $OUT/gpu.txt
M=models/default; S=1,16,64,256,1024,4096,16384
timeout 130 $B/mambatag bench --device cuda --model $M --streams $S --steps 1000 --chunk-streams 1,64,1024 > $OUT/bench_cuda.txt 2>&1
[ -n "$GPU_TESTS" ] && MAMBATAG_GPU_MODEL=$M timeout 100 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests.txt 2>&1
python3 - <<'PY'
from models.weights import MambaConfig, init_weights, save_weights
L = ['speech','music','animal','alarm','vehicle','tools','impact','weather']
c = MambaConfig(d_model=128, n_layers=4, labels=L)
save_weights('/tmp/r.safetensors', init_weights(c, seed=1), c)
PY
timeout 60 python3 -m models.export /tmp/r.safetensors /tmp/r --name random-128x4 --version 0 --license CC0-1.0 --thresholds 0.5 --no-weights > /dev/null 2>&1
[ -n "$TORCH" ] && timeout 90 python3 -m models.bench_torch /tmp/r.safetensors --streams $S --steps 60 > $OUT/torch.jsonl 2>&1
timeout 60 $B/mambatag bench --device cuda --model /tmp/r --streams 1,1024,16384 --steps 400 > $OUT/bench_cuda_random.txt 2>&1
timeout 70 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,1024,16384 --steps 600 > $OUT/bench_cuda_graph.txt 2>&1
ls -la $OUT
