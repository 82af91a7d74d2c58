"""Numpy full-sequence reference of the whole mambatag model (float64, sequential scan).

This is the ground truth the ONNX graphs and the torch model are compared against; it is written
for clarity, straight from CONTRACT.md §4–5 and mamba_simple's ``selective_scan_ref``::

    feats  = (ln(mel(audio) + 1e-6) - mean) / std                [T, 64]
    x      = feats @ embed.W^T + embed.b                          [T, d_model]
    per layer:  x = x + mixer(rmsnorm(x) * norm.w)
      mixer: xz = u @ in_proj^T; x, z = split
             x  = silu(causal depthwise conv1d(x) + bias)
             dt, B, C = split(x @ x_proj^T);  dt = softplus(dt @ dt_proj^T + dt_bias)
             h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * x_t,   A = -exp(A_log)
             y_t = h_t @ C_t + D * x_t;   out = (y * silu(z)) @ out_proj^T
    scores = sigmoid(rmsnorm(x) * norm_f.w @ head.W^T + head.b)   [T, C]
"""

from __future__ import annotations

import numpy as np

from models import frontend
from models.weights import as_config

RMS_EPS = 1e-5


def _f64(w, k):
    return np.asarray(w[k], dtype=np.float64)


def rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float = RMS_EPS) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def mixer(weights: dict, prefix: str, u: np.ndarray, config) -> np.ndarray:
    """One Mamba-1 mixer over a whole sequence ``u [T, d_model]`` from zero state."""
    c = as_config(config)
    E, N, K, R = c.d_inner, c.d_state, c.d_conv, c.dt_rank
    p = prefix + "mixer."
    T = u.shape[0]
    xz = u @ _f64(weights, p + "in_proj.weight").T
    x, z = xz[:, :E], xz[:, E:]
    # causal depthwise conv: out[t] = sum_k w[:, k] * x[t - (K-1) + k] + b, zeros before t = 0
    cw = _f64(weights, p + "conv1d.weight")[:, 0, :]  # [E, K]
    xp = np.concatenate([np.zeros((K - 1, E)), x], axis=0)
    xc = sum(xp[k:k + T] * cw[:, k] for k in range(K)) + _f64(weights, p + "conv1d.bias")
    xc = silu(xc)
    dbc = xc @ _f64(weights, p + "x_proj.weight").T
    dt, Bm, Cm = dbc[:, :R], dbc[:, R:R + N], dbc[:, R + N:]
    dt = softplus(dt @ _f64(weights, p + "dt_proj.weight").T + _f64(weights, p + "dt_proj.bias"))
    A = -np.exp(_f64(weights, p + "A_log"))  # [E, N]
    Dv = _f64(weights, p + "D")
    h = np.zeros((E, N))
    y = np.empty((T, E))
    for t in range(T):
        h = np.exp(dt[t][:, None] * A) * h + (dt[t] * xc[t])[:, None] * Bm[t][None, :]
        y[t] = h @ Cm[t]
    y = y + Dv * xc
    y = y * silu(z)
    return y @ _f64(weights, p + "out_proj.weight").T


def reference_features(weights: dict, audio_1d: np.ndarray) -> np.ndarray:
    """Normalised log-mel features ``[T, 64]`` with the model's front-end statistics."""
    return frontend.features(audio_1d, _f64(weights, "frontend.mean"), _f64(weights, "frontend.std"))


def reference_logits(weights: dict, config, audio_1d: np.ndarray) -> np.ndarray:
    """Pre-sigmoid head outputs ``[T, C]`` (float64) for a 1-D 16 kHz stream from zero state."""
    c = as_config(config)
    x = reference_features(weights, audio_1d) @ _f64(weights, "embed.weight").T + _f64(weights, "embed.bias")
    for i in range(c.n_layers):
        p = f"layers.{i}."
        x = x + mixer(weights, p, rmsnorm(x, _f64(weights, p + "norm.weight")), c)
    x = rmsnorm(x, _f64(weights, "norm_f.weight"))
    return x @ _f64(weights, "head.weight").T + _f64(weights, "head.bias")


def reference_scores(weights: dict, config, audio_1d: np.ndarray) -> np.ndarray:
    """Per-frame label probabilities ``[T, C]`` (float64), ``T = len(audio_1d) // 160``."""
    return sigmoid(reference_logits(weights, config, audio_1d))
