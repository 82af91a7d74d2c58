#!/usr/bin/env bash
# What building and running mambatag needs on a fresh Debian/Ubuntu machine (idempotent; root
# or sudo): the ALSA headers and pkg-config for cpal (live capture), and ONNX Runtime in .ort/.
# Extra Debian packages given as arguments are installed the same way (scripts/test-deps.sh
# passes the test tools).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
missing=()
for p in pkg-config libasound2-dev "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
"$root/scripts/fetch-onnxruntime.sh"
