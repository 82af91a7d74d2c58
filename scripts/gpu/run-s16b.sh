#!/usr/bin/env bash
# Session 16's second call (#5/#6): 16-row projections (`layer_in16` / `layer_out16`, asked for
# with MAMBATAG_LAYER_ROWS16=N: 16 rows per block above N rows; off by default) against the
# 8-row ones at 192-512 streams and on the layer graph at 1,024-2,048 (against the fused graph
# too), two rounds alternating (-> ab.txt). First the layer graph's GPU tests with 16-row
# projections from 129 rows (the slot-joining test's 256-row batch and the growth test's 256
# and 1,024 rows run them), and by default. #6: FP32 chunk graph at 4,096-16,384 lanes x 250
# and 500 frames on whatever card came (-> chunk.txt). The PyTorch loop at the same N on random
# weights (-> torch.jsonl). Nsight Compute's occupancy, scheduler and warp-state sections of
# layer_mixh2 and layer_in8 at 512 streams (-> ncu_512.txt). Carry .gpu and .gpubin (mambatag,
# gputest).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
for v in 128 none; do
  { echo "== MAMBATAG_LAYER_ROWS16=$v"; [ $v = none ] && unset MAMBATAG_LAYER_ROWS16 || export MAMBATAG_LAYER_ROWS16=$v
    MAMBATAG_GPU_MODEL=$M MAMBATAG_GPU_CUDA_GRAPH=1 MAMBATAG_GPU_KERNELS=layer timeout 150 $B/gputest --ignored --nocapture --test-threads 1; } >> $OUT/gpu_tests_layer.txt 2>&1
done
unset MAMBATAG_LAYER_ROWS16
for r in $(seq ${ROUNDS:-2}); do
  { echo "round $r: default (8-row projections)"; step_rows --streams 1,128,192,256,384,512,1024,4096,10240
    echo "round $r: MAMBATAG_LAYER_ROWS16=132"; MAMBATAG_LAYER_ROWS16=132 step_rows --streams 192,256,384,512
    echo "round $r: MAMBATAG_LAYER_ROWS16=264"; MAMBATAG_LAYER_ROWS16=264 step_rows --streams 384,512
    echo "round $r: --kernels layer, default"; step_rows --kernels layer --streams 1024,2048
    echo "round $r: --kernels layer, MAMBATAG_LAYER_ROWS16=264"; MAMBATAG_LAYER_ROWS16=264 step_rows --kernels layer --streams 1024,2048
    echo "round $r: --kernels fused"; step_rows --kernels fused --streams 1024,2048
  } >> $OUT/ab.txt
done
{ timeout 100 $B/mambatag bench --device cuda --model $M --streams 1 --steps 100 --chunk-streams 4096,8192,16384
  timeout 100 $B/mambatag bench --device cuda --model $M --streams 1 --steps 100 --chunk-streams 8192,16384 --chunk-frames 500; } 2>&1 | grep -E "chunk|model" > $OUT/chunk.txt
torch_loop 1,128,192,256,384,512,1024,4096,10240
# where a 512-stream step's mix and in_proj wait (Nsight Compute sections of one step's
# layer_mixh2 / layer_in8 launches; NO_NCU=1 leaves it out) -> ncu_512.txt
[ -n "${NO_NCU:-}" ] || timeout 150 /usr/local/cuda/bin/ncu --clock-control none -k regex:'layer_in8|layer_mixh2' \
  --launch-skip 200 --launch-count 8 --section SpeedOfLight --section Occupancy --section LaunchStats \
  --section SchedulerStats --section WarpStateStats --section MemoryWorkloadAnalysis \
  $B/mambatag bench --device cuda --model $M --steps 30 --min-steps 30 --streams 512 > $OUT/ncu_512.txt 2>&1
grep -E "^==|test result|difference" $OUT/gpu_tests_layer.txt; cat $OUT/ab.txt $OUT/chunk.txt $OUT/torch.jsonl
