# Sourced by the run-*.sh scripts on the GPU machine: CUDA-enabled ONNX Runtime on the library
# path, and the carried binaries (xz-compressed in .gpubin/) unpacked into $B.
source .gpu/ort-cuda-env.sh
B=/tmp/b; mkdir -p $B
unxz_to() { python3 -c "import lzma,shutil,sys;shutil.copyfileobj(lzma.open(sys.argv[1]),open(sys.argv[2],'wb'))" "$1" "$2"; }
unxz_to .gpubin/lib/libasound.so.2.xz $B/libasound.so.2   # cpal links it; the GPU image lacks it
export LD_LIBRARY_PATH=$B:$LD_LIBRARY_PATH
for f in mambatag gputest; do
  if [ -f .gpubin/$f.xz ]; then unxz_to .gpubin/$f.xz $B/$f; chmod +x $B/$f; fi
done
M=models/default
