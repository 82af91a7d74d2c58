#!/usr/bin/env bash
# One device call (gputest + mambatag; needs models/weights/*.safetensors moved out of the tree
# for the upload limit): the GPU test suite on the layer, fused and standard graphs, CLI parity,
# the step latency per batch size, and ncu's per-kernel GPU time of a batch-1 layer-graph step.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
gpu_tests ${KS:-layer fused onnx}
cli_parity "step_auto:--engine step --cuda-graph" "chunk:"
timeout 150 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,64,256,1024,4096,10240,16384 --steps 2000 --min-steps 2000 > $OUT/bench_auto.txt 2>&1
timeout 100 /usr/local/cuda/bin/ncu --metrics gpu__time_duration.sum --csv --launch-skip 300 --launch-count 100 \
  $B/mambatag bench --device cuda --model $M --steps 30 --streams 1 > /tmp/ncu.csv 2>/dev/null
python3 - /tmp/ncu.csv > $OUT/ncu_layer_b1.txt <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; rows = rows[1:]
ki, vi, ui = hdr.index("Kernel Name"), hdr.index("Metric Value"), hdr.index("Metric Unit")
scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}
tot = collections.defaultdict(float); cnt = collections.Counter()
for r in rows:
    v = float(r[vi].replace(",", "")) * scale.get(r[ui], float("nan"))
    tot[r[ki][:60]] += v; cnt[r[ki][:60]] += 1
print(f"{len(rows)} launches ({set(r[ui] for r in rows)}), {sum(tot.values()):.1f} us total")
for k, v in sorted(tot.items(), key=lambda kv: -kv[1]):
    print(f"{v / cnt[k]:8.2f} us x {cnt[k]:3d}  {k}")
PY
tail -n 30 $OUT/*.txt
