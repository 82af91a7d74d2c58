"""Export mambatag weights to an ONNX model package (CONTRACT.md §2, §4–6), numpy + onnx only.

Usage::

    python -m models.export WEIGHTS.safetensors OUTDIR [--name N] [--version V] [--license L]
        [--thresholds JSON|FILE|NUMBER] [--description TEXT] [--chunk-frames T] [--chunk-scan S]
        [--bench]

writes ``OUTDIR/step.onnx`` and ``OUTDIR/chunk.onnx`` (``--chunk-frames 0``: step only) and copies
the weights to ``OUTDIR/weights.safetensors`` unless ``--no-weights``. ``--bench`` times both graphs
with onnxruntime on one thread at B=1 and B=16.

Graph design (measured choices, see ``shared/notes/mamba-onnx.md``):

- States are separate tensors per layer, d_inner innermost: ``state.layer<i>.conv [B, d_conv-1,
  d_inner]`` and ``state.layer<i>.ssm [B, d_state, d_inner]``; the new conv history is
  ``concat(old, x_new)[:, 1:]``; no stacked states, no Split/Concat of states.
- Front end: frame = concat(state.audio, audio); the Hann-windowed real DFT power as two MatMuls
  on the frame folded about its centre (``(E @ C)^2 + (O @ S)^2``, see :func:`frontend_matrices`),
  one MatMul with the mel filterbank, ``Log(mel + 1e-6)``; in float64 by default
  (``--frontend-precision``, see :func:`features`). The matrices (0.9 MB as float64) are not
  stored: they are built from a few hundred bytes of constants by ops that onnxruntime folds once
  when the session is created (any graph optimisation level >= basic), which keeps a tiny model
  package tiny. They reproduce ``frontend.py`` to the last bit or so.
- The residual stream is ``[B, 1, d_model]`` (T = 1), so every per-step tensor already has the rank
  the state update needs (no Unsqueeze/Flatten per layer); graph outputs are the producing nodes'
  outputs (no Identity copies).
- Folded at export time (in float64): the front-end normalisation into ``embed``; ``A = -exp(A_log)``
  transposed to [d_state, d_inner]; all weights pre-transposed for ``MatMul(x, W)``; ``in_proj`` as
  two MatMuls (x, z); ``x_proj`` as one MatMul + Split (``OPTIONS`` holds the measured knobs).
- RMSNorm is written as Pow/ReduceMean/Add/Sqrt/Div/Mul, the pattern onnxruntime fuses into one
  SimplifiedLayerNormalization kernel; SiLU as ``x * Sigmoid(x)`` (fused to QuickGelu); softplus
  as ``Relu(x) + Log(1 + Exp(-Abs(x)))`` (the Softplus kernel is ~4x slower per element).
- 128x4 (d_state 16), 1 thread, 2-core dev box, quiet: B=1 ≈120 µs per step, B=16 ≈410 µs per
  call (≈26 µs per stream); ``--frontend-precision float32``: ≈100 µs / ≈23 µs. At B=1 the cost is
  ~0.6 µs per kernel × ~150 kernels; at B=16 the elementwise passes over the SSM state dominate.

The graph-building helpers (:class:`GraphBuilder`, :func:`frontend_matrices`, :func:`features`,
:func:`block_projections`, …) work on any leading dims; the chunk graph (:func:`build_chunk_graph`,
CONTRACT §3) reuses them over ``[B, T, ·]`` and replaces only the per-step pieces: framing
(:func:`chunk_frames_of`), the causal conv (:func:`conv_chunk`) and the recurrence (:func:`scan_seq`,
an ONNX Scan whose body is the step update; or :func:`scan_chunked`, a stable sub-chunked scan).
``T`` is symbolic. Measured choices in :data:`CHUNK_OPTIONS` and ``models/README.md``: 128x4 at B=1
≈29 us/frame (≈4.5x the step graph), at B=16 ≈26 us/frame/stream (T=250).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models import frontend
from models.reference import RMS_EPS
from models.weights import MambaConfig, as_config, check_weights, load_metadata, load_weights

CONTRACT_VERSION = "1"
OPSET = 17
IR_VERSION = 8
BATCH = "B"
# the fused operators (CONTRACT.md §7; implemented by the Rust engine for CPU and CUDA and by
# models/fused_ops.py in numpy)
FUSED_DOMAIN = "ai.mambatag"
FUSED_VERSION = 1
MS_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib ops (the fused chunk graph's skip norms)


# --------------------------------------------------------------------------- graph building


class GraphBuilder:
    """Accumulates nodes/initialisers with unique names; every op returns its output name."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._names: dict[str, int] = {}
        self._consts: dict[tuple, str] = {}

    def name(self, base: str) -> str:
        n = self._names.get(base, 0)
        self._names[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def const(self, base: str, value, dtype=np.float32) -> str:
        """An initialiser; identical small constants (axes, scalars) are shared."""
        arr = np.array(np.asarray(value, dtype=dtype), order="C")
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 16 else None
        if key is not None and key in self._consts:
            return self._consts[key]
        nm = self.name(base)
        self.initializers.append(numpy_helper.from_array(arr, nm))
        if key is not None:
            self._consts[key] = nm
        return nm

    def ints(self, base: str, values) -> str:
        return self.const(base, np.asarray(values, dtype=np.int64), dtype=np.int64)

    def op(self, op_type: str, inputs, base: str | None = None, n_out: int = 1, outputs=None, **attrs):
        if outputs is None:
            b = base or op_type.lower()
            outputs = [self.name(b) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs),
                                           name=self.name("n_" + (base or op_type.lower())), **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def input(self, name: str, shape) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self._names[name] = 1
        return name

    def output(self, name: str, shape, src: str) -> None:
        """Expose ``src`` as graph output ``name``: renames the producing node's output (an
        Identity only when ``src`` is a graph input, an initialiser or already an output)."""
        if src != name:
            producer = [n for n in self.nodes if src in n.output]
            taken = {o.name for o in self.outputs} | {i.name for i in self.inputs}
            if producer and src not in taken:
                for n in self.nodes:
                    for lst in (n.input, n.output):
                        for j, v in enumerate(lst):
                            if v == src:
                                lst[j] = name
            else:
                self.op("Identity", [src], outputs=[name])
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))

    def model(self, graph_name: str, metadata: dict[str, str]) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs, self.initializers)
        opsets = [helper.make_opsetid("", OPSET)]
        if any(n.domain == FUSED_DOMAIN for n in self.nodes):
            opsets.append(helper.make_opsetid(FUSED_DOMAIN, FUSED_VERSION))
        if any(n.domain == MS_DOMAIN for n in self.nodes):
            opsets.append(helper.make_opsetid(MS_DOMAIN, 1))
        m = helper.make_model(g, opset_imports=opsets,
                              producer_name="mambatag.models.export", producer_version=CONTRACT_VERSION)
        m.ir_version = IR_VERSION
        helper.set_model_props(m, metadata)
        onnx.checker.check_model(m, full_check=True)
        return m

    # small op helpers -----------------------------------------------------------------------
    def matmul_add(self, x: str, w: str, b: str | None, base: str) -> str:
        y = self.op("MatMul", [x, w], base)
        return self.op("Add", [y, b], base + "_b") if b is not None else y

    def silu(self, x: str, base: str) -> str:
        return self.op("Mul", [x, self.op("Sigmoid", [x], base + "_sig")], base)

    def softplus(self, x: str, base: str, form: str = "relu_log1p") -> str:
        """Stable softplus; ``relu_log1p``: ``Relu(x) + Log(1 + Exp(-|x|))`` (7 cheap kernels),
        ``relu_logsig``: ``Relu(x) - Log(Sigmoid(|x|))`` (5), ``builtin``: ORT's slow Softplus."""
        if form == "builtin":
            return self.op("Softplus", [x], base)
        ax = self.op("Abs", [x], base + "_abs")
        if form == "relu_logsig":
            t = self.op("Log", [self.op("Sigmoid", [ax], base + "_sig")], base + "_log")
            return self.op("Sub", [self.op("Relu", [x], base + "_relu"), t], base)
        one = self.const(base + "_one", 1.0)
        t = self.op("Exp", [self.op("Neg", [ax], base + "_neg")], base + "_exp")
        t = self.op("Log", [self.op("Add", [t, one], base + "_1p")], base + "_log")
        return self.op("Add", [self.op("Relu", [x], base + "_relu"), t], base)

    def skip_rmsnorm(self, o: str, x: str, weight: np.ndarray, base: str, want_sum: bool = True):
        """``x + o`` and its RMSNorm in one node (ONNX Runtime's contrib
        SkipSimplifiedLayerNormalization, CPU and CUDA): returns ``(norm, x + o)`` (the sum
        ``None`` unless ``want_sum``). The chunk graph's residual add + the next RMSNorm, one pass
        over the stream instead of two."""
        outs = [self.name(base), "", "", self.name(base + "_resid") if want_sum else ""]
        self.op("SkipSimplifiedLayerNormalization", [o, x, self.const(base + "_w", weight)], base,
                outputs=outs, domain=MS_DOMAIN, epsilon=RMS_EPS)
        return outs[0], (outs[3] or None)

    def rmsnorm(self, x: str, weight: np.ndarray, base: str) -> str:
        """RMSNorm over the last axis in the pattern ORT fuses to SimplifiedLayerNormalization."""
        sq = self.op("Pow", [x, self.const(base + "_two", 2.0)], base + "_sq")
        ms = self.op("ReduceMean", [sq], base + "_ms", axes=[-1], keepdims=1)
        rt = self.op("Sqrt", [self.op("Add", [ms, self.const(base + "_eps", RMS_EPS)], base + "_add")], base + "_rt")
        nx = self.op("Div", [x, rt], base + "_div")
        return self.op("Mul", [nx, self.const(base + "_w", weight)], base)


