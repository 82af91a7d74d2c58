#!/usr/bin/env bash
# CUDA graphs after the resize fix: GPU suite with graphs, then the batch sweep.
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
MAMBATAG_GPU_CUDA_GRAPH=1 timeout 80 $B/gputest --ignored --nocapture --test-threads 1 > $OUT/gpu_tests_graph.txt 2>&1
timeout 50 $B/gputest --ignored --nocapture --test-threads 1 gpu_batch_growth > $OUT/gpu_tests_growth_nograph.txt 2>&1
timeout 100 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,64,256,1024,4096,16384 --steps 1000 > $OUT/bench_graph.txt 2>&1
for n in 1024 16384; do timeout 40 $B/mambatag bench --device cuda --cuda-graph --model $M --streams $n --steps 400 > $OUT/bench_graph_only_$n.txt 2>&1; done
tail -n 25 $OUT/*.txt
