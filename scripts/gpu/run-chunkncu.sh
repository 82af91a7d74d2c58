#!/usr/bin/env bash
# GPU time per kernel of the chunk graph (issue #6), measured with Nsight Compute
# (gpu__time_duration per launch, --clock-control none), grouped by kernel and grid
# -> $OUT/ncu_NAME.txt (NAME in $WHICH, default "tf32 fp32"). ORT's own profile times the host side only (launches), so it cannot say.
# WHICH=b1: the same for the batch-1 step (layer graph, what `auto` runs for one stream; #5's
# latency), 20 steps with warm caches and free clocks, so the times are the real ones per kernel.
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
case " ${WHICH:-tf32 fp32} " in *" b1 "*)
  timeout 120 $NCU --clock-control none --metrics gpu__time_duration.sum --csv \
    $B/mambatag bench --device cuda --model $M --streams 1 --steps 20 --min-steps 20 > /tmp/b1.csv 2>/tmp/b1.err
  python3 scripts/gpu/ncu-summary.py /tmp/b1.csv --grid > $OUT/ncu_b1.txt;;
esac
tail -n 45 $OUT/*.txt; tail -n 3 /tmp/*.err
