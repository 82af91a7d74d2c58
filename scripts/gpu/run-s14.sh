#!/usr/bin/env bash
# Session 14's first call: run-final13.sh (GPU tests on both step graphs, CLI parity, FP32 chunk
# graph, one-round A/B of the log-mel row split), run-projab.sh (the projections' loads), then
# Nsight Compute at 256 streams: GPU time per launch (-> ncu_256.txt) and, for one step's
# log-mel, in_proj, mix and out_proj launches, the speed-of-light, occupancy, scheduler and
# warp-state sections (appended to the same file).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
bash scripts/gpu/run-final13.sh
bash scripts/gpu/run-projab.sh
NCU=/usr/local/cuda/bin/ncu
timeout 150 $NCU --clock-control none --metrics gpu__time_duration.sum --csv --launch-skip 1150 --launch-count 300 \
  $B/mambatag bench --device cuda --model $M --steps 30 --min-steps 30 --streams 256 > /tmp/256.csv 2>/tmp/256.err
python3 scripts/gpu/ncu-summary.py /tmp/256.csv --grid > $OUT/ncu_256.txt
timeout 200 $NCU --clock-control none -k regex:'layer_in8|layer_out8|layer_mixh1|mamba_logmel_step' \
  --launch-skip 200 --launch-count 13 --section SpeedOfLight --section Occupancy --section LaunchStats \
  --section SchedulerStats --section WarpStateStats --section MemoryWorkloadAnalysis \
  $B/mambatag bench --device cuda --model $M --steps 30 --min-steps 30 --streams 256 >> $OUT/ncu_256.txt 2>&1
tail -n 5 /tmp/256.err