# --------------------------------------------------------------------------- front end


def mel_constants():
    """float32 (lo, mid, hi) edge frequencies [64] and 1/(mid-lo), 1/(hi-mid) of the mel triangles."""
    pts = frontend.mel_points_hz()
    lo, mid, hi = pts[:-2], pts[1:-1], pts[2:]
    return lo, 1.0 / (mid - lo), hi, 1.0 / (hi - mid)


def frontend_matrices(g: GraphBuilder, dtype=np.float64) -> tuple[str, str, str]:
    """Build (as constant-foldable ops) the folded DFT matrices ``C, S [200, 257]`` and the mel
    filterbank ``M [257, 64]`` used by :func:`features`.

    With ``m = n - 200`` and the periodic Hann window symmetric about ``n = 200`` (``w[0] = 0``),
    ``|DFT_k|^2 = (sum_m E_m C[m, k])^2 + (sum_m O_m S[m, k])^2`` where ``E_m = x[200+m] + x[200-m]``,
    ``O_m = x[200+m] - x[200-m]`` (m = 0..199), ``C[m, k] = w[200+m] cos(2 pi m k / 512)`` (row 0
    halved) and ``S[m, k] = w[200+m] sin(2 pi m k / 512)``: half the multiply-adds of the plain
    [400, 514] DFT and fewer rounding steps. Computed in float64 from exact integer phase indices
    ``(m*k) mod 512``, then cast to ``dtype``.
    """
    half_win, nfft, nb, win = frontend.WIN // 2, frontend.N_FFT, frontend.N_BINS, frontend.WIN
    f64 = TensorProto.DOUBLE
    m = g.op("Range", [g.ints("fe_zero", 0), g.ints("fe_halfwin", half_win), g.ints("fe_one", 1)], "fe_m")
    k = g.op("Range", [g.ints("fe_zero", 0), g.ints("fe_nbins", nb), g.ints("fe_one", 1)], "fe_k")
    mcol = g.op("Unsqueeze", [m, g.ints("fe_ax1", [1])], "fe_mcol")  # [200, 1]
    mk = g.op("Mul", [mcol, g.op("Unsqueeze", [k, g.ints("fe_ax0", [0])], "fe_krow")], "fe_mk")
    idx = g.op("Mod", [mk, g.ints("fe_nfft", nfft)], "fe_idx")  # exact phase index, int64 [200, 257]
    phase = g.op("Mul", [g.op("Cast", [idx], "fe_idxf", to=f64), g.const("fe_dphi", 2 * math.pi / nfft, np.float64)],
                 "fe_phase")
    n = g.op("Cast", [g.op("Add", [mcol, g.ints("fe_halfwin", half_win)], "fe_n")], "fe_nf", to=f64)
    half = g.const("fe_half", 0.5, np.float64)
    wcos = g.op("Cos", [g.op("Mul", [n, g.const("fe_wphi", 2 * math.pi / win, np.float64)], "fe_wph")], "fe_wcos")
    hann = g.op("Sub", [half, g.op("Mul", [wcos, half], "fe_hcos")], "fe_hann")  # w[200+m], [200, 1]
    row0 = g.op("Cast", [g.op("Equal", [mcol, g.ints("fe_zero", 0)], "fe_is0")], "fe_is0f", to=f64)
    hann_c = g.op("Mul", [hann, g.op("Sub", [g.const("fe_onef", 1.0, np.float64),
                                             g.op("Mul", [row0, half], "fe_row0h")], "fe_rowscale")], "fe_hann_c")
    C = g.op("Mul", [g.op("Cos", [phase], "fe_cos"), hann_c], "fe_C64")
    S = g.op("Mul", [g.op("Sin", [phase], "fe_sin"), hann], "fe_S64")
    M = mel_matrix(g)
    if np.dtype(dtype) != np.float64:
        t = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        C, S, M = (g.op("Cast", [v], v[:-2], to=t) for v in (C, S, M))
    return C, S, M


def mel_matrix(g: GraphBuilder) -> str:
    """The HTK mel filterbank ``M [257, 64]`` (float64) as constant-foldable ops: triangles on the
    FFT bin frequencies (Hz)."""
    nb, nfft = frontend.N_BINS, frontend.N_FFT
    f64 = TensorProto.DOUBLE
    k = g.op("Range", [g.ints("fe_zero", 0), g.ints("fe_nbins", nb), g.ints("fe_one", 1)], "fe_mk_k")
    kcol = g.op("Unsqueeze", [k, g.ints("fe_ax1", [1])], "fe_mk_kcol")  # [257, 1]
    lo, inv_rise, hi, inv_fall = mel_constants()
    f = g.op("Mul", [g.op("Cast", [kcol], "fe_kf", to=f64), g.const("fe_binhz", frontend.SAMPLE_RATE / nfft, np.float64)],
             "fe_freq")
    rising = g.op("Mul", [g.op("Sub", [f, g.const("fe_lo", lo, np.float64)], "fe_flo"),
                          g.const("fe_irise", inv_rise, np.float64)], "fe_rise")
    falling = g.op("Mul", [g.op("Sub", [g.const("fe_hi", hi, np.float64), f], "fe_fhi"),
                           g.const("fe_ifall", inv_fall, np.float64)], "fe_fall")
    return g.op("Max", [g.op("Min", [rising, falling], "fe_tri"), g.const("fe_zerof", 0.0, np.float64)], "fe_M64")


def fused_features(g: GraphBuilder, full: str) -> str:
    """``MambaLogMel``: audio with history ``[B, 240 + T*160]`` -> log-mel ``[B, T, 64]`` (float32;
    framing, window, power spectrum, mel and log in one op, float64 inside, CONTRACT.md §7)."""
    return g.op("MambaLogMel", [full, mel_matrix(g)], "logmel", domain=FUSED_DOMAIN)


