"""The mambatag feature front end in numpy (CONTRACT.md §4) — the one definition of it.

Every other implementation (the torch model in ``mamba.py``, the ONNX graphs built by
``export.py``) takes its constants from the functions here, and the tests check that they agree.

Pipeline for a mono 16 kHz stream::

    frame t  = samples [(t+1)*160 - 400, (t+1)*160)   (zeros before the stream start)
    power    = |rfft(hann400(frame) zero-padded to 512)|^2      -> [257]
             = (frame @ COS)^2 + (frame @ SIN)^2 with the window folded in
    mel      = power @ MEL                                         -> [64]
    logmel   = ln(mel + 1e-6)
    features = (logmel - mean) / std       (mean, std: ``frontend.mean`` / ``frontend.std``)

The mel filterbank is HTK-scale (``mel = 2595 log10(1 + f/700)``), 64 bands with 66 edge points
equally spaced in mel between 0 and 8000 Hz, triangles evaluated on the FFT bin frequencies in Hz,
peak 1, no area (Slaney) normalisation — what ``librosa.filters.mel(htk=True, norm=None)`` gives.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
HOP = 160
WIN = 400
HISTORY = WIN - HOP  # 240 samples of carried audio (state.audio)
N_FFT = 512
N_BINS = N_FFT // 2 + 1  # 257
N_MELS = 64
F_MIN = 0.0
F_MAX = 8000.0
LOG_EPS = 1e-6


def hann_window(n: int = WIN) -> np.ndarray:
    """Periodic Hann window of length ``n`` (float64): ``0.5 - 0.5 cos(2 pi i / n)``."""
    i = np.arange(n, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * i / n)


def dft_phase_index(win: int = WIN, n_fft: int = N_FFT) -> np.ndarray:
    """``(n * k) mod n_fft`` as int64 ``[win, n_fft//2+1]``: the exact phase index of the DFT."""
    n = np.arange(win, dtype=np.int64)[:, None]
    k = np.arange(n_fft // 2 + 1, dtype=np.int64)[None, :]
    return (n * k) % n_fft


def dft_matrices(win: int = WIN, n_fft: int = N_FFT, window: bool = False):
    """Real-DFT matrices ``(cos, sin)``, each float64 ``[win, n_fft//2+1]``.

    ``frame @ cos`` / ``frame @ sin`` are the real part / minus the imaginary part of the DFT of
    ``frame`` zero-padded to ``n_fft``. With ``window=True`` the periodic Hann window is folded in
    (row ``n`` scaled by ``hann[n]``), which is what the graphs use.
    """
    phase = 2.0 * np.pi * dft_phase_index(win, n_fft) / n_fft
    cos, sin = np.cos(phase), np.sin(phase)
    if window:
        w = hann_window(win)[:, None]
        cos, sin = cos * w, sin * w
    return cos, sin


def hz_to_mel(f):
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_points_hz(n_mels: int = N_MELS, f_min: float = F_MIN, f_max: float = F_MAX) -> np.ndarray:
    """The ``n_mels + 2`` filter edge/centre frequencies in Hz (float64)."""
    return mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))


def fft_freqs(n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Centre frequency in Hz of each one-sided FFT bin (float64 ``[n_fft//2+1]``)."""
    return np.arange(n_fft // 2 + 1, dtype=np.float64) * (sample_rate / n_fft)


def triangles(freqs: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Triangular filters (peak 1) at ``freqs`` for edge points ``pts``: ``[len(freqs), len(pts)-2]``.

    Written with plain array arithmetic so the exporter can build the same expression as graph ops.
    """
    lo, mid, hi = pts[:-2], pts[1:-1], pts[2:]
    f = freqs[:, None]
    rising = (f - lo) / (mid - lo)
    falling = (hi - f) / (hi - mid)
    return np.maximum(0.0, np.minimum(rising, falling))


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE,
                   f_min: float = F_MIN, f_max: float = F_MAX) -> np.ndarray:
    """HTK mel filterbank, float64 ``[n_fft//2+1, n_mels]`` (power spectrum @ this = mel energies)."""
    return triangles(fft_freqs(n_fft, sample_rate), mel_points_hz(n_mels, f_min, f_max))


def frame_audio(audio: np.ndarray, history: np.ndarray | None = None) -> np.ndarray:
    """Cut a 1-D stream into frames ``[T, WIN]``, ``T = len(audio) // HOP``.

    Frame ``t`` ends with hop ``t``; ``history`` (default zeros) are the ``HISTORY`` samples before
    the stream start. Trailing samples that do not fill a hop are ignored.
    """
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    if history is None:
        history = np.zeros(HISTORY)
    padded = np.concatenate([np.asarray(history, dtype=np.float64).reshape(-1), audio])
    n_frames = len(audio) // HOP
    idx = np.arange(n_frames)[:, None] * HOP + np.arange(WIN)[None, :]
    return padded[idx]


def power_spectrum(frames: np.ndarray) -> np.ndarray:
    """``[..., WIN]`` frames -> ``[..., N_BINS]`` Hann-windowed power spectrum (float64)."""
    cos, sin = dft_matrices(window=True)
    frames = np.asarray(frames, dtype=np.float64)
    return (frames @ cos) ** 2 + (frames @ sin) ** 2


def logmel(audio: np.ndarray) -> np.ndarray:
    """Log-mel features ``[T, N_MELS]`` (float64) of a 1-D stream, before normalisation."""
    mel = power_spectrum(frame_audio(audio)) @ mel_filterbank()
    return np.log(mel + LOG_EPS)


def normalize(lm: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per-band normalisation ``(logmel - mean) / std``."""
    return (lm - np.asarray(mean, dtype=np.float64)) / np.asarray(std, dtype=np.float64)


def features(audio: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Normalised log-mel features ``[T, N_MELS]`` (float64) of a 1-D stream."""
    return normalize(logmel(audio), mean, std)
