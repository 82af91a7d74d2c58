#!/usr/bin/env bash
# One device call (gputest + mambatag; move models/weights/*.safetensors out of the tree for the
# upload limit): the GPU test suite (layer and fused graphs), CLI parity, step latency with and
# without ORT's end-of-run synchronisation (MAMBATAG_RUN_SYNC=1), alternating, the full batch
# sweep, and chunk-graph throughput (FP32, TF32).
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
export MAMBATAG_GPU_MODEL=models/default MAMBATAG_GPU_CUDA_GRAPH=1
for k in ${KS:-layer fused}; do
  MAMBATAG_GPU_KERNELS=$k timeout 150 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests_$k.txt 2>&1
done
$B/mambatag tag demo/demo.flac --frames --kernels onnx > /tmp/cpu.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda --engine step --cuda-graph > /tmp/gpu_step_auto.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda > /tmp/gpu_chunk.jsonl
$B/mambatag tag demo/demo.flac --frames --device cuda --tf32 > /tmp/gpu_chunk_tf32.jsonl
for f in gpu_step_auto gpu_chunk gpu_chunk_tf32; do python3 scripts/gpu/cli-parity.py /tmp/cpu.jsonl /tmp/$f.jsonl; done > $OUT/cli_parity.txt 2>&1
for i in 1 2 3; do
  timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16 --steps 3000 > $OUT/bench_nosync_$i.txt 2>&1
  MAMBATAG_RUN_SYNC=1 timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16 --steps 3000 > $OUT/bench_sync_$i.txt 2>&1
done
timeout 150 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,64,256,1024,4096,10240,16384 --steps 2000 --min-steps 2000 > $OUT/bench_auto.txt 2>&1
timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1 --steps 400 --chunk-streams 1,256,1024,4096 > $OUT/chunk_fp32.txt 2>&1
timeout 90 $B/mambatag bench --device cuda --cuda-graph --tf32 --model $M --streams 1 --steps 400 --chunk-streams 1024,4096 --chunk-frames 1000 > $OUT/chunk_tf32.txt 2>&1
tail -n 30 $OUT/*.txt
