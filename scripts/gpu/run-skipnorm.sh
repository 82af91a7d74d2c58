#!/usr/bin/env bash
# #6 chunk graph A/B, one device call: the package's chunk-fused.onnx against a variant at
# scripts/gpu/ab/chunk-fused-skip.onnx (e.g. the residual adds fused into the next RMSNorm with
# ONNX Runtime's SkipSimplifiedLayerNormalization), same binary, alternating over three rounds:
# FP32 4,096 x 250 and TF32 4,096 x 1,000 model-only throughput, and per-frame CLI parity of
# each against the CPU standard graphs -> $OUT/skip.txt
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
P=/tmp/mskip; rm -rf $P; mkdir -p $P; cp $M/* $P/
cp scripts/gpu/ab/chunk-fused-skip.onnx $P/chunk-fused.onnx
for r in 1 2 3; do
  for v in base skip; do
    MM=$M; [ $v = skip ] && MM=$P
    echo "== $v round $r" >> $OUT/skip.txt
    timeout 60 $B/mambatag bench --device cuda --model $MM --streams 1 --steps 10 --chunk-streams 4096 --chunk-frames 250 2>&1 | grep "chunk graph" >> $OUT/skip.txt
    timeout 60 $B/mambatag bench --device cuda --tf32 --model $MM --streams 1 --steps 10 --chunk-streams 4096 --chunk-frames 1000 2>&1 | grep "chunk graph" >> $OUT/skip.txt
  done
done
$B/mambatag tag demo/demo.flac --frames --kernels onnx > /tmp/cpu.jsonl
for v in base skip; do
  MM=$M; [ $v = skip ] && MM=$P
  $B/mambatag tag demo/demo.flac --frames --device cuda --model $MM > /tmp/g_$v.jsonl
  echo "== parity $v: $(python3 scripts/gpu/cli-parity.py /tmp/cpu.jsonl /tmp/g_$v.jsonl)" >> $OUT/skip.txt
done
cat $OUT/skip.txt
# H200 extras (EXTRA=1): the longer FP32 chunk of the H200 figure for both, the step sweep and the
# PyTorch loop at small N -> $OUT/extra.txt, $OUT/torch.jsonl
if [ "${EXTRA:-0}" = 1 ]; then
  for v in base skip; do
    MM=$M; [ $v = skip ] && MM=$P
    echo "== $v FP32 T=500" >> $OUT/extra.txt
    timeout 90 $B/mambatag bench --device cuda --model $MM --streams 1 --steps 10 --chunk-streams 4096,8192 --chunk-frames 500 2>&1 | grep "chunk graph" >> $OUT/extra.txt
  done
  timeout 150 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,64,256,1024,4096,10240,16384 --steps 2000 --min-steps 2000 >> $OUT/extra.txt 2>&1
  python3 -c "from models.weights import MambaConfig, init_weights, save_weights as s; c = MambaConfig(128, 4, labels=[f'c{i}' for i in range(8)]); s('/tmp/rand.safetensors', init_weights(c, seed=1), c)" &&
    timeout 120 python3 -m models.bench_torch /tmp/rand.safetensors --streams 1,16,64,256,1024,4096,10240,16384 --steps 60 > $OUT/torch.jsonl 2>&1
  cat $OUT/extra.txt $OUT/torch.jsonl
fi
