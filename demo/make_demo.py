#!/usr/bin/env python3
"""Rebuild demo/demo.flac: espeak-ng speech, then fluidsynth music, then an alarm clock
ringtone from the Debian package lomiri-sounds (extracted by models/data/build.py fetch).

Usage (from the repo root): python3 demo/make_demo.py [--lomiri-dir .data/x/lomiri-sounds]
Onsets/offsets written to demo/README.md are printed at the end.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models", "data"))
import synth  # noqa: E402

SR = 16000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lomiri-dir", default=".data/x/lomiri-sounds")
    ap.add_argument("--out", default="demo/demo.flac")
    a = ap.parse_args()
    rng = np.random.default_rng(7)
    total = 9.0
    y = np.zeros(int(total * SR), np.float32)
    events = []

    sp = synth.espeak("Hello, this is mamba tag, listening to the room.", "en", 165, 45)
    sp = sp[: int(3.0 * SR)]
    nz = np.nonzero(np.abs(sp) > 0.01)[0]
    sp = sp[nz[0]:nz[-1] + 1]
    o = int(0.5 * SR)
    y[o:o + len(sp)] += 0.8 * sp / np.abs(sp).max()
    events.append(("speech", 0.5, 0.5 + len(sp) / SR))

    tracks = [[(i * 240, 220, n, 100, 0) for i, n in enumerate([60, 64, 67, 72, 67, 64, 60, 64, 67, 72, 76, 72])],
              [(0, 1900, 48, 80, 1), (0, 1900, 55, 80, 1), (1920, 1900, 53, 80, 1), (1920, 1900, 57, 80, 1)]]
    with tempfile.TemporaryDirectory() as td:
        mid = os.path.join(td, "d.mid")
        synth.write_midi(mid, tracks, [0, 48], 120.0)
        mu = synth.render_midi(mid)
    mu = mu[: int(2.6 * SR)]
    fade = np.linspace(1, 0, int(0.2 * SR))
    mu[-len(fade):] *= fade
    o = int(3.8 * SR)
    y[o:o + len(mu)] += 0.7 * mu / np.abs(mu).max()
    events.append(("music", 3.8, 3.8 + len(mu) / SR))

    al = synth.decode(os.path.join(a.lomiri_dir, "usr/share/sounds/lomiri/ringtones/Alarm clock.ogg"))
    nz = np.nonzero(np.abs(al) > 0.01)[0]
    al = al[nz[0]:][: int(2.0 * SR)]
    al[-len(fade):] *= fade
    o = int(6.7 * SR)
    y[o:o + len(al)] += 0.7 * al / np.abs(al).max()
    events.append(("alarm", 6.7, 6.7 + len(al) / SR))

    pcm = (np.clip(y, -1, 1) * 32767).astype("<i2")
    with tempfile.TemporaryDirectory() as td:
        raw = os.path.join(td, "d.raw")
        pcm.tofile(raw)
        subprocess.run(["sox", "-t", "raw", "-r", str(SR), "-e", "signed", "-b", "16", "-c", "1", raw,
                        "-C", "8", a.out], check=True)
    for lab, s, e in events:
        print(f"{lab}\t{s:.2f}\t{e:.2f}")


if __name__ == "__main__":
    main()
