#!/usr/bin/env bash
# Session 15's second call: re-time the split choices now that the log-mel set-up is cheap (the
# band table) -> $OUT/ab.txt, two rounds alternating, step p50 with CUDA graphs:
#   log-mel band groups below one row per SM (MAMBATAG_LOGMEL_G=1, 2, 8 vs the default) and rows
#   per block from 2 rows per SM on (MAMBATAG_LOGMEL_RB=1, 2 vs ceil(b / SMs) <= 8);
#   8-row projections from 33 or 65 rows (MAMBATAG_LAYER_ROWS1=32, 64) vs one row per block up
#   to the SM count.
# First the GPU tests (both step graphs) with two PTX variants: layer_mixh1 at 2 blocks per SM
# (mixh2.ptx) and the log-mel reading its weights from global memory (melw0.ptx); the FP32 chunk
# graph at 4,096 and 8,192 lanes (-> chunk.txt). Last, Nsight Compute: the FP32 chunk graph's
# GPU time per kernel (-> ncu_chunk.txt; NO_NCU=1 leaves it out).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
# layer_mixh1 with __launch_bounds__(256, 2) (128 registers, 2 blocks per SM; a copy of kernels.cu
# whose MIXOUT_ENTRY takes the bound as a third argument, 2 for layer_mixh1, built with
# build-ptx.py --src COPY --out mixh2.ptx): the GPU tests on both step graphs with it first
unxz_to .gpubin/mixh2.ptx.xz $B/mixh2.ptx
MAMBATAG_PTX=$B/mixh2.ptx gpu_tests layer fused
# the log-mel kernels with no weights in shared memory (build-ptx.py -D MEL_W=0: every block
# reads its band weights from global memory, as a filterbank too large for MEL_W would)
unxz_to .gpubin/melw0.ptx.xz $B/melw0.ptx
for k in layer fused; do
  MAMBATAG_PTX=$B/melw0.ptx MAMBATAG_GPU_MODEL=$M MAMBATAG_GPU_CUDA_GRAPH=1 MAMBATAG_GPU_KERNELS=$k \
    timeout 150 $B/gputest --ignored --nocapture --test-threads 1 >> $OUT/gpu_tests_melw0.txt 2>&1
done
# #6's offline number on whatever card came (FP32 chunk graph, model only)
timeout 90 $B/mambatag bench --device cuda --model $M --streams 1 --steps 100 --chunk-streams 4096,8192 > $OUT/chunk.txt 2>&1
for r in 1 2; do
  { echo "round $r: default"; step_rows --streams 1,16,34,64,96,128,256,512,1024,4096,10240
    for g in 1 2 8; do echo "round $r: LOGMEL_G=$g"; MAMBATAG_LOGMEL_G=$g step_rows --streams 1,16,64,128; done
    for rb in 1 2; do echo "round $r: LOGMEL_RB=$rb"; MAMBATAG_LOGMEL_RB=$rb step_rows --streams 512,1024,4096,10240; done
    for n in 32 64; do echo "round $r: LAYER_ROWS1=$n"; MAMBATAG_LAYER_ROWS1=$n step_rows --streams 34,64,96,128; done
    echo "round $r: mixh2.ptx"; MAMBATAG_PTX=$B/mixh2.ptx step_rows --streams 34,64,128,256,512
  } >> $OUT/ab.txt
done
NCU=/usr/local/cuda/bin/ncu
[ -n "${NO_NCU:-}" ] || timeout 150 $NCU --clock-control none --metrics gpu__time_duration.sum --csv \
  $B/mambatag bench --device cuda --model $M --streams 1 --steps 5 --min-steps 5 --chunk-streams 4096 --chunk-frames 250 > /tmp/chunk.csv 2>/tmp/chunk.err
[ -n "${NO_NCU:-}" ] || python3 scripts/gpu/ncu-summary.py /tmp/chunk.csv --grid > $OUT/ncu_chunk.txt
tail -n 30 $OUT/ncu_chunk.txt; grep -h 'test result\|max abs' $OUT/gpu_tests_*.txt; grep chunk $OUT/chunk.txt; cat $OUT/ab.txt
