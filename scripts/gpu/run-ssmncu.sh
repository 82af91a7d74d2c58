#!/usr/bin/env bash
# Why the selective scan takes the time it does (issues #5, #6): Nsight Compute's launch,
# occupancy, warp-state (stall reasons) and scheduler sections for one `mamba_ssm*` launch of the
# chunk graph (1,024 streams x 1,000 hops) and one of the fused step graph (T = 1, 10,240
# streams) -> $OUT/ssm_chunk.txt, $OUT/ssm_step.txt. mambatag only.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
NCU=/usr/local/cuda/bin/ncu
S="--section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats --section SpeedOfLight"
timeout 120 $NCU -k regex:mamba_ssm -s 4 -c 1 $S $B/mambatag bench --device cuda --model $M --streams 1 --steps 5 --min-steps 5 --chunk-streams 1024 --chunk-frames 1000 > $OUT/ssm_chunk.txt 2>&1
timeout 120 $NCU -k regex:mamba_ssm -s 40 -c 1 $S $B/mambatag bench --device cuda --kernels fused --model $M --streams 10240 --steps 20 --min-steps 20 > $OUT/ssm_step.txt 2>&1
grep -E "mamba_ssm|Registers Per|Achieved Occupancy|Theoretical Occupancy|Block Limit|Warp Cycles Per Issued|Issued Warp|No Eligible|Duration|Compute \(SM\) Throughput|Memory Throughput|Dynamic Shared|Stall|stall" $OUT/ssm_chunk.txt $OUT/ssm_step.txt | cut -c1-200
