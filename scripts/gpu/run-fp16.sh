#!/usr/bin/env bash
# One device call (#5, after run-ptxab.sh in the same command; mambatag only): the fp16-weights
# trial (scripts/gpu/fp16-weights.py: the fused step and chunk graphs with float16 MatMul
# weights and inputs, float32 state) against the shipped float32 graphs, same binary and call:
# step latency with CUDA graphs at 1 / 1,024 / 10,240 streams, the chunk graph at 4,096 x 1,000,
# and the per-frame score parity of both against the CPU standard graphs. Then the PyTorch eager
# loop at 1-64 streams, on random weights of the default model's shape (speed does not depend on
# their values; the safetensors stay home for the upload limit).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
python3 scripts/gpu/fp16-weights.py $M /tmp/m16 > $OUT/fp16.txt 2>&1
for m in $M /tmp/m16; do
  echo "== $m" >> $OUT/fp16.txt
  timeout 90 $B/mambatag bench --device cuda --cuda-graph --kernels fused --model $m --streams 1,1024,10240 --steps 1000 >> $OUT/fp16.txt 2>&1
  timeout 60 $B/mambatag bench --device cuda --kernels fused --model $m --streams 1 --steps 100 --chunk-streams 4096 --chunk-frames 1000 >> $OUT/fp16.txt 2>&1
done
$B/mambatag tag demo/demo.flac --frames --kernels onnx > /tmp/cpu.jsonl
for e in step chunk; do
  $B/mambatag tag demo/demo.flac --frames --device cuda --kernels fused --engine $e --model /tmp/m16 > /tmp/f16_$e.jsonl
  python3 scripts/gpu/cli-parity.py /tmp/cpu.jsonl /tmp/f16_$e.jsonl >> $OUT/fp16.txt 2>&1
done
python3 -c "from models.weights import MambaConfig, init_weights, save_weights as s; c = MambaConfig(128, 4, labels=[f'c{i}' for i in range(8)]); s('/tmp/rand.safetensors', init_weights(c, seed=1), c)" &&
  timeout 100 python3 -m models.bench_torch /tmp/rand.safetensors --streams 1,16,64 --steps 200 > $OUT/torch.jsonl 2>&1
cat $OUT/fp16.txt $OUT/torch.jsonl
