#!/usr/bin/env bash
# One device call (mambatag + gputest + .gpubin/ptx/NAME.ptx.xz: kernel variants, each built with
# `scripts/build-ptx.py [--src VARIANT.cu] [-D NAME] --out .gpubin/ptx/NAME.ptx` and xz'd; move
# models/weights/*.safetensors out of the tree if the upload limit needs it): the chunk graph
# (4,096 x 1,000, TF32 and FP32) and the large-batch step sweep with each PTX variant (MAMBATAG_PTX), then the
# GPU tests, CLI parity and throughput of the embedded kernels (AB_ONLY=1: the variants only).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
ab_summary() { for f in $OUT/ab_*.txt; do echo "== $f"; grep "chunk graph\|^ *1024 \|^ *10240 " $f; done; }
for v in default $(ls .gpubin/ptx 2>/dev/null | sed 's/\.ptx\.xz$//'); do
  unset MAMBATAG_PTX
  if [ $v != default ]; then unxz_to .gpubin/ptx/$v.ptx.xz /tmp/$v.ptx; export MAMBATAG_PTX=/tmp/$v.ptx; fi
  timeout 60 $B/mambatag bench --device cuda --tf32 --model $M --streams 1 --steps 200 --chunk-streams 4096 --chunk-frames 1000 > $OUT/ab_$v.txt 2>&1
  timeout 60 $B/mambatag bench --device cuda --model $M --streams 1 --steps 200 --chunk-streams 4096 --chunk-frames 1000 >> $OUT/ab_$v.txt 2>&1
  timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1024,10240 --steps 1000 >> $OUT/ab_$v.txt 2>&1
done
unset MAMBATAG_PTX
[ "${AB_ONLY:-0}" = 1 ] && { ab_summary; exit 0; }
gpu_tests layer fused
cli_parity "step_auto:--engine step --cuda-graph" "step_fused:--engine step --kernels fused" "chunk:" "chunk_tf32:--tf32"
chunk_benches
ab_summary
tail -n 12 $OUT/gpu_tests_*.txt $OUT/cli_parity.txt $OUT/chunk_*.txt
