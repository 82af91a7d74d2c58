#!/usr/bin/env bash
# #5 batch-1 latency, one device call (mambatag + gputest; models/weights/*.safetensors stays
# home). Needs the layer step graph from before MambaEmbed/MambaHead next to the package:
#   git show 156c193:models/default/step-layer.onnx > scripts/gpu/ab/step-layer-1.6.0-prev.onnx
# Three variants of the layer step graph, alternating over three rounds, one binary:
#   three  MAMBATAG_LAYER_FAST=0 + the previous graph: three launches per layer, ORT's embedding
#          and head (what shipped before)
#   two    the previous graph: two launches per layer (mamba_dense1 + layer_mixout1)
#   ops    the package's graph: two launches per layer and MambaEmbed/MambaHead
# then Nsight Compute per kernel of `ops` and `three` at batch 1 (warm caches, free clocks), the
# PyTorch eager loop at the same N on random weights, tests/gpu.rs (layer + fused) and CLI parity.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
P=/tmp/mprev; rm -rf $P; mkdir -p $P
cp $M/* $P/  # copies: ORT refuses external data behind a symlink
rm -f $P/step-layer.onnx; cp scripts/gpu/ab/step-layer-1.6.0-prev.onnx $P/step-layer.onnx
S=${S:-1,16,64,256}
for r in 1 2 3; do
  MAMBATAG_LAYER_FAST=0 timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $P --streams $S --steps 3000 --min-steps 3000 >> $OUT/ab_three.txt 2>&1
  timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $P --streams $S --steps 3000 --min-steps 3000 >> $OUT/ab_two.txt 2>&1
  timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams $S --steps 3000 --min-steps 3000 >> $OUT/ab_ops.txt 2>&1
done
NCU=/usr/local/cuda/bin/ncu
for v in ops three; do
  if [ $v = ops ]; then MM=$M; unset MAMBATAG_LAYER_FAST; else MM=$P; export MAMBATAG_LAYER_FAST=0; fi
  timeout 90 $NCU --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
    $B/mambatag bench --device cuda --model $MM --streams 1 --steps 20 --min-steps 20 > /tmp/ncu_$v.csv 2>/tmp/ncu_$v.err
  { echo "== $v"; python3 scripts/gpu/ncu-summary.py /tmp/ncu_$v.csv --grid; } >> $OUT/ncu.txt 2>&1
done
unset MAMBATAG_LAYER_FAST
[ "${AB_ONLY:-0}" = 1 ] && { for v in three two ops; do echo "== $v"; grep -E "^ +(1|16|64|256) " $OUT/ab_$v.txt; done; cat $OUT/ncu.txt; exit 0; }
python3 -c "from models.weights import MambaConfig, init_weights, save_weights as s; c = MambaConfig(128, 4, labels=[f'c{i}' for i in range(8)]); s('/tmp/rand.safetensors', init_weights(c, seed=1), c)" &&
  timeout 120 python3 -m models.bench_torch /tmp/rand.safetensors --streams $S --steps 60 > $OUT/torch.jsonl 2>&1
gpu_tests layer fused
cli_parity "step_auto:--engine step --cuda-graph" "step_layer_nograph:--engine step --kernels layer" "step_fused:--engine step --kernels fused" "chunk:"
for v in three two ops; do echo "== $v"; grep -E "^ +(1|16|64|256) " $OUT/ab_$v.txt; done
cat $OUT/ncu.txt; tail -n 12 $OUT/gpu_tests_*.txt $OUT/cli_parity.txt; cat $OUT/torch.jsonl
