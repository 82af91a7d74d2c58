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
  python3 - /tmp/$name.csv > $OUT/ncu_$name.txt <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; rows = rows[1:]
ki, vi, ui = hdr.index("Kernel Name"), hdr.index("Metric Value"), hdr.index("Metric Unit")
gi = hdr.index("Grid Size") if "Grid Size" in hdr else None
bi = hdr.index("Block Size") if "Block Size" in hdr else None
tot = collections.defaultdict(float); cnt = collections.Counter()
for r in rows:
    v = float(r[vi].replace(",", "")); v = v / 1000 if r[ui] == "nsecond" else (v if r[ui] == "usecond" else v * 1000)
    k = (r[ki][:90], r[gi] if gi is not None else "", r[bi] if bi is not None else "")
    tot[k] += v; cnt[k] += 1
allt = sum(tot.values())
print(f"{len(rows)} launches, {allt:.1f} us total")
for k, v in sorted(tot.items(), key=lambda kv: -kv[1])[:40]:
    print(f"{v / cnt[k]:10.2f} us x {cnt[k]:4d}  {100 * v / allt:5.1f} %  grid {k[1]} block {k[2]}  {k[0]}")
PY
}
case " ${WHICH:-tf32 fp32} " in *" tf32 "*) prof tf32 --tf32 --chunk-streams 4096 --chunk-frames 1000;; esac
case " ${WHICH:-tf32 fp32} " in *" fp32 "*) prof fp32 --chunk-streams 4096 --chunk-frames 250;; esac
tail -n 45 $OUT/*.txt; tail -n 3 /tmp/*.err
