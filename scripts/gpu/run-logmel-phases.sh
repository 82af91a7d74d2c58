#!/usr/bin/env bash
# Where the log-mel kernel's time goes (#6, #5), one device call: the same binary with PTX
# variants of kernels.cu that each leave one phase out (wrong scores, timing only), built with
# `scripts/build-ptx.py --src VARIANT.cu --out .gpubin/ptx/NAME.ptx` and xz'd: Nsight Compute GPU
# time of mamba_logmel (chunk graph, 4,096 x 250) and mamba_logmel_step (batch-1 step) per
# variant, and the chunk graph's FP32 throughput -> $OUT/lm.txt
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
NCU=/usr/local/cuda/bin/ncu
for v in default $(ls .gpubin/ptx 2>/dev/null | sed 's/\.ptx\.xz$//'); do
  unset MAMBATAG_PTX
  if [ $v != default ]; then unxz_to .gpubin/ptx/$v.ptx.xz /tmp/$v.ptx; export MAMBATAG_PTX=/tmp/$v.ptx; fi
  echo "== $v" >> $OUT/lm.txt
  timeout 90 $NCU --clock-control none --cache-control none -k regex:mamba_logmel -c 60 --metrics gpu__time_duration.sum --csv \
    $B/mambatag bench --device cuda --model $M --streams 1 --steps 30 --min-steps 30 --chunk-streams 4096 --chunk-frames 250 > /tmp/n_$v.csv 2>/tmp/n_$v.err
  python3 scripts/gpu/ncu-summary.py /tmp/n_$v.csv --grid >> $OUT/lm.txt 2>&1
  timeout 60 $B/mambatag bench --device cuda --model $M --streams 1 --steps 200 --chunk-streams 4096 --chunk-frames 250 2>&1 | grep "chunk graph" >> $OUT/lm.txt
done
unset MAMBATAG_PTX
cat $OUT/lm.txt; tail -n 3 /tmp/n_*.err
