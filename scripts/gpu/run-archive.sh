#!/usr/bin/env bash
# One device call: `mambatag tag -r` over an archive on the GPU (64 × 3 min 44.1 kHz stereo
# 16-bit WAV written by numpy here: the image has no sox) vs the same on the GPU host's CPU cores.
set -x
source "$(dirname "$0")/prelude.sh" 2>/dev/null || source scripts/gpu/prelude.sh
python3 - <<'PY'
import numpy as np, wave, os
os.makedirs("/tmp/arch", exist_ok=True)
sr, n = 44100, 44100 * 180
rng = np.random.default_rng(0)
for i in range(64):
    t = np.arange(n) / sr
    x = 0.2 * np.sin(2 * np.pi * (220 + 10 * i) * t) + 0.05 * rng.standard_normal(n)
    s = (np.clip(np.stack([x, x[::-1]], 1), -1, 1) * 32767).astype("<i2")
    with wave.open(f"/tmp/arch/f{i:02d}.wav", "wb") as w:
        w.setnchannels(2); w.setsampwidth(2); w.setframerate(sr); w.writeframes(s.tobytes())
PY
nproc > $OUT/archive.txt
for run in 1 2; do /usr/bin/time -f "cuda run $run: %e s wall, %M KB" $B/mambatag tag -r /tmp/arch --device cuda --out /tmp/o-cuda-$run 2>> $OUT/archive.txt | tail -3 >> $OUT/archive.txt; done
/usr/bin/time -f "cuda --tf32: %e s wall, %M KB" $B/mambatag tag -r /tmp/arch --device cuda --tf32 --out /tmp/o-tf32 2>> $OUT/archive.txt | tail -3 >> $OUT/archive.txt
/usr/bin/time -f "cpu (16 engines x 8 lanes): %e s wall, %M KB" timeout 200 $B/mambatag tag -r /tmp/arch --out /tmp/o-cpu 2>> $OUT/archive.txt | tail -3 >> $OUT/archive.txt
cat $OUT/archive.txt
