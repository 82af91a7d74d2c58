"""Selective scan as Triton kernels (forward and backward), for training on a GPU.

    from models.scan_triton import selective_scan_triton
    y, hT = selective_scan_triton(x, dt, A, Bm, Cm, h0)   # same contract as mamba.selective_scan

``x, dt [B, T, E]``, ``A [E, N]`` (negative), ``Bm, Cm [B, T, N]``, ``h0 [B, E, N]`` or None ->
``y [B, T, E]`` (no D term) and ``h_T [B, E, N]``, all float32, for
``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t``, ``y_t = h_t C_t``.

Why: :func:`models.mamba.selective_scan` builds the scan from PyTorch ops. It materialises
B·T·E·N floats several times per layer (1.6 GB each at B = 32, T = 3000, E = 256, N = 16) and
autograd keeps them. Here one program owns a batch row and a block of ``BE`` channels and keeps
its ``[BE, N]`` state in registers while it walks the frames: the forward writes only ``y``, the
final state and the state entering every chunk of ``L`` frames. The backward walks the chunks
from the last: it recomputes a chunk's states from its entry state into a small scratch buffer
(``[B, L + 1, E, N]``), then walks the chunk backwards carrying dL/dh. Gradients for ``B``, ``C``
(sums over channels) are written per channel block and summed by PyTorch; the gradient for ``A``
(a sum over rows and frames) per row.

Status: checked against the PyTorch scan (float64) on the CPU with Triton's interpreter
(``TRITON_INTERPRET=1``, ``models/tests/test_scan_triton.py``). H200, 2026-11-29 (``scripts/gpu/run-scan-train.sh``): forward+backward at B 32, T 3000, E 256, N 16 7.7 ms against the PyTorch scan's 57.3 ms (peak memory 2.8 vs 12.3 GiB), parity vs float64 1.1e-6; a training step 0.104 s instead of 0.40 s.
``models/train.py`` uses it on CUDA (``--scan auto``, the default).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _channel_block(a_ptr, E, N: tl.constexpr, BE: tl.constexpr):
    """This program's channel block: its index, channels ``e [BE]`` (masked by ``em`` past E),
    state lanes ``n [N]``, offsets ``en [BE, N]`` into an ``[E, N]`` tensor, and its rows of A."""
    pe = tl.program_id(1)
    e = pe * BE + tl.arange(0, BE)
    n = tl.arange(0, N)
    em = e < E
    en = e[:, None] * N + n[None, :]
    return pe, e, n, em, en, tl.load(a_ptr + en, mask=em[:, None], other=0.0)


@triton.jit
def _frame(x_ptr, dt_ptr, b_ptr, row, e, em, n, E, N: tl.constexpr):
    """dt, x (channels e) and B (all lanes) of frame ``row`` = batch row * T + t."""
    d = tl.load(dt_ptr + row * E + e, mask=em, other=0.0)
    xv = tl.load(x_ptr + row * E + e, mask=em, other=0.0)
    return d, xv, tl.load(b_ptr + row * N + n)


@triton.jit
def _scan_fwd(x_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, h0_ptr, y_ptr, hT_ptr, hs_ptr,
              T, E, NC,
              N: tl.constexpr, L: tl.constexpr, BE: tl.constexpr, HAS_H0: tl.constexpr):
    pb = tl.program_id(0)
    pe, e, n, em, en, a = _channel_block(a_ptr, E, N, BE)
    m2 = em[:, None]
    if HAS_H0:
        h = tl.load(h0_ptr + pb * E * N + en, mask=m2, other=0.0)
    else:
        h = tl.zeros([BE, N], dtype=tl.float32)
    for c in range(0, NC):
        # the state entering chunk c, for the backward pass
        tl.store(hs_ptr + (pb * NC + c) * E * N + en, h, mask=m2)
        t_end = tl.minimum(c * L + L, T)
        for t in range(c * L, t_end):
            row = (pb * T + t)
            d, xv, bv = _frame(x_ptr, dt_ptr, b_ptr, row, e, em, n, E, N)
            cv = tl.load(c_ptr + row * N + n)
            h = tl.exp(d[:, None] * a) * h + (d * xv)[:, None] * bv[None, :]
            tl.store(y_ptr + row * E + e, tl.sum(h * cv[None, :], axis=1), mask=em)
    tl.store(hT_ptr + pb * E * N + en, h, mask=m2)


@triton.jit
def _scan_bwd(x_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, hs_ptr, gy_ptr, ghT_ptr, buf_ptr,
              dx_ptr, ddt_ptr, db_ptr, dc_ptr, da_ptr, dh0_ptr,
              T, E, NC, NEB,
              N: tl.constexpr, L: tl.constexpr, BE: tl.constexpr):
    pb = tl.program_id(0)
    pe, e, n, em, en, a = _channel_block(a_ptr, E, N, BE)
    m2 = em[:, None]
    dh = tl.load(ghT_ptr + pb * E * N + en, mask=m2, other=0.0)
    da = tl.zeros([BE, N], dtype=tl.float32)
    buf = buf_ptr + pb * (L + 1) * E * N  # this row's scratch: states h_{t0-1} .. h_{t0+L-1}
    for cc in range(0, NC):
        c = NC - 1 - cc
        t0 = c * L
        t_end = tl.minimum(t0 + L, T)
        # 1. recompute the chunk's states from its entry state: buf[j] = state before frame t0 + j
        h = tl.load(hs_ptr + (pb * NC + c) * E * N + en, mask=m2, other=0.0)
        tl.store(buf + en, h, mask=m2)
        for t in range(t0, t_end):
            row = (pb * T + t)
            d, xv, bv = _frame(x_ptr, dt_ptr, b_ptr, row, e, em, n, E, N)
            h = tl.exp(d[:, None] * a) * h + (d * xv)[:, None] * bv[None, :]
            tl.store(buf + (t - t0 + 1) * E * N + en, h, mask=m2)
        # 2. walk the chunk backwards carrying dL/dh_t
        for tt in range(t0, t_end):
            t = t_end - 1 - (tt - t0)
            j = t - t0
            row = (pb * T + t)
            d, xv, bv = _frame(x_ptr, dt_ptr, b_ptr, row, e, em, n, E, N)
            cv = tl.load(c_ptr + row * N + n)
            gy = tl.load(gy_ptr + row * E + e, mask=em, other=0.0)
            h_t = tl.load(buf + (j + 1) * E * N + en, mask=m2, other=0.0)
            h_p = tl.load(buf + j * E * N + en, mask=m2, other=0.0)
            # y_t = sum_n h_t C_t
            dh += gy[:, None] * cv[None, :]
            tl.store(dc_ptr + (row * NEB + pe) * N + n, tl.sum(gy[:, None] * h_t, axis=0))
            # h_t = exp(dt A) h_{t-1} + dt x B
            dA = tl.exp(d[:, None] * a)
            g = dh * h_p * dA  # dL/d(dt A), elementwise
            dhb = tl.sum(dh * bv[None, :], axis=1)
            tl.store(ddt_ptr + row * E + e, tl.sum(g * a, axis=1) + xv * dhb, mask=em)
            tl.store(dx_ptr + row * E + e, d * dhb, mask=em)
            tl.store(db_ptr + (row * NEB + pe) * N + n, tl.sum(dh * (d * xv)[:, None], axis=0))
            da += g * d[:, None]
            dh = dh * dA
    tl.store(dh0_ptr + pb * E * N + en, dh, mask=m2)
    tl.store(da_ptr + pb * E * N + en, da, mask=m2)


def _block_e(E: int) -> int:
    return min(32, triton.next_power_of_2(E))


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, Bm, Cm, h0, L):
        Bsz, T, E = x.shape
        N = A.shape[1]
        if N & (N - 1):
            raise ValueError(f"selective_scan_triton: d_state {N} must be a power of two")
        # autocast hands some inputs over in bf16; gradients go back in each input's dtype
        ctx.dtypes = [t.dtype for t in (x, dt, A, Bm, Cm)] + [h0.dtype if h0 is not None else None]
        x, dt, A, Bm, Cm = (t.float().contiguous() for t in (x, dt, A, Bm, Cm))
        has_h0 = h0 is not None
        h0c = h0.float().contiguous() if has_h0 else x.new_zeros(1)
        NC = max(1, -(-T // L))
        BE = _block_e(E)
        y = torch.empty_like(x)
        hT = x.new_empty(Bsz, E, N)
        hs = x.new_empty(Bsz, NC, E, N)
        grid = (Bsz, triton.cdiv(E, BE))
        _scan_fwd[grid](x, dt, A, Bm, Cm, h0c, y, hT, hs, T, E, NC, N=N, L=L, BE=BE, HAS_H0=has_h0)
        ctx.save_for_backward(x, dt, A, Bm, Cm, hs)
        ctx.L, ctx.has_h0 = L, has_h0
        return y, hT

    @staticmethod
    def backward(ctx, gy, ghT):
        x, dt, A, Bm, Cm, hs = ctx.saved_tensors
        L = ctx.L
        Bsz, T, E = x.shape
        N = A.shape[1]
        NC = hs.shape[1]
        BE = _block_e(E)
        NEB = triton.cdiv(E, BE)
        gy = torch.zeros_like(x) if gy is None else gy.float().contiguous()
        ghT = x.new_zeros(Bsz, E, N) if ghT is None else ghT.float().contiguous()
        buf = x.new_empty(Bsz, L + 1, E, N)
        dx, ddt = torch.empty_like(x), torch.empty_like(x)
        db = x.new_empty(Bsz, T, NEB, N)
        dc = x.new_empty(Bsz, T, NEB, N)
        da = x.new_empty(Bsz, E, N)
        dh0 = x.new_empty(Bsz, E, N)
        _scan_bwd[(Bsz, NEB)](x, dt, A, Bm, Cm, hs, gy, ghT, buf, dx, ddt, db, dc, da, dh0,
                              T, E, NC, NEB, N=N, L=L, BE=BE)
        g = [dx, ddt, da.sum(0), db.sum(2), dc.sum(2), dh0 if ctx.has_h0 else None]
        g = [v.to(dt_) if v is not None else None for v, dt_ in zip(g, ctx.dtypes)]
        return (*g, None)


def recurrence(x, dt, A, Bm, Cm, h0=None):
    """The definition, one frame at a time in plain PyTorch ops (any dtype; run it in float64 as
    the reference the kernels and ``mamba.selective_scan`` are checked against)."""
    h = h0 if h0 is not None else x.new_zeros(x.shape[0], x.shape[2], A.shape[1])
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append((h * Cm[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1), h


def selective_scan_triton(x, dt, A, Bm, Cm, h0=None, chunk: int = 64):
    """Drop-in for :func:`models.mamba.selective_scan` (``chunk``: frames between the states the
    forward keeps for the backward; any value gives the same result)."""
    if x.shape[1] == 0:
        h = h0.float() if h0 is not None else x.new_zeros(x.shape[0], x.shape[2], A.shape[1])
        return x.new_zeros(x.shape[0], 0, x.shape[2]), h
    return _SelectiveScan.apply(x, dt, A, Bm, Cm, h0, int(chunk))
