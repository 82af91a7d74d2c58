#!/usr/bin/env bash
# Session 15's call: the log-mel kernels read their bands' filterbank weights from a band table
# made on the host (cuda.rs `DeviceBands`) instead of scanning all 257 x M weights for nonzeros
# in every block. GPU tests on both step graphs, CLI parity, then an A/B against main's log-mel
# (a measurement build's MAMBATAG_LOGMEL_DENSE=1 passes the dense filterbank to main's PTX,
# carried as .gpubin/main.ptx.xz), two rounds alternating; the chunk graph both ways; Nsight
# Compute GPU time per launch at 128 and 256 streams; the PyTorch eager loop at the same N when
# models/weights/*.safetensors is in the tree.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
gpu_tests layer fused
cli_parity "step_auto:--engine step --cuda-graph" "step_fused:--engine step --kernels fused" "chunk:"
unxz_to .gpubin/main.ptx.xz $B/main.ptx
S=${S:-1,16,64,128,256,512,1024,4096,10240}
bench() { timeout 90 $B/mambatag bench --device cuda --cuda-graph --model $M --streams $S --steps 1000 --min-steps 1000 2>&1 | grep -v '^\s*$'; }
for r in 1 2; do
  { echo "round $r: band table"; bench; } >> $OUT/ab.txt
  { echo "round $r: dense filterbank (main)"; MAMBATAG_LOGMEL_DENSE=1 MAMBATAG_PTX=$B/main.ptx bench; } >> $OUT/ab.txt
done
chunk() { timeout 60 $B/mambatag bench --device cuda --model $M --streams 1 --steps 200 --chunk-streams 1024,4096 2>&1 | grep -v '^\s*$'; }
{ echo "band table"; chunk; echo "dense (main)"; MAMBATAG_LOGMEL_DENSE=1 MAMBATAG_PTX=$B/main.ptx chunk; echo "band table again"; chunk; } > $OUT/chunk.txt
NCU=/usr/local/cuda/bin/ncu
for n in 128 256; do
  timeout 120 $NCU --clock-control none --metrics gpu__time_duration.sum --csv --launch-skip 1150 --launch-count 300 \
    $B/mambatag bench --device cuda --model $M --steps 30 --min-steps 30 --streams $n > /tmp/$n.csv 2>/tmp/$n.err
  { echo "== $n streams"; python3 scripts/gpu/ncu-summary.py /tmp/$n.csv --grid; } >> $OUT/ncu.txt
done
W=models/weights/mambatag-default-1.6.0.safetensors
[ -f $W ] && timeout 150 python3 -m models.bench_torch $W --streams $S --steps 60 > $OUT/torch.jsonl 2>&1
tail -n 40 $OUT/*.txt
