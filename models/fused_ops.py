"""numpy reference of the fused operators (domain ``ai.mambatag``, CONTRACT.md §7).

The Rust engine implements ``MambaLogMel``, ``MambaLogMelStep``, ``MambaConv``, ``MambaSsm``, ``MambaLayer``,
``MambaEmbed`` and ``MambaHead`` for ONNX Runtime (CPU in Rust, CUDA
as PTX kernels); onnxruntime's Python package does not know them. This module gives their
semantics in numpy, as ``onnx.reference`` operators, so that ``step-fused.onnx``,
``step-layer.onnx`` and ``chunk-fused.onnx`` can be run and verified here without torch or the Rust engine::

    from models.fused_ops import FusedRunner
    r = FusedRunner("models/default/chunk-fused.onnx")
    outs = r.run({"audio": audio, **states})          # dict of output name -> array

The conv, SSM and log-mel ops work on ``T`` hops per call (``T = 1`` in the step graph);
``MambaLayer`` is one hop. Float64 inside, float32 out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

DOMAIN = "ai.mambatag"


def mamba_conv(xz, state, w, b):
    """Causal depthwise conv + SiLU. ``xz [B, T, 2E]`` (x = channels ``[0, E)``), ``state
    [B, K-1, E]``, ``w [K, E]``, ``b [E]`` -> ``(xc [B, T, E], state' [B, K-1, E])``; rank-2
    ``xz [B, 2E]`` is one hop and gives ``xc [B, E]``."""
    if np.ndim(xz) == 2:
        y, s = mamba_conv(np.asarray(xz)[:, None], state, w, b)
        return y[:, 0], s
    K, E = w.shape
    x = np.asarray(xz, np.float64)[:, :, :E]
    pad = np.concatenate([np.asarray(state, np.float64), x], axis=1)  # [B, T + K - 1, E]
    T = x.shape[1]
    acc = sum(pad[:, k:k + T] * w[k] for k in range(K)) + b
    xc = acc / (1.0 + np.exp(-acc))
    return xc.astype(np.float32), pad[:, T:].astype(np.float32)


def mamba_ssm(xc, xz, dbc, dt_w, dt_b, A, D, h):
    """dt_proj + softplus, selective scan over ``T`` hops, D skip, SiLU(z) gate.

    ``xc [B, T, E]``, ``xz [B, T, 2E]`` (z = channels ``[E, 2E)``), ``dbc [B, T, R + 2N]``
    (dt_low, B, C), ``dt_w [R, E]``, ``dt_b [E]``, ``A [N, E]``, ``D [E]``, ``h [B, N, E]``
    -> ``(y [B, T, E], h' [B, N, E])``::

        dt = softplus(dt_low @ dt_w + dt_b)
        h  = exp(dt * A) * h + B^T (dt * x)      (per hop)
        y  = (C h + D * x) * SiLU(z)
    """
    if np.ndim(xc) == 2:  # one hop, [B, X] tensors
        y, h2 = mamba_ssm(np.asarray(xc)[:, None], np.asarray(xz)[:, None], np.asarray(dbc)[:, None],
                          dt_w, dt_b, A, D, h)
        return y[:, 0], h2
    N, E = A.shape
    R = dt_w.shape[0]
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    xc, dbc, h = f(xc), f(dbc), f(h).copy()
    z = f(xz)[:, :, E:]
    dtr = dbc[:, :, :R] @ f(dt_w) + f(dt_b)
    dt = np.maximum(dtr, 0) + np.log1p(np.exp(-np.abs(dtr)))  # [B, T, E]
    Bm, Cm = dbc[:, :, R:R + N], dbc[:, :, R + N:]
    ys = []
    for t in range(xc.shape[1]):
        dA = np.exp(dt[:, t, None, :] * f(A))  # [B, N, E]
        h = dA * h + Bm[:, t, :, None] * (dt[:, t] * xc[:, t])[:, None, :]
        ys.append(np.einsum("bn,bne->be", Cm[:, t], h))
    y = np.stack(ys, axis=1) if ys else np.zeros_like(xc)
    y = (y + xc * f(D)) * (z / (1.0 + np.exp(-z)))
    return y.astype(np.float32), h.astype(np.float32)


def mamba_logmel(audio, mel):
    """The front end (CONTRACT.md §4) for ``T`` hops: ``audio [B, 240 + 160 T]`` (history first),
    ``mel [257, M]`` -> ``ln(power @ mel + 1e-6)`` ``[B, T, M]`` (float64 inside, float32 out)."""
    from models import frontend

    audio = np.asarray(audio, np.float64)
    B, S = audio.shape
    T = (S - frontend.HISTORY) // frontend.HOP
    idx = np.arange(T)[:, None] * frontend.HOP + np.arange(frontend.WIN)[None, :]
    frames = audio[:, idx]  # [B, T, 400]
    power = frontend.power_spectrum(frames)  # [B, T, 257]
    return np.log(power @ np.asarray(mel, np.float64) + frontend.LOG_EPS).astype(np.float32)


def mamba_layer(x, conv_state, h, norm_w, in_w, conv_w, conv_b, x_w, dt_w, dt_b, A, D, out_w, eps):
    """A whole residual Mamba block for one hop (``step-layer.onnx``): ``x [B, Dm]`` ->
    ``(x + y @ out_w [B, Dm], conv_state', h', xz [B, 2E], y [B, E])``; ``xz = u @ in_w`` with
    ``u = RMSNorm(x)``, then :func:`mamba_conv`, ``dbc = xc @ x_w`` and :func:`mamba_ssm` give
    ``y`` (the last two outputs are these intermediates)."""
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    x = f(x)
    u = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + f(eps)[0]) * f(norm_w)
    xz = u @ f(in_w)
    xc, conv2 = mamba_conv(xz, conv_state, f(conv_w), f(conv_b))
    y, h2 = mamba_ssm(xc, xz, f(xc) @ f(x_w), dt_w, dt_b, A, D, h)
    return (x + f(y) @ f(out_w)).astype(np.float32), conv2, h2, xz.astype(np.float32), y


def mamba_logmel_step(history, audio, mel):
    """One hop of the front end with the audio history (the layer step graph): ``history [B,
    240]``, ``audio [B, 160]`` -> ``(logmel [B, M], history' [B, 240])``, i.e.
    :func:`mamba_logmel` on ``concat(history, audio)`` and that concatenation's last 240 samples."""
    from models import frontend

    full = np.concatenate([np.asarray(history, np.float32), np.asarray(audio, np.float32)], axis=1)
    return mamba_logmel(full, mel)[:, 0], full[:, frontend.HOP:]


def mamba_embed(x, w, b):
    """``x [B, I] @ w [I, O] + b [O]`` (the layer step graph's embedding)."""
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    return (f(x) @ f(w) + f(b)).astype(np.float32)


def mamba_head(x, norm_w, eps, w, b):
    """``sigmoid(RMSNorm(x) · norm_w @ w + b)``: ``x [B, D]`` -> scores ``[B, C]`` (the layer
    step graph's final norm, classifier and sigmoid)."""
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    x = f(x)
    u = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + f(eps)[0]) * f(norm_w)
    return (1.0 / (1.0 + np.exp(-(u @ f(w) + f(b))))).astype(np.float32)


class MambaLogMel(OpRun):
    op_domain = DOMAIN

    def _run(self, audio, mel):
        return (mamba_logmel(audio, mel),)


class MambaConv(OpRun):
    op_domain = DOMAIN

    def _run(self, xz, state, w, b):
        return mamba_conv(xz, state, w, b)


class MambaSsm(OpRun):
    op_domain = DOMAIN

    def _run(self, xc, xz, dbc, dt_w, dt_b, A, D, h):
        return mamba_ssm(xc, xz, dbc, dt_w, dt_b, A, D, h)


class MambaLayer(OpRun):
    op_domain = DOMAIN

    def _run(self, x, conv_state, h, norm_w, in_w, conv_w, conv_b, x_w, dt_w, dt_b, A, D, out_w, eps):
        return mamba_layer(x, conv_state, h, norm_w, in_w, conv_w, conv_b, x_w, dt_w, dt_b, A, D, out_w, eps)


class MambaLogMelStep(OpRun):
    op_domain = DOMAIN

    def _run(self, history, audio, mel):
        return mamba_logmel_step(history, audio, mel)


class SkipSimplifiedLayerNormalization(OpRun):
    """ONNX Runtime's contrib op (domain ``com.microsoft``), as the fused chunk graph uses it:
    ``(input, skip, gamma)`` -> ``(RMSNorm(input + skip) · gamma, mean, inv_std, input + skip)``
    (mean and inv_std are not used and come out empty)."""

    op_domain = "com.microsoft"

    def _run(self, x, skip, gamma, epsilon=None):
        s = np.asarray(x, np.float32) + np.asarray(skip, np.float32)  # the float32 sum ORT gives
        d = s.astype(np.float64)
        u = d / np.sqrt(np.mean(d * d, axis=-1, keepdims=True) + epsilon) * np.asarray(gamma, np.float64)
        empty = np.zeros(0, np.float32)
        return u.astype(np.float32), empty, empty, s


class MambaEmbed(OpRun):
    op_domain = DOMAIN

    def _run(self, x, w, b):
        return (mamba_embed(x, w, b),)


class MambaHead(OpRun):
    op_domain = DOMAIN

    def _run(self, x, norm_w, eps, w, b):
        return (mamba_head(x, norm_w, eps, w, b),)


def uses_fused_ops(model: onnx.ModelProto) -> bool:
    return any(n.domain == DOMAIN for n in model.graph.node)


class FusedRunner:
    """Runs a graph with the fused ops through ``onnx.reference`` (slow, exact semantics)."""

    def __init__(self, path):
        path = Path(path)
        # external data (weights.bin) is resolved against the graph's folder
        self.model = onnx.load(str(path), load_external_data=True)
        self.ev = ReferenceEvaluator(self.model, new_ops=[MambaConv, MambaSsm, MambaLogMel, MambaLayer,
                                                           MambaLogMelStep, MambaEmbed, MambaHead,
                                                           SkipSimplifiedLayerNormalization])
        self.output_names = [o.name for o in self.model.graph.output]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.ev.run(None, feed)))
