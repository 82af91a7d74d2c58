#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine (idempotent; root or sudo):
# sox/ffmpeg make the decoder fixtures, PulseAudio is the virtual microphone, mosquitto the
# MQTT broker; Python packages run the exporter/verifier tests; ONNX Runtime goes to .ort/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pkgs=(sox ffmpeg fonts-dejavu-core pkg-config libasound2-dev pulseaudio pulseaudio-utils libasound2-plugins mosquitto mosquitto-clients systemd)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -r "$root/models/requirements.txt"
# torch runs the training smoke test and the torch-vs-numpy parity tests (CPU only).
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check -r "$root/models/requirements-train.txt"
"$root/scripts/setup.sh" >/dev/null
