#!/usr/bin/env bash
# Session 13's A/B call: (1) the radix-2^3 FFT passes (the binary's PTX) against the radix-2 stages
# (.gpubin/ptx/fft2.ptx.xz via MAMBATAG_PTX): same bits (CLI --frames output compared byte for byte),
# the GPU tests, and the FP32 chunk graph and batch-1 step alternating over three rounds
# -> $OUT/fft.txt; (2) run-mid.sh's per-kernel profile and layer-graph switch sweep (AB=...).
# fft2.ptx was kernels.cu with the FFT loop of 118f11f (scripts/build-ptx.py --src VARIANT.cu).
# The AB switches it timed (MAMBATAG_LAYER_P1_MAX, _M1_MAX, _MIXH_MAX, _FAST_MAX) were in that
# call's binary only; 6a5644e kept layer_mixh1 (MAMBATAG_LAYER_MIXH=0 turns it off).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/gpu.txt
unxz_to .gpubin/ptx/fft2.ptx.xz /tmp/fft2.ptx
$B/mambatag tag demo/demo.flac --frames --device cuda --engine step > /tmp/a.jsonl 2>/tmp/a.err
MAMBATAG_PTX=/tmp/fft2.ptx $B/mambatag tag demo/demo.flac --frames --device cuda --engine step > /tmp/b.jsonl 2>/tmp/b.err
$B/mambatag tag demo/demo.flac --frames --device cuda > /tmp/c.jsonl 2>>/tmp/a.err
MAMBATAG_PTX=/tmp/fft2.ptx $B/mambatag tag demo/demo.flac --frames --device cuda > /tmp/d.jsonl 2>>/tmp/b.err
{ echo "step frames: $(wc -l < /tmp/a.jsonl) lines; cmp: $(cmp /tmp/a.jsonl /tmp/b.jsonl && echo identical)";
  echo "chunk frames: $(wc -l < /tmp/c.jsonl) lines; cmp: $(cmp /tmp/c.jsonl /tmp/d.jsonl && echo identical)"; } > $OUT/fft.txt 2>&1
if [ -z "$NO_TESTS" ]; then
for k in layer fused; do
  MAMBATAG_GPU_MODEL=$M MAMBATAG_GPU_CUDA_GRAPH=1 MAMBATAG_GPU_KERNELS=$k \
    timeout 150 $B/gputest --ignored --nocapture --test-threads 1 2>&1 | grep -E "test result|max|passed|FAILED|panicked" | head -20 >> $OUT/fft.txt
done
echo "== layer tests with layer_mixh1 for every batch past the fast path" >> $OUT/fft.txt
MAMBATAG_LAYER_MIXH_MAX=65535 MAMBATAG_GPU_MODEL=$M MAMBATAG_GPU_CUDA_GRAPH=1 MAMBATAG_GPU_KERNELS=layer \
  timeout 150 $B/gputest --ignored --nocapture --test-threads 1 2>&1 | grep -E "test result|max|passed|FAILED|panicked" | head -20 >> $OUT/fft.txt
fi
for r in 1 2 3; do
  for v in default fft2; do
    if [ $v = fft2 ]; then export MAMBATAG_PTX=/tmp/fft2.ptx; else unset MAMBATAG_PTX; fi
    echo "== round $r $v: $(timeout 60 $B/mambatag bench --device cuda --model $M --streams 1 --steps 200 --chunk-streams 4096 --chunk-frames 250 2>&1 | grep -E 'chunk graph|^ +1 ' | tr -s ' ' | tr '\n' ' ')" >> $OUT/fft.txt
    echo "   step: $(timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1 --steps 3000 2>&1 | grep -E '^ +1 ' | tr -s ' ')" >> $OUT/fft.txt
  done
done
unset MAMBATAG_PTX
NCU=/usr/local/cuda/bin/ncu
for v in default fft2; do
  if [ $v = fft2 ]; then export MAMBATAG_PTX=/tmp/fft2.ptx; else unset MAMBATAG_PTX; fi
  timeout 90 $NCU --clock-control none -k regex:mamba_logmel -c 60 --metrics gpu__time_duration.sum --csv \
    $B/mambatag bench --device cuda --model $M --streams 1 --steps 30 --min-steps 30 --chunk-streams 4096 --chunk-frames 250 > /tmp/n_$v.csv 2>/tmp/n_$v.err
  echo "== ncu $v" >> $OUT/fft.txt; python3 scripts/gpu/ncu-summary.py /tmp/n_$v.csv --grid >> $OUT/fft.txt 2>&1
done
unset MAMBATAG_PTX
cat $OUT/fft.txt
bash scripts/gpu/run-mid.sh
