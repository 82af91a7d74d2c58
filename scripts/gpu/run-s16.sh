#!/usr/bin/env bash
# Session 16's call (#5/#6): `layer_mixh2` (layer_mixh1's code at 2 blocks per SM) for the layer
# graph's batches above the SM count. GPU tests on both step graphs (the slot-joining test now
# also at 256 rows and the growth test through 256 rows, where layer_mixh2 runs; the layer graph
# once more with layer_mixh2 at any batch), CLI parity, then
# two rounds alternating: the step sweep with the new rule against `MAMBATAG_LAYER_MIXH=1`
# (layer_mixh1 only: main before it) -> ab.txt; the layer graph past LAYER_MAX_BATCH with both
# mixh kernels' bound lifted (`MAMBATAG_LAYER_MIXH_MAX`) against its layer_mix4 and the fused
# graph; the PyTorch eager loop at the same N on random weights (-> torch.jsonl); FP32 chunk
# throughput on the card that came (-> chunk.txt); Nsight Compute per launch at 256 and 512
# streams (-> ncu.txt). Carry .gpu and .gpubin (mambatag, gputest); no safetensors needed.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
gpu_tests layer fused
# the layer graph with layer_mixh2 at any batch (the growth test's 1,024 rows run it): appended
{ echo "== MAMBATAG_LAYER_MIXH_MAX=65535"; MAMBATAG_LAYER_MIXH_MAX=65535 MAMBATAG_GPU_MODEL=$M MAMBATAG_GPU_CUDA_GRAPH=1 \
  MAMBATAG_GPU_KERNELS=layer timeout 150 $B/gputest --ignored --nocapture --test-threads 1; } >> $OUT/gpu_tests_layer.txt 2>&1
cli_parity "step_auto:--engine step --cuda-graph" "step_fused:--engine step --kernels fused" "chunk:"
S=1,16,64,128,192,256,384,512,1024,4096,10240
for r in 1 2; do
  { echo "round $r: default (mixh1 <= SMs < mixh2 <= 4 SMs)"; step_rows --streams $S
    echo "round $r: MAMBATAG_LAYER_MIXH=1 (mixh1 only, main before)"; MAMBATAG_LAYER_MIXH=1 step_rows --streams 128,192,256,384,512
    echo "round $r: --kernels layer, default (mix4 above 4 SMs)"; step_rows --kernels layer --streams 1024,2048,4096
    echo "round $r: --kernels layer, MAMBATAG_LAYER_MIXH_MAX=65535 (mixh2 at any batch)"; MAMBATAG_LAYER_MIXH_MAX=65535 step_rows --kernels layer --streams 1024,2048,4096
    echo "round $r: --kernels fused"; step_rows --kernels fused --streams 1024,2048,4096
  } >> $OUT/ab.txt
done
torch_loop $S
{ timeout 90 $B/mambatag bench --device cuda --model $M --streams 1 --steps 100 --chunk-streams 4096,8192; } > $OUT/chunk.txt 2>&1
ncu_launches 256 512
tail -n 6 $OUT/gpu_tests_*.txt; cat $OUT/cli_parity.txt $OUT/ab.txt $OUT/chunk.txt $OUT/torch.jsonl
