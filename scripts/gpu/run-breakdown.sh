#!/usr/bin/env bash
# Where a CUDA step's time goes: audio upload, session run, scores download (B = 1, 16, 1024).
set -x
source .gpu/ort-cuda-env.sh
B=/tmp/b; mkdir -p $B
python3 -c "import lzma,shutil,sys;shutil.copyfileobj(lzma.open(sys.argv[1]),open(sys.argv[2],'wb'))" .gpubin/lib/libasound.so.2.xz $B/libasound.so.2
export LD_LIBRARY_PATH=$B:$LD_LIBRARY_PATH
python3 -c "import lzma,shutil,sys;shutil.copyfileobj(lzma.open(sys.argv[1]),open(sys.argv[2],'wb'))" .gpubin/mambatag.xz $B/mambatag; chmod +x $B/mambatag
M=models/default
timeout 60 $B/mambatag bench --device cuda --model $M --streams 1,16,1024 --steps 1000 > $OUT/breakdown.txt 2>&1
timeout 60 $B/mambatag bench --device cuda --cuda-graph --model $M --streams 1,16,1024 --steps 1000 > $OUT/breakdown_graph.txt 2>&1
tail -n 30 $OUT/*.txt
