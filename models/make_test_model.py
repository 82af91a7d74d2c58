"""Make the tiny deterministic test model package ``models/test-tiny/``.

Usage: ``python -m models.make_test_model [OUTDIR]`` (default ``models/test-tiny``).

Writes, all deterministic (fixed seeds, no torch):

- ``weights.safetensors`` — random mamba_simple-style weights, d_model 16, 2 layers, d_state 4,
  d_conv 4, expand 2, 8 labels; front-end mean/std computed from the fixture; the head rescaled so
  that every label's probability swings roughly across 0.1–0.9 over the fixture and crosses 0.5.
- ``step.onnx``, ``chunk.onnx`` — exported with ``models/export.py``, thresholds 0.5 (the chunk graph
  with ``T`` symbolic, preferred 250).
- ``fixture.wav`` — 2.0 s, 16 kHz mono, 32-bit float: tones, a chirp, a silent gap, noise bursts,
  a loud clipped tone.
- ``reference.json`` — ``{"sample_rate", "hop", "labels", "frames", "scores": [[C floats] x N]}``
  from ``reference.py`` (float64) on fixture.wav as stored (float32), N = 200.

The Rust parity test runs fixture.wav through its engine with step.onnx and compares with
reference.json (<= 1e-4).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from models import frontend
from models.export import export_package
from models.reference import reference_logits, reference_scores
from models.weights import MambaConfig, init_weights, save_weights

LABELS = ["speech", "music", "animal", "alarm", "vehicle", "tools", "impact", "weather"]
CONFIG = MambaConfig(d_model=16, n_layers=2, d_state=4, d_conv=4, expand=2, labels=LABELS)
SEED = 20261129
DURATION_S = 2.0
DEFAULT_OUT = Path(__file__).resolve().parent / "test-tiny"


def fixture_signal(seed: int = SEED) -> np.ndarray:
    """2.0 s float32 test signal: tones, chirp, silence, noise bursts, clipped tone."""
    sr = frontend.SAMPLE_RATE
    rng = np.random.default_rng(seed)
    n = int(DURATION_S * sr)
    t = np.arange(n) / sr
    x = np.zeros(n)

    def seg(a, b):
        return slice(int(a * sr), int(b * sr))

    s = seg(0.0, 0.4)  # two steady tones
    x[s] = 0.3 * np.sin(2 * np.pi * 440 * t[s]) + 0.2 * np.sin(2 * np.pi * 1000 * t[s])
    s = seg(0.4, 0.8)  # exponential chirp 200 -> 6000 Hz
    tt = t[s] - 0.4
    f0, f1, dur = 200.0, 6000.0, 0.4
    k = (f1 / f0) ** (1 / dur)
    x[s] = 0.5 * np.sin(2 * np.pi * f0 * (k ** tt - 1) / np.log(k))
    # 0.8 - 1.1: exact digital silence
    s = seg(1.1, 1.5)  # noise bursts of 50 ms every 100 ms over faint noise
    m = np.where(((t[s] - 1.1) // 0.05) % 2 == 0, 0.4, 0.01)
    x[s] = m * rng.standard_normal(len(m))
    s = seg(1.5, 1.8)  # loud 3 kHz tone clipped at +-1
    x[s] = np.clip(2.5 * np.sin(2 * np.pi * 3000 * t[s]), -1.0, 1.0)
    s = seg(1.8, 2.0)  # 250 Hz hum with a 2.5 kHz tone and low noise
    x[s] = (0.25 * np.sin(2 * np.pi * 250 * t[s]) + 0.1 * np.sin(2 * np.pi * 2500 * t[s])
            + 0.02 * rng.standard_normal(len(t[s])))
    return x.astype(np.float32)


def write_wav_f32(path, audio: np.ndarray, sr: int = frontend.SAMPLE_RATE) -> None:
    """Plain RIFF/WAVE, format tag 3 (IEEE float), 32-bit, mono, with a ``fact`` chunk."""
    data = np.asarray(audio, dtype="<f4").tobytes()
    fmt = (b"fmt " + (16).to_bytes(4, "little") + (3).to_bytes(2, "little") + (1).to_bytes(2, "little")
           + sr.to_bytes(4, "little") + (sr * 4).to_bytes(4, "little") + (4).to_bytes(2, "little")
           + (32).to_bytes(2, "little"))
    fact = b"fact" + (4).to_bytes(4, "little") + len(audio).to_bytes(4, "little")
    body = b"WAVE" + fmt + fact + b"data" + len(data).to_bytes(4, "little") + data
    Path(path).write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)


def read_wav_f32(path) -> np.ndarray:
    import soundfile as sf

    audio, sr = sf.read(str(path), dtype="float32")
    assert sr == frontend.SAMPLE_RATE and audio.ndim == 1, (sr, audio.shape)
    return audio


def make_weights(audio: np.ndarray) -> dict[str, np.ndarray]:
    """Random tiny weights with front-end stats and head scale fitted to ``audio``."""
    w = init_weights(CONFIG, SEED)
    lm = frontend.logmel(audio)
    w["frontend.mean"] = lm.mean(axis=0).astype(np.float32)
    w["frontend.std"] = np.maximum(lm.std(axis=0), 0.5).astype(np.float32)
    # head input u_t (norm_f output): logits = u @ W^T + b; rescale each label's row so its logit
    # has std ~1.6 over the fixture around a small label-specific offset.
    w["head.bias"] = np.zeros(CONFIG.n_classes, np.float32)
    s = reference_logits(w, CONFIG, audio)  # [T, C] with zero bias
    rng = np.random.default_rng(SEED + 1)
    offset = rng.uniform(-0.4, 0.4, CONFIG.n_classes)
    scale = 1.6 / s.std(axis=0)
    w["head.weight"] = (w["head.weight"] * scale[:, None]).astype(np.float32)
    w["head.bias"] = (offset - s.mean(axis=0) * scale).astype(np.float32)
    return w


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)

    write_wav_f32(out / "fixture.wav", fixture_signal())
    audio = read_wav_f32(out / "fixture.wav")
    weights = make_weights(audio)
    save_weights(out / "weights.safetensors", weights, CONFIG)
    export_package(out / "weights.safetensors", out, name="mambatag-test-tiny", version="1.0.0",
                   license="CC0-1.0", thresholds=0.5,
                   description="Random-weight 16x2 test model for engine parity tests; tags nothing real.")
    scores = reference_scores(weights, CONFIG, audio)
    ref = {"sample_rate": frontend.SAMPLE_RATE, "hop": frontend.HOP, "labels": LABELS,
           "frames": int(scores.shape[0]),
           "scores": [[round(float(v), 7) for v in row] for row in scores]}
    (out / "reference.json").write_text(json.dumps(ref, separators=(",", ":")) + "\n")

    crossings = ((scores[1:] > 0.5) != (scores[:-1] > 0.5)).sum(axis=0)
    print(f"wrote {out}: {scores.shape[0]} frames; per label min/max/crossings of 0.5:")
    for i, l in enumerate(LABELS):
        print(f"  {l:8s} {scores[:, i].min():.3f} {scores[:, i].max():.3f} {crossings[i]}")
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"package size {total / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
