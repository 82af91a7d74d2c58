#!/usr/bin/env bash
# Session 14: the projections' loads (layer_in_rows / layer_out_rows) -> $OUT/proj_ab.txt.
# The binary's kernels (v2: a row's x and norm weights, and the block's rows of y, loaded with
# every load in flight; 32 weight loads in flight for 8-row blocks) against PTX files carried in
# .gpubin/ (xz): v0 (before), v1 (32 weight loads in flight for 1-row blocks too), v3 (16 for both),
# ${ROUNDS:-2} rounds alternating, layer step graph with CUDA graphs, step p50.
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
for r in $(seq ${ROUNDS:-2}); do
  for v in v2 v0_logmelrows v1_un32 v3_un16; do
    echo "round $r $v" >> $OUT/proj_ab.txt
    p=""; [ $v != v2 ] && p=/tmp/$v.ptx && [ ! -f $p ] && unxz_to .gpubin/$v.ptx.xz $p
    env ${p:+MAMBATAG_PTX=$p} timeout 60 $B/mambatag bench --device cuda --cuda-graph --kernels layer --model $M \
      --streams 34,64,128,256,512 --steps 1000 --min-steps 1000 2>&1 | sed -n '3,10p' >> $OUT/proj_ab.txt
  done
done
cat $OUT/proj_ab.txt
