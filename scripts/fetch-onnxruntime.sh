#!/usr/bin/env bash
# Puts ONNX Runtime's CPU library (the version mambatag's `ort` crate is built for) into .ort/
# of this repository, where mambatag finds it without any environment variable.
# Source: PyPI's onnxruntime wheel (the only registry this project relies on besides crates.io
# and Debian). Idempotent: does nothing when .ort/ already holds the right version.
set -euo pipefail
VERSION=${ORT_VERSION:-1.31.1}
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/.ort
if [ -f "$dest/libonnxruntime.so.$VERSION" ]; then
  echo "ONNX Runtime $VERSION already in $dest"
  exit 0
fi
python3 "$root/scripts/pypi-libs.py" "onnxruntime==$VERSION" "$dest" '^onnxruntime/capi/libonnxruntime[^/]*$'
ln -sf "libonnxruntime.so.$VERSION" "$dest/libonnxruntime.so"
echo "ONNX Runtime $VERSION installed in $dest"
