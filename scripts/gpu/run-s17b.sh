#!/usr/bin/env bash
# Session 17's second call (#6 on an H200): the FP32 chunk graph, model only, at 4,096 and 8,192
# lanes x 250 frames with the 4-pair log-mel kernel (the binary's PTX) against main's previous
# PTX (.gpubin/ptx/old.ptx.xz through MAMBATAG_PTX), alternating over ROUNDS (default 3)
# -> chunk_ab.txt; then the step at 1, 4,096, 10,240 streams (the fused graph's one-hop log-mel
# changed), and the layer graph at 128-512 streams with the 8-row projections at 3 blocks per SM
# (.gpubin/ptx/pb3.ptx.xz, `-D PROJ_MIN_BLOCKS=3`: 80 registers instead of 96 / 87) -> step_ab.txt
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
for r in $(seq ${ROUNDS:-3}); do
  for v in new old; do
    use_ptx $v
    echo "round $r: $v" >> $OUT/chunk_ab.txt
    timeout 60 $B/mambatag bench --device cuda --model $M --streams 1 --steps 400 --chunk-streams 4096,8192 2>&1 | grep -E "chunk" >> $OUT/chunk_ab.txt
    { echo "round $r: $v"; step_rows --streams 1,4096,10240; } >> $OUT/step_ab.txt
  done
  for v in new pb3; do
    use_ptx $v
    { echo "round $r: $v"; step_rows --streams 128,256,384,512; } >> $OUT/step_ab.txt
  done
done
use_ptx new
cat $OUT/gpu.txt $OUT/chunk_ab.txt $OUT/step_ab.txt
