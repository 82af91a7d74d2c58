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
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "onnxruntime==$VERSION"
mkdir -p "$dest"
python3 - "$tmp" "$dest" "$VERSION" <<'PY'
import glob, os, sys, zipfile
tmp, dest, version = sys.argv[1:]
whl = glob.glob(os.path.join(tmp, "onnxruntime-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime"):
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                out.write(src.read())
PY
ln -sf "libonnxruntime.so.$VERSION" "$dest/libonnxruntime.so"
echo "ONNX Runtime $VERSION installed in $dest"
