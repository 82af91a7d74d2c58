#!/usr/bin/env bash
# Puts NVIDIA's runtime compiler NVRTC 13.0 (the version kernels.ptx is built with; see
# scripts/build-ptx.py) into .nvrtc/ of this repository, from PyPI's nvidia-cuda-nvrtc wheel.
# No CUDA toolkit or GPU is needed. Idempotent.
set -euo pipefail
VERSION=${NVRTC_VERSION:-13.0.88}
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/.nvrtc/nvidia/cu13/lib
if [ -f "$dest/libnvrtc.so.13" ] && [ "$(cat "$root/.nvrtc/VERSION" 2>/dev/null)" = "$VERSION" ]; then
  echo "NVRTC $VERSION already in $dest"
  exit 0
fi
# the compiler and the builtins it loads from its own folder (not the .alt variants)
python3 "$root/scripts/pypi-libs.py" "nvidia-cuda-nvrtc==$VERSION" "$dest" '^nvidia/cu13/lib/libnvrtc(-builtins)?\.so\.[0-9.]+$'
echo "$VERSION" > "$root/.nvrtc/VERSION"
echo "NVRTC $VERSION installed in $dest"
