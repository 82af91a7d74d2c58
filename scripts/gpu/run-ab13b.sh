#!/usr/bin/env bash
# Session 13: how mamba_logmel_step / mamba_logmel (one hop) split rows over blocks -> $OUT/ab.txt.
# The binary's split (band groups for about 2 blocks per SM below one row per SM, then up to 8
# rows per block) against the previous one forced by MAMBATAG_LOGMEL_G / _RB (8 groups below
# one row per SM, one row per block above), two rounds alternating, step p50 with CUDA graphs.
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
for r in $(seq ${ROUNDS:-2}); do
  echo "round $r now" >> $OUT/ab.txt
  timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,33,34,64,128,256,512,1024,4096,10240 --steps 1000 --min-steps 1000 2>&1 | sed -n "3,15p" >> $OUT/ab.txt
  echo "round $r before (G=8 RB=1 at 64-128, G=1 RB=1 at 256-4096)" >> $OUT/ab.txt
  MAMBATAG_LOGMEL_G=8 MAMBATAG_LOGMEL_RB=1 timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 64,128 --steps 1000 --min-steps 1000 2>&1 | sed -n '5,6p' >> $OUT/ab.txt
  MAMBATAG_LOGMEL_G=1 MAMBATAG_LOGMEL_RB=1 timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 256,512,1024,4096 --steps 1000 --min-steps 1000 2>&1 | sed -n '5,8p' >> $OUT/ab.txt
done
cat $OUT/ab.txt
