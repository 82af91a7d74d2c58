#!/usr/bin/env bash
# Second device call: the direct-binding CUDA path and CUDA-graph parity.
set -x
source .gpu/ort-cuda-env.sh
B=/tmp/b; mkdir -p $B
python3 -c "import lzma,shutil,sys;shutil.copyfileobj(lzma.open(sys.argv[1]),open(sys.argv[2],'wb'))" .gpubin/lib/libasound.so.2.xz $B/libasound.so.2
export LD_LIBRARY_PATH=$B:$LD_LIBRARY_PATH
for f in mambatag gputest; do
  python3 -c "import lzma,shutil,sys;shutil.copyfileobj(lzma.open(sys.argv[1]),open(sys.argv[2],'wb'))" .gpubin/$f.xz $B/$f; chmod +x $B/$f
done
M=models/default
export MAMBATAG_GPU_MODEL=$M
timeout 60 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests_nograph.txt 2>&1
MAMBATAG_GPU_CUDA_GRAPH=1 timeout 60 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests_graph.txt 2>&1
timeout 80 $B/mambatag bench --device cuda --model $M --streams 1,16,1024,4096,16384 --steps 1000 > $OUT/bench_cuda2.txt 2>&1
timeout 70 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,256,1024,4096,16384 --steps 1000 --chunk-streams 1024,4096 > $OUT/bench_cuda_graph2.txt 2>&1
tail -n 40 $OUT/*.txt
