#!/usr/bin/env bash
# One device call (mambatag only): GPU time of every kernel of a step, measured with Nsight
# Compute (ncu: gpu__time_duration per launch; CUDA graphs off so that each node is a launch),
# for the layer and the fused step graphs at 1 stream, and the layer graph at 4,096 streams.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
NCU=/usr/local/cuda/bin/ncu
prof() {  # prof NAME ARGS...
  local name=$1; shift
  timeout 150 $NCU --metrics gpu__time_duration.sum --csv --launch-skip ${SKIP:-300} --launch-count ${COUNT:-60} \
    $B/mambatag bench --device cuda --model $M --steps 30 "$@" > /tmp/$name.csv 2>/tmp/$name.err
  python3 - /tmp/$name.csv > $OUT/$name.txt <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; rows = rows[1:]
ki, vi, ui = hdr.index("Kernel Name"), hdr.index("Metric Value"), hdr.index("Metric Unit")
tot = collections.defaultdict(float); cnt = collections.Counter()
for r in rows:
    v = float(r[vi].replace(",", "")); v = v / 1000 if r[ui] == "nsecond" else (v if r[ui] == "usecond" else v * 1000)
    tot[r[ki][:70]] += v; cnt[r[ki][:70]] += 1
allt = sum(tot.values())
print(f"{len(rows)} launches, {allt:.1f} us total")
for k, v in sorted(tot.items(), key=lambda kv: -kv[1]):
    print(f"{v / cnt[k]:8.2f} us x {cnt[k]:3d}  {k}")
PY
}
prof layer_b1 --streams 1
prof fused_b1 --kernels fused --streams 1
COUNT=40 prof layer_b4096 --streams 4096
prof fused_b4096 --kernels fused --streams 4096
tail -n 40 $OUT/*.txt; tail -n 5 /tmp/*.err
