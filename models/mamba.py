"""The mambatag Mamba-1 tagger in PyTorch, for training (no mamba_ssm dependency).

Same maths, names and front end as the exported ONNX graphs (CONTRACT.md §4–5) and the numpy
reference (``reference.py``); the tests check all three agree.

Stable interface (``models/train.py`` is written against it)::

    from models.mamba import MambaConfig, MambaTagger

    cfg = MambaConfig(d_model=128, n_layers=4, labels=["speech", "music", ...])
    model = MambaTagger(cfg, seed=0)            # mamba_simple-style init (from weights.init_weights)
    model.set_frontend_stats(mean, std)          # [64] each: per-band log-mel mean/std of training data
    probs = model(audio)                         # audio [B, N] float, 16 kHz -> [B, T, C], T = N // 160
    logits = model(audio, logits=True)           # pre-sigmoid, for BCEWithLogitsLoss
    out, state = model(audio, state=state, return_state=True)   # continue a stream (state may be None)
    logits = model(audio, logits=True, feature_mask=m)   # training only: m bool [B, >=T, 64], True -> feature 0
    state = model.init_state(B)                  # dict of zero tensors, keys = ONNX state names
    probs, state = model.step(hop, state)        # hop [B, 160] -> [B, C]; streaming, exactly the step graph
    model.save_safetensors("w.safetensors")      # mamba_ssm names + config JSON in metadata "config"
    model = MambaTagger.from_safetensors("w.safetensors")   # or model.load_safetensors(path) in place
    feats = model.features(audio)                # normalised log-mel [B, T, 64] (float32)

Frame ``t`` of the output is the frame that ends with hop ``t`` (the first frame covers 240 zero
samples plus hop 0), exactly like the step graph; trailing samples that do not fill a hop are
ignored. ``MambaConfig`` is ``models.weights.MambaConfig`` (torch-free).

Training notes:

- The selective scan (:func:`selective_scan`) is a chunked scan: inside chunks of ``chunk_size``
  frames (default 32) a short sequential loop runs for all chunks at once, then chunk-boundary
  states are combined by a log-depth scan over chunks, then each frame gets
  ``exp(A * cumsum(dt))`` times its chunk's carried-in state. Only decays ``exp(x <= 0)`` are ever
  formed (no ``exp(-cumsum)``), so it cannot overflow whatever dt grows to. Sequential depth is
  ``chunk + log2(T/chunk)``; work and memory are O(B·T·d_inner·d_state). Measured on one H200
  (torch 2.11, 128x4, d_state 16, T = 3000 frames, AdamW step included): B=16 fp32 ≈130 ms/step
  (≈365k frames/s), 17.5 GiB peak; bf16 autocast about the same; B=32 ≈270 ms, 38 GiB; 256x8
  B=16 ≈530 ms, 71 GiB. ``model.gradient_checkpointing = True`` keeps one layer's worth at a time
  (B=16: 6 GiB, ~25 % slower). A fused scan kernel (never materialising B·T·E·N) would be the
  next step if training time matters: ``model.set_scan("triton")`` switches every layer to the
  Triton kernels of ``models/scan_triton.py`` (same function and gradients, checked on the CPU
  with Triton's interpreter; on an H200 7.4x faster than the PyTorch scan at B=32, T=3000, and
  ``train.py`` uses it on CUDA by default).
- Under TF32/bf16 the network (not the front end) drifts ~2e-4 from the float64 reference; parity
  checks should run in float32 with ``torch.backends.cuda.matmul.allow_tf32 = False``.
- The front end runs in float64 by default (``model.frontend.compute_dtype``), outside autocast and
  without gradients; ``ln(mel + 1e-6)`` needs that precision next to loud tones (TF32/bf16 would
  wreck it). float32 is ~4x cheaper and fine for training if you prefer.
- ``A_log`` and ``D`` carry ``_no_weight_decay = True`` like mamba_simple; exclude them (and biases
  and norm weights, usually) from weight decay.
- ``frontend.mean`` / ``frontend.std`` are buffers (saved, not trained).
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import frontend
from models.reference import RMS_EPS
from models.weights import MambaConfig, as_config, check_weights, init_weights, load_weights, save_weights

__all__ = ["MambaConfig", "MambaTagger", "FrontEnd", "MambaMixer", "selective_scan"]


class FrontEnd(nn.Module):
    """Audio ``[B, N]`` -> normalised log-mel ``[B, T, 64]`` (CONTRACT §4), constants from frontend.py."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(frontend.N_MELS))
        self.register_buffer("std", torch.ones(frontend.N_MELS))
        self.compute_dtype = torch.float64
        self._cache: dict = {}

    def _matrices(self, device, dtype):
        key = (str(device), dtype)
        if key not in self._cache:  # not buffers: .half()/.to(dtype) must not touch them
            cos, sin = frontend.dft_matrices(window=True)
            dft = torch.from_numpy(np.concatenate([cos, sin], axis=1)).to(device=device, dtype=dtype)
            mel = torch.from_numpy(frontend.mel_filterbank()).to(device=device, dtype=dtype)
            self._cache[key] = (dft, mel)
        return self._cache[key]

    @staticmethod
    def frames(audio: torch.Tensor, history: torch.Tensor | None = None):
        """``(frames [B, T, 400], new_history [B, 240])`` for ``audio [B, N]`` after ``history``."""
        B, N = audio.shape
        H, hop, win = frontend.HISTORY, frontend.HOP, frontend.WIN
        if history is None:
            history = audio.new_zeros(B, H)
        x = torch.cat([history.to(audio.dtype), audio], dim=1)
        T = N // hop
        if T == 0:
            return audio.new_zeros(B, 0, win), x[:, -H:]
        return x[:, :H + T * hop].unfold(1, win, hop), x[:, T * hop:T * hop + H]

    @torch.no_grad()
    def logmel_of_frames(self, frames: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """``[..., 400]`` frames -> ``[..., 64]`` float32 (normalised unless ``normalize=False``)."""
        dt = self.compute_dtype
        dft, mel = self._matrices(frames.device, dt)
        with torch.autocast(device_type=frames.device.type, enabled=False):
            spec = frames.to(dt) @ dft
            nb = frontend.N_BINS
            power = spec[..., :nb].square() + spec[..., nb:].square()
            lm = torch.log(power @ mel + frontend.LOG_EPS)
            if normalize:
                lm = (lm - self.mean.to(dt)) / self.std.to(dt)
            return lm.float()

    def forward(self, audio: torch.Tensor, history: torch.Tensor | None = None, normalize: bool = True):
        """``(features [B, T, 64], new_history [B, 240])``."""
        fr, hist = self.frames(audio, history)
        return self.logmel_of_frames(fr, normalize), hist


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = RMS_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def selective_scan(x, dt, A, Bm, Cm, h0=None, chunk: int = 32):
    """Chunked selective scan (float32), stable for any dt >= 0.

    ``x, dt [B, T, E]``, ``A [E, N]`` (negative), ``Bm, Cm [B, T, N]``, ``h0 [B, E, N]`` or None.
    Computes ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t``, ``y_t = h_t C_t`` and returns
    ``(y [B, T, E], h_T [B, E, N])`` (the D skip term is not included).
    """
    x, dt, A, Bm, Cm = x.float(), dt.float(), A.float(), Bm.float(), Cm.float()
    Bsz, T, E = x.shape
    N = A.shape[1]
    if T == 0:
        h = h0.float() if h0 is not None else x.new_zeros(Bsz, E, N)
        return x.new_zeros(Bsz, 0, E), h
    L = max(1, min(chunk, T))
    nC = -(-T // L)
    pad = nC * L - T
    if pad:  # dt = 0 steps leave the state unchanged (decay 1, input 0)
        x, dt, Bm, Cm = (F.pad(t, (0, 0, 0, pad)) for t in (x, dt, Bm, Cm))
    dtc = dt.view(Bsz, nC, L, E)
    dtx = (dtc * x.view(Bsz, nC, L, E)).unsqueeze(-1)  # [B, nC, L, E, 1]
    Bc = Bm.view(Bsz, nC, L, 1, N)
    Cc = Cm.view(Bsz, nC, L, N)
    # 1. within each chunk from zero state, all chunks at once
    h = x.new_zeros(Bsz, nC, E, N)
    ys = []
    for j in range(L):
        h = torch.exp(dtc[:, :, j, :, None] * A) * h + dtx[:, :, j] * Bc[:, :, j]
        ys.append(torch.einsum("bcen,bcn->bce", h, Cc[:, :, j]))
    y = torch.stack(ys, dim=2)  # [B, nC, L, E]
    if nC == 1 and h0 is None:
        return y.reshape(Bsz, L, E)[:, :T], h[:, 0]
    # 2. carry states across chunk boundaries: inclusive scan of S_c = a_c S_{c-1} + b_c over
    #    chunks (a_c = decay over chunk c, b_c = its zero-start end state), log-depth
    #    (Hillis-Steele): ceil(log2(nC)) levels instead of nC sequential steps
    cum = torch.cumsum(dtc, dim=2)  # [B, nC, L, E], >= 0
    a = torch.exp(cum[:, :, -1, :, None] * A)  # [B, nC, E, N], in (0, 1]
    b = h
    if h0 is not None:
        b = torch.cat([torch.addcmul(b[:, :1], a[:, :1], h0.float().unsqueeze(1)), b[:, 1:]], dim=1)
    k = 1
    while k < nC:
        b = torch.cat([b[:, :k], torch.addcmul(b[:, k:], a[:, k:], b[:, :-k])], dim=1)
        if 2 * k < nC:
            a = torch.cat([a[:, :k], a[:, k:] * a[:, :-k]], dim=1)
        k *= 2
    first = h0.float().unsqueeze(1) if h0 is not None else torch.zeros_like(b[:, :1])
    carries = torch.cat([first, b[:, :-1]], dim=1)  # state entering each chunk [B, nC, E, N]
    carry = b[:, -1]
    # 3. add each frame's decayed carried-in state: y_t += sum_n C_t exp(A cum_t) carry
    dec = torch.exp(cum.unsqueeze(-1) * A)  # [B, nC, L, E, N]
    y = y + torch.einsum("bclen,bcln->bcle", dec * carries.unsqueeze(2), Cc)
    return y.reshape(Bsz, nC * L, E)[:, :T], carry


class MambaMixer(nn.Module):
    """mamba_simple.Mamba (Mamba-1) with state layouts of the ONNX graphs."""

    def __init__(self, c: MambaConfig):
        super().__init__()
        D, E, N, K, R = c.d_model, c.d_inner, c.d_state, c.d_conv, c.dt_rank
        self.d_inner, self.d_state, self.d_conv, self.dt_rank = E, N, K, R
        self.in_proj = nn.Linear(D, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, K, groups=E, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.A_log = nn.Parameter(torch.zeros(E, N))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(E))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(E, D, bias=False)
        self.scan = selective_scan  # or models.scan_triton.selective_scan_triton (MambaTagger.set_scan)

    def _ssm_params(self, xc):
        R, N = self.dt_rank, self.d_state
        dbc = self.x_proj(xc)
        dt, Bm, Cm = torch.split(dbc, [R, N, N], dim=-1)
        return F.softplus(self.dt_proj(dt).float()), Bm, Cm

    def forward(self, u, conv_state=None, ssm_state=None, chunk: int = 32):
        """``u [B, T, D]`` -> ``(out [B, T, D], conv_next [B, K-1, E], ssm_next [B, N, E])``."""
        Bsz, T, _ = u.shape
        K, E = self.d_conv, self.d_inner
        x, z = self.in_proj(u).chunk(2, dim=-1)
        if conv_state is None:
            conv_state = x.new_zeros(Bsz, K - 1, E)
        xp = torch.cat([conv_state.to(x.dtype), x], dim=1)  # [B, K-1+T, E]
        conv_next = xp[:, -(K - 1):]
        xc = F.conv1d(xp.transpose(1, 2), self.conv1d.weight, self.conv1d.bias, groups=E).transpose(1, 2)
        xc = F.silu(xc)
        dt, Bm, Cm = self._ssm_params(xc)
        A = -torch.exp(self.A_log.float())
        h0 = ssm_state.transpose(1, 2) if ssm_state is not None else None
        y, hT = self.scan(xc, dt, A, Bm, Cm, h0, chunk)
        y = (y + xc.float() * self.D.float()).to(x.dtype) * F.silu(z)
        return self.out_proj(y), conv_next, hT.transpose(1, 2).contiguous()

    def step(self, u, conv_state, ssm_state):
        """One frame: ``u [B, D]``, ``conv_state [B, K-1, E]``, ``ssm_state [B, N, E]``."""
        x, z = self.in_proj(u).chunk(2, dim=-1)
        win = torch.cat([conv_state.to(x.dtype), x.unsqueeze(1)], dim=1)  # [B, K, E]
        w = self.conv1d.weight[:, 0, :].t()  # [K, E]
        xc = F.silu((win * w).sum(1) + self.conv1d.bias)
        dt, Bm, Cm = self._ssm_params(xc)
        A = -torch.exp(self.A_log.float()).t()  # [N, E]
        h = torch.exp(dt.unsqueeze(1) * A) * ssm_state.float() \
            + (dt * xc.float()).unsqueeze(1) * Bm.float().unsqueeze(2)  # [B, N, E]
        y = (h * Cm.float().unsqueeze(2)).sum(1) + xc.float() * self.D.float()
        y = y.to(x.dtype) * F.silu(z)
        return self.out_proj(y), win[:, 1:], h


class Block(nn.Module):
    """Residual block ``x + mixer(RMSNorm(x))``."""

    def __init__(self, c: MambaConfig):
        super().__init__()
        self.norm = RMSNorm(c.d_model)
        self.mixer = MambaMixer(c)

    def forward(self, x, conv_state=None, ssm_state=None, chunk: int = 32):
        out, cs, ss = self.mixer(self.norm(x), conv_state, ssm_state, chunk)
        return x + out, cs, ss

    def step(self, x, conv_state, ssm_state):
        out, cs, ss = self.mixer.step(self.norm(x), conv_state, ssm_state)
        return x + out, cs, ss


class MambaTagger(nn.Module):
    """Front end + embed + Mamba-1 blocks + norm_f + head (+ sigmoid). See the module docstring."""

    def __init__(self, config, seed: int = 0):
        super().__init__()
        c = self.config = as_config(config)
        self.frontend = FrontEnd()
        self.embed = nn.Linear(c.n_mels, c.d_model)
        self.layers = nn.ModuleList([Block(c) for _ in range(c.n_layers)])
        self.norm_f = RMSNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.n_classes)
        self.chunk_size = 32
        self.gradient_checkpointing = False
        self.scan_impl = "torch"
        self.load_numpy_weights(init_weights(c, seed))

    # ---- weights --------------------------------------------------------------------------
    def load_numpy_weights(self, weights: dict) -> None:
        """Load a ``dict[name, np.ndarray]`` (mamba_ssm names) into the module."""
        check_weights(weights, self.config)
        sd = self.state_dict()
        with torch.no_grad():
            for k, v in weights.items():
                sd[k].copy_(torch.from_numpy(np.asarray(v, dtype=np.float32)))

    def numpy_weights(self) -> dict[str, np.ndarray]:
        """The weights as ``dict[name, np.ndarray]`` (float32), as ``reference.py`` and export take."""
        return {k: v.detach().float().cpu().numpy().copy() for k, v in self.state_dict().items()}

    def save_safetensors(self, path, extra_metadata: dict | None = None) -> None:
        """Save with mamba_ssm names and the config JSON in the metadata under ``config``."""
        save_weights(path, self.numpy_weights(), self.config, extra_metadata)

    def load_safetensors(self, path) -> None:
        """Load weights saved by :meth:`save_safetensors` into this model (configs must match)."""
        weights, config = load_weights(path)
        if config.to_dict() != self.config.to_dict():
            raise ValueError(f"{path}: config {config} differs from this model's {self.config}")
        self.load_numpy_weights(weights)

    @classmethod
    def from_safetensors(cls, path, device=None) -> "MambaTagger":
        weights, config = load_weights(path)
        model = cls(config)
        model.load_numpy_weights(weights)
        return model.to(device) if device is not None else model

    def set_frontend_stats(self, mean, std) -> None:
        """Set the per-band log-mel normalisation (``frontend.mean`` / ``frontend.std``, [64] each)."""
        mean = torch.as_tensor(np.asarray(mean, dtype=np.float32)).reshape(-1)
        std = torch.as_tensor(np.asarray(std, dtype=np.float32)).reshape(-1)
        if mean.numel() != frontend.N_MELS or std.numel() != frontend.N_MELS:
            raise ValueError(f"frontend stats must have {frontend.N_MELS} values each")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("frontend stats must be finite with std > 0")
        with torch.no_grad():
            self.frontend.mean.copy_(mean)
            self.frontend.std.copy_(std)

    # ---- running ---------------------------------------------------------------------------
    def set_scan(self, impl: str) -> None:
        """Which selective scan ``forward`` uses: ``"torch"`` (:func:`selective_scan`, any device)
        or ``"triton"`` (:func:`models.scan_triton.selective_scan_triton`: CUDA tensors, or the
        CPU under ``TRITON_INTERPRET=1``). Both compute the same function; ``step`` is unaffected."""
        if impl == "torch":
            fn = selective_scan
        elif impl == "triton":
            from models.scan_triton import selective_scan_triton as fn
        else:
            raise ValueError(f"scan {impl!r}: expected 'torch' or 'triton'")
        for layer in self.layers:
            layer.mixer.scan = fn
        self.scan_impl = impl

    def init_state(self, batch: int, device=None) -> dict[str, torch.Tensor]:
        """Zero streaming state; keys and layouts are those of the step graph's ``state.*`` inputs."""
        c = self.config
        device = device if device is not None else self.embed.weight.device
        st = {"state.audio": torch.zeros(batch, frontend.HISTORY, device=device)}
        for i in range(c.n_layers):
            st[f"state.layer{i}.conv"] = torch.zeros(batch, c.d_conv - 1, c.d_inner, device=device)
            st[f"state.layer{i}.ssm"] = torch.zeros(batch, c.d_state, c.d_inner, device=device)
        return st

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel ``[B, T, 64]`` (float32) of ``audio [B, N]`` from stream start."""
        return self.frontend(audio)[0]

    def forward(self, audio: torch.Tensor, logits: bool = False, state: dict | None = None,
                return_state: bool = False, feature_mask: torch.Tensor | None = None):
        """``audio [B, N]`` -> ``[B, T, C]`` probabilities (or logits); with ``return_state`` also
        the state after the last full hop (continue with ``forward(..., state=that)`` or ``step``).

        ``feature_mask`` (training augmentation, SpecAugment-style; ``models/train.py`` passes it
        in training steps only): a bool tensor broadcastable to ``[B, T', 64]`` with ``T' >= T``;
        its first ``T`` frames are used and the normalised log-mel is set to 0 (the band's
        training mean) where it is True. None (the default) leaves the features untouched."""
        if audio.dim() == 1:
            audio = audio.unsqueeze(0)
        st = state or {}
        feats, hist = self.frontend(audio, st.get("state.audio"))
        if feature_mask is not None:
            feats = feats.masked_fill(feature_mask[:, :feats.shape[1]], 0.0)
        x = self.embed(feats.to(self.embed.weight.dtype))
        new_state = {"state.audio": hist}
        for i, layer in enumerate(self.layers):
            cs, ss = st.get(f"state.layer{i}.conv"), st.get(f"state.layer{i}.ssm")
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint

                x, cs, ss = checkpoint(layer, x, cs, ss, self.chunk_size, use_reentrant=False)
            else:
                x, cs, ss = layer(x, cs, ss, self.chunk_size)
            new_state[f"state.layer{i}.conv"], new_state[f"state.layer{i}.ssm"] = cs, ss
        out = self.head(self.norm_f(x))
        if not logits:
            out = torch.sigmoid(out)
        return (out, new_state) if return_state else out

    def step(self, audio_hop: torch.Tensor, state: dict | None = None, logits: bool = False):
        """One 10 ms hop: ``audio_hop [B, 160]`` -> ``(probs [B, C], new_state)`` (the step graph)."""
        B = audio_hop.shape[0]
        st = state if state is not None else self.init_state(B, audio_hop.device)
        frame = torch.cat([st["state.audio"].to(audio_hop.dtype), audio_hop], dim=1)  # [B, 400]
        new_state = {"state.audio": frame[:, frontend.HOP:]}
        x = self.embed(self.frontend.logmel_of_frames(frame).to(self.embed.weight.dtype))
        for i, layer in enumerate(self.layers):
            x, cs, ss = layer.step(x, st[f"state.layer{i}.conv"], st[f"state.layer{i}.ssm"])
            new_state[f"state.layer{i}.conv"], new_state[f"state.layer{i}.ssm"] = cs, ss
        out = self.head(self.norm_f(x))
        return (out if logits else torch.sigmoid(out)), new_state
