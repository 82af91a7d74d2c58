#!/usr/bin/env bash
# GPU time per kernel of the chunk graph (issue #6), measured with Nsight Compute
# (gpu__time_duration per launch, --clock-control none), grouped by kernel and grid
# -> $OUT/ncu_NAME.txt (NAME in $WHICH, default "tf32 fp32"). ORT's own profile times the host side only (launches), so it cannot say.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
NCU=/usr/local/cuda/bin/ncu
prof() {  # prof NAME ARGS...
  local name=$1; shift
  timeout 200 $NCU --clock-control none --metrics gpu__time_duration.sum --csv \
    $B/mambatag bench --device cuda --model $M --streams 1 --steps 5 --min-steps 5 "$@" > /tmp/$name.csv 2>/tmp/$name.err
  python3 scripts/gpu/ncu-summary.py /tmp/$name.csv --grid > $OUT/ncu_$name.txt
}
case " ${WHICH:-tf32 fp32} " in *" tf32 "*) prof tf32 --tf32 --chunk-streams 4096 --chunk-frames 1000;; esac
case " ${WHICH:-tf32 fp32} " in *" fp32 "*) prof fp32 --chunk-streams 4096 --chunk-frames 250;; esac
tail -n 45 $OUT/*.txt; tail -n 3 /tmp/*.err
