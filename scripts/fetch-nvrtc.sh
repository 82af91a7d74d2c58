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
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "nvidia-cuda-nvrtc==$VERSION"
mkdir -p "$dest"
python3 - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1:]
whl = glob.glob(os.path.join(tmp, "nvidia_cuda_nvrtc-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        # the compiler and the builtins it loads from its own folder (not the .alt variants)
        if name.startswith("nvidia/cu13/lib/") and base.startswith("libnvrtc") and ".alt." not in base:
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                out.write(src.read())
PY
echo "$VERSION" > "$root/.nvrtc/VERSION"
echo "NVRTC $VERSION installed in $dest"
