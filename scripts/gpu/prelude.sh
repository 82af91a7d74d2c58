# Sourced by the run-*.sh scripts on the GPU machine: CUDA-enabled ONNX Runtime on the library
# path, and the carried binaries (xz-compressed in .gpubin/) unpacked into $B.
source .gpu/ort-cuda-env.sh
B=/tmp/b; mkdir -p $B
unxz_to() { python3 -c "import lzma,shutil,sys;shutil.copyfileobj(lzma.open(sys.argv[1]),open(sys.argv[2],'wb'))" "$1" "$2"; }
# binaries built with the default `mic` feature link libasound, which the GPU image lacks
[ -f .gpubin/lib/libasound.so.2.xz ] && unxz_to .gpubin/lib/libasound.so.2.xz $B/libasound.so.2
export LD_LIBRARY_PATH=$B:$LD_LIBRARY_PATH
for f in mambatag gputest; do
  if [ -f .gpubin/$f.xz ]; then unxz_to .gpubin/$f.xz $B/$f; chmod +x $B/$f; fi
done
M=models/default

# gpu_tests KIND...: tests/gpu.rs (carried as .gpubin/gputest.xz) with the default model and
# CUDA graphs, once per step-graph kind (layer, fused, onnx) -> $OUT/gpu_tests_KIND.txt
gpu_tests() {
  local k
  for k in "$@"; do
    MAMBATAG_GPU_MODEL=$M MAMBATAG_GPU_CUDA_GRAPH=1 MAMBATAG_GPU_KERNELS=$k \
      timeout 150 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests_$k.txt 2>&1
  done
}

# cli_parity NAME:ARGS...: per-frame scores of `mambatag tag demo/demo.flac --frames --device
# cuda ARGS` against the CPU standard graphs, one line per NAME -> $OUT/cli_parity.txt
cli_parity() {
  local spec
  $B/mambatag tag demo/demo.flac --frames --kernels onnx > /tmp/cpu.jsonl
  for spec in "$@"; do
    $B/mambatag tag demo/demo.flac --frames --device cuda ${spec#*:} > /tmp/gpu_${spec%%:*}.jsonl
    python3 scripts/gpu/cli-parity.py /tmp/cpu.jsonl /tmp/gpu_${spec%%:*}.jsonl
  done > $OUT/cli_parity.txt 2>&1
}

# chunk_benches: the offline numbers of BENCHMARKS.md (#6): the chunk graph, model only, FP32 at
# the model's chunk length and TF32 at T = 1000 -> $OUT/chunk_fp32.txt, $OUT/chunk_tf32.txt
chunk_benches() {
  timeout 60 $B/mambatag bench --device cuda --model $M --streams 1 --steps 400 --chunk-streams 1,1024,4096 > $OUT/chunk_fp32.txt 2>&1
  timeout 90 $B/mambatag bench --device cuda --tf32 --model $M --streams 1 --steps 400 --chunk-streams ${TF32_LANES:-1024,4096,8192} --chunk-frames 1000 > $OUT/chunk_tf32.txt 2>&1
}

# step_rows ARGS...: the step bench with CUDA graphs, 1,000 timed steps, extra `mambatag bench`
# ARGS (--streams, --kernels, ...); only the table's rows, for A/B files
step_rows() {
  timeout 100 $B/mambatag bench --device cuda --cuda-graph --model $M --steps 1000 --min-steps 1000 "$@" 2>&1 | grep -E '^ +[0-9]+ '
}

# ncu_launches N...: Nsight Compute GPU time per launch of the step at N streams (300 launches
# after the first 1,150, CUDA graphs off so that every kernel is seen) -> $OUT/ncu.txt
ncu_launches() {
  local n
  for n in "$@"; do
    timeout 100 /usr/local/cuda/bin/ncu --clock-control none --metrics gpu__time_duration.sum --csv \
      --launch-skip 1150 --launch-count 300 \
      $B/mambatag bench --device cuda --model $M --steps 30 --min-steps 30 --streams $n > /tmp/$n.csv 2>/tmp/$n.err
    { echo "== $n streams"; python3 scripts/gpu/ncu-summary.py /tmp/$n.csv --grid; } >> $OUT/ncu.txt
  done
}

# torch_loop STREAMS: the PyTorch eager step loop (models.bench_torch) at the comma-separated N,
# on random weights of the default model's shape (its speed does not depend on their values, so
# the safetensors may stay home) -> $OUT/torch.jsonl
torch_loop() {
  python3 -c "from models.weights import MambaConfig, init_weights, save_weights as s; c = MambaConfig(128, 4, labels=[f'c{i}' for i in range(8)]); s('/tmp/rand.safetensors', init_weights(c, seed=1), c)" &&
    timeout 150 python3 -m models.bench_torch /tmp/rand.safetensors --streams "$1" --steps 60 > $OUT/torch.jsonl 2>&1
}

# use_ptx NAME: the commands after it load .gpubin/ptx/NAME.ptx.xz (a kernels.cu variant built
# with `scripts/build-ptx.py ... --out`) through MAMBATAG_PTX; `use_ptx new` goes back to the
# binary's own PTX
use_ptx() {
  if [ "$1" = new ]; then unset MAMBATAG_PTX; return; fi
  [ -f /tmp/$1.ptx ] || unxz_to .gpubin/ptx/$1.ptx.xz /tmp/$1.ptx
  export MAMBATAG_PTX=/tmp/$1.ptx
}