def features(g: GraphBuilder, frames: str, dtype=np.float64) -> str:
    """``[..., 400]`` float32 frames -> ``[..., 64]`` float32 log-mel (normalisation is folded into embed).

    With ``dtype=float64`` (default) the front end runs in double precision: ``ln(mel + 1e-6)``
    resolves powers ~1e-10 of full scale, which float32 sums of 400 products cannot (errors up to
    ~1e-3 in quiet bands of frames with a loud tone).
    """
    C, S, M = frontend_matrices(g, dtype)
    if np.dtype(dtype) != np.float32:
        frames = g.op("Cast", [frames], "fe_frames64", to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    h = frontend.WIN // 2
    ax = g.ints("fe_axm1", [-1])
    fwd = g.op("Slice", [frames, g.ints("fe_h", [h]), g.ints("fe_w", [frontend.WIN]), ax], "fe_fwd")  # x[200+m]
    bwd = g.op("Slice", [frames, g.ints("fe_h", [h]), g.ints("fe_zero1", [0]), ax, g.ints("fe_m1", [-1])],
               "fe_bwd")  # x[200-m]
    re = g.op("MatMul", [g.op("Add", [fwd, bwd], "fe_even"), C], "fe_re")
    im = g.op("MatMul", [g.op("Sub", [fwd, bwd], "fe_odd"), S], "fe_im")
    power = g.op("Add", [g.op("Mul", [re, re], "fe_re2"), g.op("Mul", [im, im], "fe_im2")], "fe_power")
    mel = g.op("MatMul", [power, M], "fe_melE")
    lm = g.op("Log", [g.op("Add", [mel, g.const("fe_logeps", frontend.LOG_EPS, dtype)], "fe_mel_eps")], "fe_logmel")
    if np.dtype(dtype) != np.float32:
        lm = g.op("Cast", [lm], "fe_logmel32", to=TensorProto.FLOAT)
    return g.op("Identity", [lm], "logmel")


def folded_embed(weights: dict) -> tuple[np.ndarray, np.ndarray]:
    """``embed((logmel - mean)/std)`` as ``logmel @ W + b``; returns (W [64, D], b [D]) in float64."""
    W = np.asarray(weights["embed.weight"], np.float64)  # [D, 64]
    b = np.asarray(weights["embed.bias"], np.float64)
    mean = np.asarray(weights["frontend.mean"], np.float64)
    std = np.asarray(weights["frontend.std"], np.float64)
    Wt = (W / std[None, :]).T
    return Wt, b - mean @ Wt


# --------------------------------------------------------------------------- Mamba block pieces


def layer_params(weights: dict, config: MambaConfig, i: int) -> dict[str, np.ndarray]:
    """Export-ready (pre-transposed, folded, float64) parameters of layer ``i``."""
    p = f"layers.{i}.mixer."
    E, N, R = config.d_inner, config.d_state, config.dt_rank
    f = lambda k: np.asarray(weights[p + k], np.float64)  # noqa: E731
    w_in = f("in_proj.weight")  # [2E, D]
    w_x = f("x_proj.weight")  # [R + 2N, E]
    return {
        "norm": np.asarray(weights[f"layers.{i}.norm.weight"], np.float64),
        "in_x": w_in[:E].T, "in_z": w_in[E:].T,  # [D, E]
        "conv_w": f("conv1d.weight")[:, 0, :].T,  # [K, E]
        "conv_b": f("conv1d.bias"),
        "x_dt": w_x[:R].T, "x_B": w_x[R:R + N].T, "x_C": w_x[R + N:].T,  # [E, R], [E, N], [E, N]
        "dt_w": f("dt_proj.weight").T, "dt_b": f("dt_proj.bias"),  # [R, E], [E]
        "A": -np.exp(f("A_log")).T,  # [N, E]
        "D": f("D"),
        "out": f("out_proj.weight").T,  # [E, D]
    }


# graph-shape knobs (measured in bench_variants; the defaults are the fastest found)
# merge_in: one in_proj MatMul + Split, so that the standard and the fused graphs (whose ops read
# x and z from the one [.., 2E] tensor) share the in_proj weight in weights.bin
OPTIONS = {"merge_in": True, "merge_xproj": True, "softplus": "relu_log1p"}


def block_projections(g: GraphBuilder, x: str, P: dict, pre: str) -> tuple[str, str]:
    """RMSNorm + in_proj of a residual block: ``x [..., D]`` -> ``(xin, z)`` each ``[..., E]``."""
    u = g.rmsnorm(x, P["norm"], pre + "norm")
    if OPTIONS["merge_in"]:
        xz = g.op("MatMul", [u, g.const(pre + "in_w", np.concatenate([P["in_x"], P["in_z"]], 1))], pre + "in_xz")
        return g.op("Split", [xz], pre + "in", n_out=2, axis=-1)
    return (g.op("MatMul", [u, g.const(pre + "in_x_w", P["in_x"])], pre + "in_x"),
            g.op("MatMul", [u, g.const(pre + "in_z_w", P["in_z"])], pre + "in_z"))


def ssm_inputs(g: GraphBuilder, xc: str, P: dict, pre: str) -> tuple[str, str, str]:
    """``xc [..., E]`` -> ``dt [..., E]`` (after softplus), ``B [..., N]``, ``C [..., N]``."""
    if OPTIONS["merge_xproj"]:
        W = np.concatenate([P["x_dt"], P["x_B"], P["x_C"]], 1)
        R, N = P["x_dt"].shape[1], P["x_B"].shape[1]
        dbc = g.op("MatMul", [xc, g.const(pre + "x_w", W)], pre + "dbc")
        dtl, Bm, Cm = g.op("Split", [dbc, g.ints(f"split_{R}_{N}_{N}", [R, N, N])], pre + "xsplit", n_out=3, axis=-1)
    else:
        dtl = g.op("MatMul", [xc, g.const(pre + "x_dt_w", P["x_dt"])], pre + "dt_low")
        Bm = g.op("MatMul", [xc, g.const(pre + "x_B_w", P["x_B"])], pre + "B")
        Cm = g.op("MatMul", [xc, g.const(pre + "x_C_w", P["x_C"])], pre + "C")
    dtr = g.matmul_add(dtl, g.const(pre + "dt_w", P["dt_w"]), g.const(pre + "dt_bias", P["dt_b"]), pre + "dt_raw")
    return g.softplus(dtr, pre + "dt", OPTIONS["softplus"]), Bm, Cm


def block_output(g: GraphBuilder, x: str, y: str, xc: str, z: str, P: dict, pre: str) -> str:
    """``y + D*xc``, gate with SiLU(z), out_proj, residual add: returns the new ``x``."""
    y = g.op("Add", [y, g.op("Mul", [xc, g.const(pre + "D", P["D"])], pre + "Dx")], pre + "y_D")
    y = g.op("Mul", [y, g.silu(z, pre + "z_silu")], pre + "gated")
    return g.op("Add", [x, g.op("MatMul", [y, g.const(pre + "out_w", P["out"])], pre + "out")], pre + "resid")


def conv_step(g: GraphBuilder, xin: str, conv_state: str, P: dict, pre: str) -> tuple[str, str]:
    """One step of the causal depthwise conv + SiLU.

    ``xin [B, 1, E]``, ``conv_state [B, K-1, E]`` -> ``(xc [B, 1, E], conv_next [B, K-1, E])``.
    """
    K = P["conv_w"].shape[0]
    ax1 = g.ints("ax1", [1])
    window = g.op("Concat", [conv_state, xin], pre + "conv_win", axis=1)  # [B, K, E]
    nxt = g.op("Slice", [window, g.ints("s1", [1]), g.ints(pre + "sK", [K]), ax1], pre + "conv_next")
    acc = g.op("ReduceSum", [g.op("Mul", [window, g.const(pre + "conv_w", P["conv_w"])], pre + "conv_mul"), ax1],
               pre + "conv_sum", keepdims=1)
    acc = g.op("Add", [acc, g.const(pre + "conv_b", P["conv_b"])], pre + "conv")
    return g.silu(acc, pre + "xc"), nxt


def ssm_step(g: GraphBuilder, xc: str, dt: str, Bm: str, Cm: str, h: str, P: dict, pre: str) -> tuple[str, str]:
    """One selective-SSM step with the state ``h [B, N, E]`` (d_inner innermost).

    ``xc, dt [B, 1, E]``, ``Bm, Cm [B, 1, N]``: ``h' = exp(dt*A) * h + B^T (dt*xc)``, ``y = C h'``;
    returns ``(y [B, 1, E], h')``.
    """
    N = P["A"].shape[0]
    dA = g.op("Exp", [g.op("Mul", [dt, g.const(pre + "A", P["A"])], pre + "dtA")], pre + "dA")  # [B, N, E]
    dtx = g.op("Mul", [dt, xc], pre + "dtx")  # [B, 1, E]
    Bcol = g.op("Reshape", [Bm, g.ints(f"shape_m1_{N}_1", [-1, N, 1])], pre + "Bcol")  # [B, N, 1]
    dBx = g.op("Mul", [Bcol, dtx], pre + "dBx")  # [B, N, E]
    h2 = g.op("Add", [g.op("Mul", [dA, h], pre + "dAh"), dBx], pre + "h")
    y = g.op("MatMul", [Cm, h2], pre + "y")  # [B, 1, N] @ [B, N, E] -> [B, 1, E]
    return y, h2


def fused_layer(g: GraphBuilder, x: str, conv_state: str, h0: str, P: dict, pre: str,
                pending: str | None = None, defer: bool = False):
    """One residual Mamba block with the fused ops (any ``T``): ``x [B, T, D]`` -> ``(x', conv', h')``.

    RMSNorm, ``in_proj`` (one MatMul to ``xz [B, T, 2E]``), ``MambaConv`` (reads x = channels
    ``[0, E)``), ``x_proj`` (one MatMul to ``dbc [B, T, R + 2N]``), ``MambaSsm`` (dt_proj, softplus,
    scan, D skip, SiLU(z) gate), ``out_proj`` and the residual add: 7 nodes instead of ~36.
    ``defer`` (the chunk graph): the residual add is left to the next norm, which adds
    ``pending`` (the previous block's out_proj) to ``x`` and normalises in one node
    (:meth:`GraphBuilder.skip_rmsnorm`); returns ``(x, out_proj, conv', h')`` then.
    """
    if pending is None:
        u = g.rmsnorm(x, P["norm"], pre + "norm")
    else:
        u, x = g.skip_rmsnorm(pending, x, P["norm"], pre + "norm")
    xz = g.op("MatMul", [u, g.const(pre + "in_w", np.concatenate([P["in_x"], P["in_z"]], 1))], pre + "in_xz")
    xc, conv_next = g.op("MambaConv", [xz, conv_state, g.const(pre + "conv_w", P["conv_w"]),
                                      g.const(pre + "conv_b", P["conv_b"])], pre + "conv", n_out=2,
                         domain=FUSED_DOMAIN)
    W = np.concatenate([P["x_dt"], P["x_B"], P["x_C"]], 1)
    dbc = g.op("MatMul", [xc, g.const(pre + "x_w", W)], pre + "dbc")
    y, h = g.op("MambaSsm", [xc, xz, dbc, g.const(pre + "dt_w", P["dt_w"]), g.const(pre + "dt_bias", P["dt_b"]),
                             g.const(pre + "A", P["A"]), g.const(pre + "D", P["D"]), h0], pre + "ssm", n_out=2,
                domain=FUSED_DOMAIN)
    out = g.op("MatMul", [y, g.const(pre + "out_w", P["out"])], pre + "out")
    if defer:
        return x, out, conv_next, h
    return g.op("Add", [x, out], pre + "resid"), conv_next, h


def layer_op(g: GraphBuilder, x: str, conv_state: str, h0: str, P: dict, pre: str) -> tuple[str, str, str]:
    """One residual Mamba block for one hop as the single ``MambaLayer`` op: ``x [B, D]`` ->
    ``(x', conv', h')`` (the layer step graph, ``step-layer.onnx``)."""
    W = np.concatenate([P["x_dt"], P["x_B"], P["x_C"]], 1)
    ins = [x, conv_state, h0, g.const(pre + "norm_w", P["norm"]),
           g.const(pre + "in_w", np.concatenate([P["in_x"], P["in_z"]], 1)),
           g.const(pre + "conv_w", P["conv_w"]), g.const(pre + "conv_b", P["conv_b"]), g.const(pre + "x_w", W),
           g.const(pre + "dt_w", P["dt_w"]), g.const(pre + "dt_bias", P["dt_b"]), g.const(pre + "A", P["A"]),
           g.const(pre + "D", P["D"]), g.const(pre + "out_w", P["out"]), g.const("norm_eps1", np.array([RMS_EPS]))]
    # outputs 4 and 5 (xz, y: the in_proj and gated SSM outputs) are intermediates that the graph
    # does not read; the CUDA kernel uses them as its scratch between launches
    return tuple(g.op("MambaLayer", ins, pre + "layer", n_out=5, domain=FUSED_DOMAIN)[:3])


def mamba_layers(g: GraphBuilder, x: str, states: dict, nexts: dict, weights: dict, c, fused,
                 conv_fn, scan_fn, skip_norm: bool = False):
    """All residual Mamba blocks of a graph: :func:`fused_layer` each (``fused`` true),
    :func:`layer_op` each (``fused == "layer"``), or the standard ops with
    ``conv_fn`` (:func:`conv_step` / :func:`conv_chunk`) and ``scan_fn(g, xc, dt, B, C, h0, P,
    pre) -> (y, h')``. Puts the next states into ``nexts``; returns ``(x, pending)``: the new
    residual stream, and ``None`` or, with ``skip_norm`` (fused graphs), the last block's
    out_proj, whose residual add is left to the head's norm (each earlier add is fused into the
    next block's norm)."""
    pending = None
    for i in range(c.n_layers):
        pre, P = f"l{i}_", layer_params(weights, c, i)
        conv, ssm = f"state.layer{i}.conv", f"state.layer{i}.ssm"
        if fused and skip_norm:
            x, pending, nexts[conv], nexts[ssm] = fused_layer(g, x, states[conv], states[ssm], P, pre,
                                                              pending=pending, defer=True)
            continue
        if fused:
            one = layer_op if fused == "layer" else fused_layer
            x, nexts[conv], nexts[ssm] = one(g, x, states[conv], states[ssm], P, pre)
            continue
        xin, z = block_projections(g, x, P, pre)
        xc, nexts[conv] = conv_fn(g, xin, states[conv], P, pre)
        dt, Bm, Cm = ssm_inputs(g, xc, P, pre)
        y, nexts[ssm] = scan_fn(g, xc, dt, Bm, Cm, states[ssm], P, pre)
        x = block_output(g, x, y, xc, z, P, pre)
    return x, pending


def head(g: GraphBuilder, x: str, weights: dict, pending: str | None = None) -> str:
    """norm_f + head + sigmoid: ``x [..., D]`` -> probabilities ``[..., C]`` (``pending``: the
    last block's out_proj, added to ``x`` by the norm, :meth:`GraphBuilder.skip_rmsnorm`)."""
    norm_w = np.asarray(weights["norm_f.weight"], np.float64)
    if pending is None:
        u = g.rmsnorm(x, norm_w, "norm_f")
    else:
        u, _ = g.skip_rmsnorm(pending, x, norm_w, "norm_f", want_sum=False)
    logits = g.matmul_add(u, g.const("head_w", np.asarray(weights["head.weight"], np.float64).T),
                          g.const("head_b", weights["head.bias"]), "logits")
    return g.op("Sigmoid", [logits], "probs")


# --------------------------------------------------------------------------- graphs


def state_shapes(config) -> dict[str, list[int]]:
    """Trailing (non-batch) shapes of every state of the exported graphs, in input order."""
    c = as_config(config)
    s = {"state.audio": [frontend.HISTORY]}
    for i in range(c.n_layers):
        s[f"state.layer{i}.conv"] = [c.d_conv - 1, c.d_inner]
        s[f"state.layer{i}.ssm"] = [c.d_state, c.d_inner]
    return s


def build_step_graph(weights: dict, config, metadata: dict[str, str],
                     frontend_dtype=np.float64, fused: bool | str = False) -> onnx.ModelProto:
    """The step graph: ``audio [B, 160]`` + states -> ``scores [B, C]`` + next states.
    ``fused``: each layer's conv and selective-state update as the ``ai.mambatag`` ops;
    ``"layer"``: each whole layer as one ``MambaLayer`` op, and the front end, embedding and head
    as ``MambaLogMelStep``, ``MambaEmbed`` and ``MambaHead``."""
    c = as_config(config)
    check_weights(weights, c)
    g = GraphBuilder()
    audio = g.input("audio", [BATCH, frontend.HOP])
    shapes = state_shapes(c)
    states = {k: g.input(k, [BATCH] + v) for k, v in shapes.items()}

    We, be = folded_embed(weights)
    if fused == "layer":
        # the front end with its history, the embedding and (below) the head as one op each: a
        # GPU step at batch 1 is a chain of small launches, and these replace eight of ORT's
        # (concat, slice; GEMV, bias add; norm, GEMM, bias add, sigmoid)
        lm, audio_next = g.op("MambaLogMelStep", [states["state.audio"], audio, mel_matrix(g)], "logmel2d",
                              n_out=2, domain=FUSED_DOMAIN)
        x = g.op("MambaEmbed", [lm, g.const("embed_w", We), g.const("embed_b", be)], "embed", domain=FUSED_DOMAIN)
    else:
        frame = g.op("Concat", [states["state.audio"], audio], "frame", axis=1)  # [B, 400]
        audio_next = g.op("Slice", [frame, g.ints("hist_start", [frontend.HOP]), g.ints("hist_end", [frontend.WIN]),
                                    g.ints("hist_axis", [1])], "audio_hist")
        if fused:
            # a 2-D residual stream [B, D] (the ops take [B, X] as T = 1): ORT then fuses each
            # MatMul + Add (embedding, out_proj + residual, head) into one Gemm
            lm = g.op("Reshape", [fused_features(g, frame),
                                  g.ints(f"shape_m1_{frontend.N_MELS}", [-1, frontend.N_MELS])], "logmel2d")
            x = g.matmul_add(lm, g.const("embed_w", We), g.const("embed_b", be), "embed")
        else:
            lm = features(g, frame, frontend_dtype)
            x = g.matmul_add(lm, g.const("embed_w", We), g.const("embed_b", be), "embed")
            # the residual stream is [B, 1, D] (T = 1) so that every per-step tensor already has
            # the rank the state update needs: no Unsqueeze/Flatten per layer
            x = g.op("Unsqueeze", [x, g.ints("ax1", [1])], "x3")

    nexts = {"state.audio": audio_next}
    x, _ = mamba_layers(g, x, states, nexts, weights, c, fused, conv_step, ssm_step)

    if fused == "layer":
        scores = g.op("MambaHead", [x, g.const("norm_f_w", np.asarray(weights["norm_f.weight"], np.float64)),
                                    g.const("norm_eps1", np.array([RMS_EPS])),
                                    g.const("head_w", np.asarray(weights["head.weight"], np.float64).T),
                                    g.const("head_b", weights["head.bias"])], "scores2d", domain=FUSED_DOMAIN)
    else:
        probs = head(g, x, weights)  # [B, 1, C]
        scores = g.op("Reshape", [probs, g.ints("shape_scores", [-1, c.n_classes])], "scores2d")
    g.output("scores", [BATCH, c.n_classes], scores)
    for k, v in shapes.items():
        g.output(k + ".next", [BATCH] + v, nexts[k])
    return g.model("mambatag_step", metadata)


# --------------------------------------------------------------------------- chunk graph

INT_MAX = 2**62  # Slice "to the end"


def _shape_dim(g: GraphBuilder, x: str, axis: int, base: str) -> str:
    """``x.shape[axis]`` as an int64 ``[1]`` tensor."""
    return g.op("Slice", [g.op("Shape", [x], base + "_shape"), g.ints(f"dim{axis}", [axis]),
                          g.ints(f"dim{axis}e", [axis + 1])], base)


def chunk_frames_of(g: GraphBuilder, full: str) -> str:
    """``[B, 240 + T*160]`` audio with history -> frames ``[B, T, 400]`` (frame t = samples
    ``[t*160, t*160 + 400)``): pad 80 zeros in front so the length is ``(T+2)*160``, view as hops
    ``H [B, T+2, 160]``; frame t = ``H[t, 80:] ++ H[t+1] ++ H[t+2]``."""
    hop, win = frontend.HOP, frontend.WIN
    lead = 3 * hop - win  # 80
    padded = g.op("Pad", [full, g.ints("fr_pads", [0, lead, 0, 0])], "fr_padded")
    H = g.op("Reshape", [padded, g.ints("fr_hops_shape", [0, -1, hop])], "fr_hops")  # [B, T+2, 160]
    a = g.op("Slice", [H, g.ints("fr_a_s", [0, lead]), g.ints("fr_a_e", [-2, hop]), g.ints("ax12", [1, 2])], "fr_a")
    ax1 = g.ints("ax1", [1])
    b = g.op("Slice", [H, g.ints("one1", [1]), g.ints("m1_1", [-1]), ax1], "fr_b")
    c = g.op("Slice", [H, g.ints("two1", [2]), g.ints("intmax", [INT_MAX]), ax1], "fr_c")
    return g.op("Concat", [a, b, c], "frames", axis=-1)  # [B, T, 400]


def conv_chunk(g: GraphBuilder, xin: str, conv_state: str, P: dict, pre: str) -> tuple[str, str]:
    """Causal depthwise conv + SiLU over a chunk: ``xin [B, T, E]``, ``conv_state [B, K-1, E]`` ->
    ``(xc [B, T, E], conv_next [B, K-1, E])`` (K shifted slices of ``concat(state, xin)``)."""
    K = P["conv_w"].shape[0]
    ax1 = g.ints("ax1", [1])
    xpad = g.op("Concat", [conv_state, xin], pre + "conv_pad", axis=1)  # [B, T+K-1, E]
    acc = None
    for k in range(K):
        end = k - (K - 1) if k < K - 1 else INT_MAX
        sl = g.op("Slice", [xpad, g.ints(f"i{k}", [k]), g.ints(f"i{end}", [end]), ax1], pre + f"conv_s{k}")
        term = g.op("Mul", [sl, g.const(pre + f"conv_w{k}", P["conv_w"][k])], pre + f"conv_m{k}")
        acc = term if acc is None else g.op("Add", [acc, term], pre + f"conv_a{k}")
    acc = g.op("Add", [acc, g.const(pre + "conv_b", P["conv_b"])], pre + "conv")
    nxt = g.op("Slice", [xpad, g.ints(f"i{-(K - 1)}", [-(K - 1)]), g.ints("intmax", [INT_MAX]), ax1], pre + "conv_next")
    return g.silu(acc, pre + "xc"), nxt


def scan_seq(g: GraphBuilder, xc: str, dt: str, Bm: str, Cm: str, h0: str, P: dict, pre: str) -> tuple[str, str]:
    """Selective scan as an ONNX ``Scan`` over time (body = the step graph's update, 6 ops).

    ``xc, dt [B, T, E]``, ``Bm, Cm [B, T, N]``, ``h0 [B, N, E]`` -> ``(y [B, T, E], h_T)``.
    """
    N, E = P["A"].shape
    dtx = g.op("Mul", [dt, xc], pre + "dtx")
    dt4 = g.op("Unsqueeze", [dt, g.ints("ax2", [2])], pre + "dt4")  # [B, T, 1, E]
    dtx4 = g.op("Unsqueeze", [dtx, g.ints("ax2", [2])], pre + "dtx4")
    B4 = g.op("Unsqueeze", [Bm, g.ints("ax3", [3])], pre + "B4")  # [B, T, N, 1]
    C4 = g.op("Unsqueeze", [Cm, g.ints("ax2", [2])], pre + "C4")  # [B, T, 1, N]
    b = GraphBuilder()
    F = TensorProto.FLOAT
    vi = helper.make_tensor_value_info
    b.inputs = [vi("h", F, None), vi("dt_t", F, None), vi("dtx_t", F, None), vi("B_t", F, None), vi("C_t", F, None)]
    dA = b.op("Exp", [b.op("Mul", ["dt_t", b.const("A", P["A"])], "dtA")], "dA")
    h2 = b.op("Add", [b.op("Mul", [dA, "h"], "dAh"), b.op("Mul", ["B_t", "dtx_t"], "dBx")], "h_out")
    y = b.op("MatMul", ["C_t", h2], "y_t")
    body = helper.make_graph(b.nodes, pre + "scan_body", b.inputs, [vi(h2, F, None), vi(y, F, None)], b.initializers)
    hT, y4 = g.op("Scan", [h0, dt4, dtx4, B4, C4], pre + "scan", n_out=2, body=body, num_scan_inputs=4,
                  scan_input_axes=[1, 1, 1, 1], scan_output_axes=[1])  # y4 [B, T, 1, E]
    y = g.op("Reshape", [y4, g.ints(f"shape_0_m1_{E}", [0, -1, E])], pre + "y_seq")
    return y, hT


def _pad_time(g: GraphBuilder, x: str, T1: str, mult: int, pre: str, nm: str) -> str:
    """Pad axis 1 of ``x [B, T, W]`` with zeros to a multiple of ``mult``."""
    m = g.ints(f"L{mult}", [mult])
    padn = g.op("Mod", [g.op("Sub", [m, g.op("Mod", [T1, m], pre + f"Tmod{mult}")], pre + f"Lm{mult}"), m],
                pre + f"padn{mult}")
    pads = g.op("Concat", [g.ints("zeros4", [0, 0, 0, 0]), padn, g.ints("zero1", [0])], pre + f"pads{mult}", axis=0)
    return g.op("Pad", [x, pads], pre + nm + "_pad")


def scan_chunked(g: GraphBuilder, xc: str, dt: str, Bm: str, Cm: str, h0: str, P: dict, pre: str,
                 L: int = 16) -> tuple[str, str]:
    """Chunked selective scan: sub-chunks of ``L`` frames processed side by side.

    ``T`` is padded to ``nC * L`` with ``dt = 0`` frames (decay 1, no input). Pass 1 runs the
    recurrence from zero state inside all ``nC`` sub-chunks at once (``L`` unrolled steps over
    ``[B, nC, N, E]``), giving each frame's zero-start output and each sub-chunk's end state.
    A ``Scan`` over the ``nC`` sub-chunks carries the state across boundaries
    (``c_k = exp(A sum(dt_k)) c_{k-1} + end_k``, from ``h0``). Pass 2 adds each frame's share of
    its sub-chunk's carried-in state, ``C_t (prod_{j<=t} exp(dt_j A)) c``, again unrolled over ``L``.
    Only ``exp(A * dt-sum)`` of non-negative ``dt`` sums is ever taken (values in (0, 1]), never
    ``exp(-cumsum)``: stable for any ``dt``. Work is ~1.5x the sequential update's element passes;
    it wins only where kernel dispatch dominates (tiny models at B=1), see ``CHUNK_OPTIONS``.
    """
    N, E = P["A"].shape
    A = g.const(pre + "A", P["A"])
    T1 = _shape_dim(g, xc, 1, pre + "T")

    def split4(x: str, width: int, nm: str, transpose: bool = False) -> list[str]:
        xp = _pad_time(g, x, T1, L, pre, nm)
        x4 = g.op("Reshape", [xp, g.ints(f"shape_0_m1_{L}_{width}", [0, -1, L, width])], pre + nm + "_4")
        axis = 2
        if transpose:  # [B, nC, width, L]
            x4 = g.op("Transpose", [x4], pre + nm + "_T", perm=[0, 1, 3, 2])
            axis = 3
        return g.op("Split", [x4], pre + nm + "_j", n_out=L, axis=axis) if L > 1 else [x4]

    dtx = g.op("Mul", [dt, xc], pre + "dtx")
    dt_j = split4(dt, E, "dt")  # [B, nC, 1, E]
    dtx_j = split4(dtx, E, "dtx")  # [B, nC, 1, E]
    B_j = split4(Bm, N, "Bm", transpose=True)  # [B, nC, N, 1]
    C_j = split4(Cm, N, "Cm")  # [B, nC, 1, N]
    # pass 1: zero-start recurrence in every sub-chunk
    dA, y0, h = [], [], None
    for j in range(L):
        dAj = g.op("Exp", [g.op("Mul", [dt_j[j], A], pre + f"dtA{j}")], pre + f"dA{j}")
        dA.append(dAj)
        dBx = g.op("Mul", [B_j[j], dtx_j[j]], pre + f"dBx{j}")
        h = dBx if h is None else g.op("Add", [g.op("Mul", [dAj, h], pre + f"dAh{j}"), dBx], pre + f"h{j}")
        y0.append(g.op("MatMul", [C_j[j], h], pre + f"y0_{j}"))
    # carry across sub-chunks: Scan over nC
    dtsum = g.op("Sum", dt_j, pre + "dtsum") if L > 1 else dt_j[0]
    a = g.op("Exp", [g.op("Mul", [dtsum, A], pre + "sumA")], pre + "chunk_decay")  # [B, nC, N, E]
    b = GraphBuilder()
    F = TensorProto.FLOAT
    vi = helper.make_tensor_value_info
    b.inputs = [vi("c", F, None), vi("a_k", F, None), vi("e_k", F, None)]
    c2 = b.op("Add", [b.op("Mul", ["a_k", "c"], "ac"), "e_k"], "c_out")
    cin = b.op("Identity", ["c"], "c_in")
    body = helper.make_graph(b.nodes, pre + "carry_body", b.inputs, [vi(c2, F, None), vi(cin, F, None)])
    hT, carries = g.op("Scan", [h0, a, h], pre + "carry", n_out=2, body=body, num_scan_inputs=2,
                       scan_input_axes=[1, 1], scan_output_axes=[1])  # carries [B, nC, N, E]
    # pass 2: add the decayed carried-in state
    ys, gcar = [], carries
    for j in range(L):
        gcar = g.op("Mul", [dA[j], gcar], pre + f"g{j}")
        ys.append(g.op("Add", [y0[j], g.op("MatMul", [C_j[j], gcar], pre + f"yc{j}")], pre + f"y{j}"))
    y4 = g.op("Concat", ys, pre + "y4", axis=2) if L > 1 else ys[0]  # [B, nC, L, E]
    y = g.op("Reshape", [y4, g.ints(f"shape_0_m1_{E}", [0, -1, E])], pre + "y_pad")
    y = g.op("Slice", [y, g.ints("zero1", [0]), T1, g.ints("ax1", [1])], pre + "y_seq")
    return y, hT


# chunk-graph knobs. "scan": "scan" (ONNX Scan over frames, default) or "chunked" (scan_chunked with
# sub-chunks of "sub_chunk" frames). Measured (1 thread, CPU time per frame, T = 250/1000, 2-core box,
# 2026-11-29): 128x4 Scan 29 us at B=1, 26-30 us/stream at B=16; chunked 31-39 / 42-52; test-tiny
# Scan 9.5 / 5.9, chunked 6-8 / 6.3-7.6. Also tried and dropped (never faster than Scan on 128x4):
# Scan with 4 or 8 steps unrolled per iteration (30-31 / 27-31), decays and inputs precomputed as
# [B, T, N, E] tensors outside the Scan (41-52 / 42-52), 8 lanes of T/8 frames with a two-pass
# carry (34 / 38-43).
CHUNK_OPTIONS = {"scan": "scan", "sub_chunk": 16, "skip_norm": True}
CHUNK_FRAMES = 250  # preferred T written to mambatag.chunk_frames (see models/README.md)


def build_chunk_graph(weights: dict, config, metadata: dict[str, str], frontend_dtype=np.float64,
                      fused: bool = False, **options) -> onnx.ModelProto:
    """The chunk graph: ``audio [B, T*160]`` + states -> ``scores [B, T, C]`` + states after the
    last hop. ``T`` is symbolic (any ``T >= 1`` per call)."""
    opt = {**CHUNK_OPTIONS, **options}
    c = as_config(config)
    check_weights(weights, c)
    g = GraphBuilder()
    audio = g.input("audio", [BATCH, "samples"])
    shapes = state_shapes(c)
    states = {k: g.input(k, [BATCH] + v) for k, v in shapes.items()}

    full = g.op("Concat", [states["state.audio"], audio], "audio_full", axis=1)  # [B, 240 + T*160]
    audio_next = g.op("Slice", [full, g.ints("hist_neg", [-frontend.HISTORY]), g.ints("intmax", [INT_MAX]),
                                g.ints("ax1", [1])], "audio_hist")
    lm = fused_features(g, full) if fused else features(g, chunk_frames_of(g, full), frontend_dtype)  # [B, T, 64]
    We, be = folded_embed(weights)
    x = g.matmul_add(lm, g.const("embed_w", We), g.const("embed_b", be), "embed")  # [B, T, D]

    nexts = {"state.audio": audio_next}
    scan = None
    if not fused:
        if opt["scan"] == "scan":
            scan = scan_seq
        elif opt["scan"] == "chunked":
            def scan(*args):
                return scan_chunked(*args, int(opt["sub_chunk"]))
        else:
            raise ValueError(f"unknown chunk scan {opt['scan']!r} (scan or chunked)")
    x, pending = mamba_layers(g, x, states, nexts, weights, c, fused, conv_chunk, scan,
                              skip_norm=bool(opt["skip_norm"]))

    g.output("scores", [BATCH, "T", c.n_classes], head(g, x, weights, pending))
    for k, v in shapes.items():
        g.output(k + ".next", [BATCH] + v, nexts[k])
    return g.model("mambatag_chunk", metadata)


# --------------------------------------------------------------------------- metadata & CLI


def parse_thresholds(spec, labels: list[str]) -> dict[str, float]:
    """``None`` -> 0.5 each; a number -> that for each; JSON object text or a .json file path."""
    if spec is None:
        spec = 0.5
    if isinstance(spec, dict):
        th = spec
    elif isinstance(spec, (int, float)):
        th = {l: float(spec) for l in labels}
    else:
        s = str(spec).strip()
        try:
            th = {l: float(s) for l in labels}
        except ValueError:
            th = json.loads(s if s.startswith("{") else Path(s).read_text())
    if not isinstance(th, dict):
        raise ValueError("thresholds must be a JSON object label -> threshold")
    missing = [l for l in labels if l not in th]
    extra = [k for k in th if k not in labels]
    if missing or extra:
        raise ValueError(f"thresholds: missing labels {missing}, unknown labels {extra}")
    bad = {k: v for k, v in th.items() if not (0.0 < float(v) < 1.0)}
    if bad:
        raise ValueError(f"thresholds must be in (0, 1): {bad}")
    return {l: float(th[l]) for l in labels}


def make_metadata(config, graph: str, name: str, version: str, license: str,
                  thresholds=None, description: str | None = None,
                  chunk_frames: int | None = None) -> dict[str, str]:
    """The ``mambatag.*`` metadata_props of CONTRACT.md §6."""
    c = as_config(config)
    for k, v in (("name", name), ("version", version), ("license", license)):
        if not v or not str(v).strip():
            raise ValueError(f"model {k} must not be empty")
    md = {
        "mambatag.contract": CONTRACT_VERSION,
        "mambatag.graph": graph,
        "mambatag.sample_rate": str(frontend.SAMPLE_RATE),
        "mambatag.hop": str(frontend.HOP),
        "mambatag.labels": json.dumps(c.labels),
        "mambatag.thresholds": json.dumps(parse_thresholds(thresholds, c.labels)),
        "mambatag.model_name": str(name),
        "mambatag.model_version": str(version),
        "mambatag.license": str(license),
    }
    if description:
        md["mambatag.description"] = str(description)
    if graph == "chunk":
        if not chunk_frames:
            raise ValueError("a chunk graph needs chunk_frames")
        md["mambatag.chunk_frames"] = str(int(chunk_frames))
    return md


SHARED_WEIGHTS = "weights.bin"
EXTERNAL_MIN_BYTES = 1024


def _all_initializers(graph):
    """Initializers of a graph and of every subgraph (Scan bodies)."""
    out = list(graph.initializer)
    for node in graph.node:
        for at in node.attribute:
            if at.type == onnx.AttributeProto.GRAPH:
                out += _all_initializers(at.g)
            for g in at.graphs:
                out += _all_initializers(g)
    return out


def share_weights(models: dict[Path, onnx.ModelProto], outdir: Path) -> Path:
    """Move every initializer of at least :data:`EXTERNAL_MIN_BYTES` into one ``weights.bin``
    that all ``models`` reference as ONNX external data, storing identical tensors once (the step
    and chunk graphs share ~1.8 MB of the default model's 1.9 MB). Offsets are 64-byte aligned.
    The models are saved to their paths; returns the weights file."""
    import hashlib

    blob = bytearray()
    seen: dict[bytes, int] = {}
    for model in models.values():
        for t in _all_initializers(model.graph):
            if not t.HasField("raw_data") or len(t.raw_data) < EXTERNAL_MIN_BYTES:
                continue
            data = bytes(t.raw_data)
            key = hashlib.sha256(data).digest()
            if key not in seen:
                blob.extend(b"\0" * ((-len(blob)) % 64))
                seen[key] = len(blob)
                blob.extend(data)
            t.ClearField("raw_data")
            t.data_location = onnx.TensorProto.EXTERNAL
            del t.external_data[:]
            for k, v in (("location", SHARED_WEIGHTS), ("offset", str(seen[key])), ("length", str(len(data)))):
                e = t.external_data.add()
                e.key, e.value = k, v
    path = outdir / SHARED_WEIGHTS
    path.write_bytes(bytes(blob))
    for p, model in models.items():
        onnx.save(model, str(p))
    return path


def export_package(weights_path, outdir, name: str | None = None, version: str = "0.0.0",
                   license: str = "unspecified", thresholds=None, description: str | None = None,
                   chunk_frames: int | None = None, copy_weights: bool = True,
                   frontend_precision: str = "float64", chunk_scan: str | None = None,
                   shared_weights: bool = False, fused: bool = True) -> Path:
    """Write ``outdir/step.onnx``, ``outdir/chunk.onnx`` (and ``weights.safetensors``); returns the
    step.onnx path.

    ``chunk_frames``: the preferred ``T`` stored in the chunk graph's metadata (``None``:
    :data:`CHUNK_FRAMES`; ``0``: write no chunk graph, and remove a stale one). The graph itself
    takes any ``T``. ``chunk_scan``: ``scan`` (default) or ``chunked`` (see :data:`CHUNK_OPTIONS`).

    ``fused``: also write ``step-fused.onnx`` / ``chunk-fused.onnx``, the same graphs with each
    layer's conv and selective-state update as the ``ai.mambatag`` fused ops, and
    ``step-layer.onnx``, the step graph with each layer as one ``MambaLayer`` op (CONTRACT.md §7).

    ``shared_weights``: store the graphs' weights once in ``outdir/weights.bin`` (ONNX external
    data) instead of inside each ``.onnx`` (see :func:`share_weights`).

    ``frontend_precision``: ``float64`` (default; matches the reference to ~1e-6 even next to loud
    tones) or ``float32`` (faster by ~20 us/frame at B=1, ~3 us/stream at B=16, but log-mel errors up
    to ~1e-3 in near-silent bands of loud frames: 4e-5 score error on test-tiny instead of 6e-7).
    """
    weights, config = load_weights(weights_path)
    if thresholds is None:  # train.py stores tuned thresholds in the weights' metadata
        thresholds = load_metadata(weights_path).get("thresholds")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    name = name or outdir.resolve().name
    md = make_metadata(config, "step", name, version, license, thresholds, description)
    model = build_step_graph(weights, config, md, np.dtype(frontend_precision).type)
    step_path = outdir / "step.onnx"
    graphs = {step_path: model}
    chunk_frames = CHUNK_FRAMES if chunk_frames is None else int(chunk_frames)
    chunk_path = outdir / "chunk.onnx"
    if chunk_frames < 0:
        raise ValueError("chunk_frames must be >= 0")
    if chunk_frames:
        cmd = make_metadata(config, "chunk", name, version, license, thresholds, description, chunk_frames)
        opts = {"scan": chunk_scan} if chunk_scan else {}
        graphs[chunk_path] = build_chunk_graph(weights, config, cmd, np.dtype(frontend_precision).type, **opts)
    elif chunk_path.exists():
        chunk_path.unlink()
    dtype = np.dtype(frontend_precision).type
    for kind, p in (("step", outdir / "step-fused.onnx"), ("layer", outdir / "step-layer.onnx"),
                    ("chunk", outdir / "chunk-fused.onnx")):
        if fused and (kind != "chunk" or chunk_frames):
            if kind != "chunk":
                graphs[p] = build_step_graph(weights, config, md, dtype, fused=True if kind == "step" else "layer")
            else:
                graphs[p] = build_chunk_graph(weights, config, cmd, dtype, fused=True)
        elif p.exists():
            p.unlink()
    if shared_weights:
        share_weights(graphs, outdir)
    else:
        for p, m in graphs.items():
            onnx.save(m, str(p))
        if (outdir / SHARED_WEIGHTS).exists():
            (outdir / SHARED_WEIGHTS).unlink()
    if copy_weights:
        dst = outdir / "weights.safetensors"
        if Path(weights_path).resolve() != dst.resolve():
            shutil.copyfile(weights_path, dst)
    return step_path


def make_session(path, threads: int = 1, level=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if level is not None:
        so.graph_optimization_level = level
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def zero_states(session, batch: int) -> dict[str, np.ndarray]:
    return {i.name: np.zeros([batch] + list(i.shape[1:]), np.float32)
            for i in session.get_inputs() if i.name.startswith("state.")}


def bench_step(path, batches=(1, 16), steps: int = 400, warmup: int = 50, threads: int = 1) -> dict:
    """Median time per step call (carrying state) at each batch size: ``{B: seconds}``."""
    sess = make_session(path, threads)
    out_names = [o.name for o in sess.get_outputs()]
    rng = np.random.default_rng(0)
    result = {}
    for B in batches:
        st = zero_states(sess, B)
        audio = (0.1 * rng.standard_normal((steps + warmup, B, frontend.HOP))).astype(np.float32)
        times = []
        for t in range(steps + warmup):
            feed = {"audio": audio[t], **st}
            t0 = time.perf_counter()
            outs = sess.run(out_names, feed)
            dt = time.perf_counter() - t0
            if t >= warmup:
                times.append(dt)
            st = {n[:-5]: v for n, v in zip(out_names, outs) if n.endswith(".next")}
        result[B] = float(np.median(times))
    return result


def bench_chunk(path, batches=(1, 16), frames=(250, 1000), calls: int = 3, threads: int = 1) -> dict:
    """Median CPU time per frame of the chunk graph (carrying state; one warm-up call per shape):
    ``{(B, T): seconds per frame per stream}``. CPU time of the calling thread (ORT runs a
    1-thread session on it), so other load on the machine inflates it less than wall time."""
    sess = make_session(path, threads)
    out_names = [o.name for o in sess.get_outputs()]
    rng = np.random.default_rng(0)
    result = {}
    for B in batches:
        for T in frames:
            st = zero_states(sess, B)
            times = []
            for c in range(calls + 1):
                audio = (0.1 * rng.standard_normal((B, T * frontend.HOP))).astype(np.float32)
                t0 = time.thread_time()
                outs = sess.run(out_names, {"audio": audio, **st})
                dt = time.thread_time() - t0
                if c:
                    times.append(dt)
                st = {n[:-5]: v for n, v in zip(out_names, outs) if n.endswith(".next")}
            result[(B, T)] = float(np.median(times)) / (B * T)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.export", description=__doc__.split("\n")[0])
    ap.add_argument("weights", help="weights .safetensors (with config metadata)")
    ap.add_argument("outdir", help="package directory to write")
    ap.add_argument("--name", help="model name (default: OUTDIR's name)")
    ap.add_argument("--version", default="0.0.0")
    ap.add_argument("--license", default="unspecified")
    ap.add_argument("--thresholds", help='JSON object {"label": t}, a .json file, or one number '
                    '(default: "thresholds" in the weights\' metadata, else 0.5)')
    ap.add_argument("--description")
    ap.add_argument("--chunk-frames", type=int, help=f"preferred T of the chunk graph, stored in its metadata "
                    f"(default {CHUNK_FRAMES}; the graph takes any T); 0 = write no chunk.onnx")
    ap.add_argument("--chunk-scan", choices=["scan", "chunked"], help="recurrence of the chunk graph: ONNX Scan "
                    "over frames (default, fastest measured) or sub-chunked stable scan")
    ap.add_argument("--no-weights", action="store_true", help="do not copy weights.safetensors into OUTDIR")
    ap.add_argument("--shared-weights", action="store_true", help="store both graphs' weights once, in "
                    "OUTDIR/weights.bin (ONNX external data), instead of inside each .onnx")
    ap.add_argument("--frontend-precision", choices=["float64", "float32"], default="float64",
                    help="arithmetic of the DFT/mel front end inside the graph (default float64)")
    ap.add_argument("--no-fused", action="store_true", help="do not write step-fused.onnx / step-layer.onnx / "
                    "chunk-fused.onnx (the graphs with the ai.mambatag fused ops)")
    ap.add_argument("--bench", action="store_true", help="time the graphs (1 thread, B=1 and B=16)")
    a = ap.parse_args(argv)
    path = export_package(a.weights, a.outdir, a.name, a.version, a.license, a.thresholds,
                          a.description, a.chunk_frames, not a.no_weights, a.frontend_precision, a.chunk_scan,
                          a.shared_weights, not a.no_fused)
    chunk = path.parent / "chunk.onnx"
    for p in (path, chunk, *(path.parent / f for f in ("step-fused.onnx", "step-layer.onnx", "chunk-fused.onnx"))):
        if p.exists():
            print(f"wrote {p} ({p.stat().st_size / 1024:.1f} KiB)")
    if a.bench:
        for B, s in bench_step(path).items():
            print(f"step  B={B:<3d} {s * 1e6:8.1f} us/call  {s * 1e6 / B:8.1f} us/stream  {B / s:8.0f} frames/s "
                  "(1 thread, median wall time)")
        if a.chunk_frames != 0:
            for (B, T), s in bench_chunk(chunk).items():
                print(f"chunk B={B:<3d} T={T:<5d} {s * 1e6:6.1f} us/frame/stream  {1 / s:8.0f} frames/s "
                      "(1 thread, median CPU time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
