#!/usr/bin/env bash
# Session 13's A/B in the release-check call -> $OUT/ab.txt: the FP32 chunk graph (4,096 x 250,
# model only) with the binary's kernels against .gpubin/ptx/fft2.ptx.xz (the previous log-mel
# kernels), and the layer step at 64-512 streams with and without layer_mixh1
# (MAMBATAG_LAYER_MIXH=0), two rounds alternating.
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
unxz_to .gpubin/ptx/fft2.ptx.xz /tmp/fft2.ptx
for r in 1 2; do
  for v in now fft2; do
    if [ $v = fft2 ]; then export MAMBATAG_PTX=/tmp/fft2.ptx; else unset MAMBATAG_PTX; fi
    echo "round $r $v: $(timeout 60 $B/mambatag bench --device cuda --model $M --streams 1 --steps 200 --chunk-streams 4096 --chunk-frames 250 2>&1 | grep -o 'session run alone.*')" >> $OUT/ab.txt
  done
  unset MAMBATAG_PTX
  for v in 1 0; do
    echo "round $r MAMBATAG_LAYER_MIXH=$v" >> $OUT/ab.txt
    MAMBATAG_LAYER_MIXH=$v timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 64,128,256,512 --steps 1000 --min-steps 1000 2>&1 | sed -n '3,9p' >> $OUT/ab.txt
  done
done
cat $OUT/ab.txt
