#!/usr/bin/env bash
# Session 17's call (#6, #5): the log-mel kernel's chunk path with 4 frame pairs per block in
# 3 register passes (kernels.cu `logmel_rows`; before: one radix-2 stage at a time on 256
# threads, 9 barriers per pair). GPU tests on both step graphs; CLI parity; the same scores bit
# for bit as main's previous PTX (.gpubin/ptx/old.ptx.xz, through MAMBATAG_PTX) on the chunk,
# fused-step and layer-step paths (-> bits.txt); then rounds alternating PTX variants: the FP32
# chunk graph at 4,096 and 8,192 lanes x 250 (-> chunk_ab.txt), the step at 1-512 streams (layer
# graph; MambaLogMelStep lost its separate power-spectrum buffer) and the fused graph at
# 1,024-10,240 (its one-hop MambaLogMel now runs the passes, 2 rows per block by default;
# MAMBATAG_LOGMEL_RB=4 fills the 4 pair slots) (-> step_ab.txt); Nsight Compute GPU time of the
# log-mel and conv kernels per variant (-> ncu_lm.txt); Nsight sections of layer_mixh2 / layer_in8 at 512
# streams (#5; NO_NCU=1 leaves them out) (-> ncu_512.txt). Variants in .gpubin/ptx/NAME.ptx.xz:
# old (main before), mb1 (no launch bound: 120 registers, 2 blocks per SM), mb3, and cu4 / cu8
# (mamba_conv's frame loop unrolled 4 / 8 times: `-D CONV_UNROLL=N`, no faster: removed from
# kernels.cu after this ran). ROUNDS (chunk, default 3)
# and STEP_ROUNDS (default 2) shorten it.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
V=$(for f in .gpubin/ptx/*.ptx.xz; do basename $f .ptx.xz; done)
gpu_tests layer fused
cli_parity "step_auto:--engine step --cuda-graph" "step_fused:--engine step --kernels fused" "chunk:"
for v in new old; do
  use_ptx $v
  $B/mambatag tag demo/demo.flac --frames --device cuda > /tmp/bits_chunk_$v.jsonl
  $B/mambatag tag demo/demo.flac --frames --device cuda --engine step --kernels fused > /tmp/bits_fused_$v.jsonl
  $B/mambatag tag demo/demo.flac --frames --device cuda --engine step --kernels layer > /tmp/bits_layer_$v.jsonl
done
use_ptx new
for p in chunk fused layer; do
  cmp /tmp/bits_${p}_new.jsonl /tmp/bits_${p}_old.jsonl && echo "$p: identical ($(wc -l < /tmp/bits_${p}_new.jsonl) lines)" || echo "$p: DIFFERENT"
done > $OUT/bits.txt 2>&1
for r in $(seq ${ROUNDS:-3}); do
  for v in new $V; do
    use_ptx $v
    echo "round $r: $v" >> $OUT/chunk_ab.txt
    timeout 60 $B/mambatag bench --device cuda --model $M --streams 1 --steps 400 --chunk-streams 4096,8192 2>&1 | grep -E "chunk" >> $OUT/chunk_ab.txt
  done
done
use_ptx new
for r in $(seq ${STEP_ROUNDS:-2}); do
  for v in new old; do
    use_ptx $v
    { echo "round $r: $v"; step_rows --streams 1,256,512
      echo "round $r: $v --kernels fused"; step_rows --kernels fused --streams 1024,4096,10240
      [ $v = new ] && { echo "round $r: new --kernels fused MAMBATAG_LOGMEL_RB=4"; MAMBATAG_LOGMEL_RB=4 step_rows --kernels fused --streams 1024,4096,10240; }
    } >> $OUT/step_ab.txt
  done
done
use_ptx new
NCU=/usr/local/cuda/bin/ncu
for v in new old cu4; do
  use_ptx $v
  echo "== $v" >> $OUT/ncu_lm.txt
  timeout 60 $NCU --clock-control none -k regex:'mamba_logmel|mamba_conv' -c 150 --metrics gpu__time_duration.sum --csv \
    $B/mambatag bench --device cuda --model $M --streams 1 --steps 30 --min-steps 30 --chunk-streams 4096 > /tmp/n_$v.csv 2>/tmp/n_$v.err
  python3 scripts/gpu/ncu-summary.py /tmp/n_$v.csv --grid >> $OUT/ncu_lm.txt 2>&1
done
use_ptx new
[ -n "${NO_NCU:-}" ] || timeout 120 $NCU --clock-control none -k regex:'layer_in8|layer_mixh2' \
  --launch-skip 200 --launch-count 8 --section SpeedOfLight --section Occupancy --section LaunchStats \
  --section SchedulerStats --section WarpStateStats --section MemoryWorkloadAnalysis \
  $B/mambatag bench --device cuda --model $M --steps 30 --min-steps 30 --streams 512 > $OUT/ncu_512.txt 2>&1
tail -n 4 $OUT/gpu_tests_*.txt; cat $OUT/cli_parity.txt $OUT/bits.txt $OUT/chunk_ab.txt $OUT/step_ab.txt $OUT/ncu_lm.txt
