"""On-the-fly scene synthesis in torch (runs on the GPU during training, on CPU for tests/eval).

A scene is L samples of 16 kHz audio: a noise background (white..brown, hum, sometimes digital
silence), optionally a long "bed" sound, and several foreground events (class-balanced picks from
the pool, plus distractors) at random offsets and signal-to-background ratios, with random speed
(resampling), fades, a random room (synthetic exponential reverb), EQ tilt, band limiting that
mimics sources recorded at 8-48 kHz, and a random final level. Frame targets [B, T, C]
(T = L // 160, frame t = the frame ending with hop t) come from each event's activity mask.

    mixer = SceneMixer(pool, device)
    audio, targets, events = mixer.generate(B, L, rng)      # rng: numpy Generator
    # events[b] = list of (class_index, onset_s, offset_s)
    audio, targets, events, soft = mixer.generate(B, L, rng, soft=True)   # + teacher soft targets
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

SR = 16000
HOP = 160


class SceneMixer:
    def __init__(self, pool, device="cpu", bank_dtype=None, distractor_p: float = 0.2,
                 max_synthetic_share: float = 0.5, train_speed_p: float = 0.4,
                 train_speed_range: tuple[float, float] = (0.85, 1.18)):
        self.pool = pool
        self.device = torch.device(device)
        self.C = len(pool.classes)
        dt = bank_dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        lens = np.array([len(a) for a in pool.audio], dtype=np.int64)
        self.off = np.concatenate([[0], np.cumsum(lens)])
        self.lens = lens
        self.bank = torch.from_numpy(np.concatenate(pool.audio) if len(pool.audio) else np.zeros(1, np.float32)).to(self.device, dt)
        # RMS of each clip over its active hops (for SNR-based gains)
        self.rms = np.array([self._active_rms(a, m) for a, m in zip(pool.audio, pool.mask)])
        self.by_class = [ix for ix in pool.by_class()]
        self.distractors = pool.indices("distractor")
        self.backgrounds = pool.indices("background")
        self.distractor_p = distractor_p if len(self.distractors) else 0.0
        self.present = [c for c in range(self.C) if len(self.by_class[c])]
        # train mode: a class's synthetic clips get at most `max_synthetic_share` of its picks
        # (1.0.0 drew uniformly over all clips of the class: 56-64% synthetic alarm/weather).
        # Eval mode keeps the 1.0.0 draw exactly (same rng calls, so the same validation scenes).
        syn = np.array([bool(m.get("synthetic", False)) for m in pool.meta]) if len(pool.meta) else np.zeros(0, bool)
        self.by_class_real = [ix[~syn[ix]] for ix in self.by_class]
        self.by_class_syn = [ix[syn[ix]] for ix in self.by_class]
        self.max_synthetic_share = max_synthetic_share
        self.train_speed_p = train_speed_p
        self.train_speed_range = train_speed_range

    @staticmethod
    def _active_rms(a, m):
        nh = len(m)
        pad = np.zeros(nh * HOP, np.float32)
        pad[:len(a)] = a
        fr = pad.reshape(nh, HOP)[m.astype(bool)]
        if len(fr) == 0:
            fr = pad.reshape(nh, HOP)
        return float(np.sqrt((fr ** 2).mean() + 1e-10))

    # ------------------------------------------------------------------ pieces
    def _h2d(self, arr):
        """Host numpy -> device without a stream sync (pinned, non-blocking) on CUDA."""
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    def _gen(self, rng):
        """A torch generator on the mixer's device seeded from the numpy rng (no host copies)."""
        return torch.Generator(device=self.device).manual_seed(int(rng.integers(2**31)))

    def _clip(self, i, rng, want_s, speed):
        """Audio [n] (float32, device), hop mask [nh] (float32, cpu numpy) of clip i, and the
        source hop of each output hop (int64 [nh], indices into pool.mask[i]: the same mapping
        carries pool.teacher[i] along, so soft targets follow the crop, tiling and speed)."""
        a = self.bank[self.off[i]:self.off[i + 1]].float()
        m = self.pool.mask[i].astype(np.float32)
        hops = np.arange(len(m))
        n = len(a)
        want = int(want_s * SR)
        if self.pool.loop[i] and want > n:
            reps = -(-want // n)
            a = a.repeat(reps)[:want]
            m = np.ones(-(-want // HOP), np.float32)
            hops = (np.arange(len(m)) * HOP % n) // HOP   # the tiled hop starts inside the clip
        elif n > want:
            start = int(rng.integers(0, (n - want) // HOP + 1)) * HOP
            a = a[start:start + want]
            m = m[start // HOP:start // HOP + -(-want // HOP)]
            hops = hops[start // HOP:start // HOP + -(-want // HOP)]
        if speed != 1.0 and len(a) > 2 * HOP:
            newn = max(HOP, int(len(a) / speed))
            a = F.interpolate(a[None, None], size=newn, mode="linear", align_corners=False)[0, 0]
            nh = -(-newn // HOP)
            src = np.minimum((np.arange(nh) * len(m) / nh).astype(np.int64), len(m) - 1)
            m = m[src]
            hops = hops[src]
        return a, m, hops

    def _colored_noise(self, B, L, rng):
        w = torch.randn(B, L, generator=self._gen(rng), device=self.device)
        W = torch.fft.rfft(w, dim=1)
        f = torch.fft.rfftfreq(L, 1 / SR, device=self.device).clamp_min(20.0)
        expo = self._h2d(rng.uniform(0.0, 2.0, B).astype(np.float32))
        W = W * (f[None, :] / 1000.0) ** (-expo[:, None] / 2)
        x = torch.fft.irfft(W, n=L, dim=1)
        x = x / x.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-9)
        # mains hum on some rows
        t = torch.arange(L, device=self.device) / SR
        for b in range(B):
            if rng.random() < 0.15:
                f0 = 50.0 if rng.random() < 0.5 else 60.0
                hum = sum(math.pow(0.5, k) * torch.sin(2 * math.pi * f0 * (k + 1) * t + float(rng.uniform(0, 6)))
                          for k in range(4))
                x[b] = x[b] + float(rng.uniform(0.5, 3.0)) * hum
        return x

    def _reverb(self, x, rng, rows):
        if not rows:
            return x
        n_ir = SR  # 1 s
        t = torch.arange(n_ir, device=self.device) / SR
        irs = torch.zeros(len(rows), n_ir, device=self.device)
        noise = torch.randn(len(rows), n_ir, generator=self._gen(rng), device=self.device)
        for k in range(len(rows)):
            rt60 = float(rng.uniform(0.15, 1.0))
            irs[k] = noise[k] * torch.exp(-6.9 * t / rt60)
            irs[k, :int(rng.integers(0, 80))] = 0
            irs[k] = irs[k] / irs[k].pow(2).sum().sqrt() * float(rng.uniform(0.2, 0.8))
            irs[k, 0] = 1.0
        L = x.shape[1]
        nfft = 1 << (L + n_ir - 1).bit_length()
        X = torch.fft.rfft(x[rows], n=nfft, dim=1)
        H = torch.fft.rfft(irs, n=nfft, dim=1)
        y = torch.fft.irfft(X * H, n=nfft, dim=1)[:, :L]
        x = x.clone()
        x[rows] = y
        return x

    def _eq(self, x, rng):
        B, L = x.shape
        X = torch.fft.rfft(x, dim=1)
        f = torch.fft.rfftfreq(L, 1 / SR, device=self.device)
        gains = torch.ones(B, f.shape[0], device=self.device)
        lf = torch.log2(f.clamp_min(20.0) / 1000.0)
        for b in range(B):
            if rng.random() < 0.5:  # spectral tilt
                gains[b] *= 10 ** (float(rng.uniform(-4, 3)) * lf / 20)
            if rng.random() < 0.3:  # high-pass (small mics, phones)
                fc = float(rng.uniform(60, 400))
                gains[b] *= 1 / torch.sqrt(1 + (fc / f.clamp_min(1.0)) ** 4)
            r = rng.random()
            if r < 0.12:  # through 8 kHz sampling
                gains[b] *= (f < float(rng.uniform(3400, 4000))).float()
            elif r < 0.22:  # through 11.025 kHz
                gains[b] *= (f < 5512.0).float()
            elif r < 0.35:  # cheap low-pass / 22.05 kHz chains with soft roll-off
                fc = float(rng.uniform(4000, 7500))
                gains[b] *= 1 / torch.sqrt(1 + (f / fc) ** 8)
        return torch.fft.irfft(X * gains, n=L, dim=1)

    # ------------------------------------------------------------------ scenes
    def generate(self, B: int, L: int, rng: np.random.Generator, mode: str = "train",
                 n_events: tuple[int, int] = (2, 9), soft: bool = False):
        """mode "train": dense overlapping events, beds, all augmentations.
        mode "eval": sparse, non-overlapping events over noise (for onset-delay / event-F1
        measurement), same augmentation except reverb/EQ kept mild.

        soft: also return soft targets [B, T, C] float32 (4th value; needs pool.teacher): for every
        clip placed (events, distractors, background clips), its teacher track mapped exactly as
        its hard targets are (same hop of the scene, crop, tiling, speed) times its fade
        visibility (the hard targets' envelope gate; 1 for a background), max over the clips. It
        draws nothing from ``rng``: the scenes and hard targets are the same with soft on or off."""
        if soft and self.pool.teacher is None:
            raise ValueError("SceneMixer.generate(soft=True): the pool has no teacher tracks "
                             "(load_bundle(..., teacher=True) or fake_pool(teacher=True))")
        T = L // HOP
        dev = self.device
        audio_ev = torch.zeros(B, L, device=dev)
        tgt = np.zeros((B, T, self.C), np.float32)
        stgt = np.zeros((B, T, self.C), np.float32) if soft else None
        events = [[] for _ in range(B)]
        for b in range(B):
            if mode == "train":
                plan = []
                if rng.random() < 0.4:  # a long bed
                    plan.append(("bed", float(rng.uniform(min(8.0, L / SR / 2), L / SR))))
                k = int(rng.integers(n_events[0], n_events[1] + 1))
                if rng.random() < 0.05:
                    k = 0  # background only
                plan += [("fg", float(rng.uniform(0.5, 12.0)))] * k
                cursor = None
            else:
                plan = [("fg", float(rng.uniform(2.0, 8.0))) for _ in range(int(rng.integers(n_events[0], n_events[1] + 1)))]
                cursor = int(rng.uniform(1.0, 3.0) * SR)
            for kind, want_s in plan:
                if self.present and rng.random() >= self.distractor_p:
                    c = self.present[int(rng.integers(len(self.present)))]
                    if mode == "train" and len(self.by_class_syn[c]) and len(self.by_class_real[c]):
                        share = min(self.max_synthetic_share, len(self.by_class_syn[c]) / len(self.by_class[c]))
                        grp = self.by_class_syn[c] if rng.random() < share else self.by_class_real[c]
                        i = int(rng.choice(grp))
                    else:
                        i = int(rng.choice(self.by_class[c]))
                else:
                    i = int(rng.choice(self.distractors))
                if mode == "train":
                    speed = float(rng.uniform(*self.train_speed_range)) if rng.random() < self.train_speed_p else 1.0
                else:
                    speed = float(rng.uniform(0.88, 1.12)) if rng.random() < 0.25 else 1.0
                a, m, hops = self._clip(i, rng, want_s, speed)
                n = len(a)
                if mode == "train":
                    lo = -n // 3 if rng.random() < 0.1 else 0
                    off = int(rng.integers(lo, max(lo + 1, L - HOP * 20)))
                    snr = float(rng.uniform(0, 15) if kind == "bed" else rng.uniform(-3, 30))
                else:
                    off = cursor
                    if off + HOP * 50 > L:
                        break
                    cursor = off + n + int(rng.uniform(1.0, 4.0) * SR)
                    snr = float(rng.uniform(3, 25))
                # fades
                fi = int(rng.uniform(0, 0.03) * SR)
                fo = int(rng.uniform(0.005, 0.1) * SR)
                if mode == "train" and rng.random() < 0.12:
                    fi = int(rng.uniform(0.3, 1.5) * SR)
                fi, fo = min(fi, n // 2), min(fo, n // 2)
                env = torch.ones(n, device=dev)
                if fi:
                    env[:fi] = torch.linspace(0, 1, fi, device=dev)
                if fo:
                    env[n - fo:] = torch.linspace(1, 0, fo, device=dev)
                gain = 10 ** (snr / 20) / max(self.rms[i], 1e-4)
                a = a * env * gain
                # place
                s0, s1 = max(0, off), min(L, off + n)
                if s1 <= s0:
                    continue
                audio_ev[b, s0:s1] += a[s0 - off:s1 - off]
                # targets: hop j of the clip lands on scene hop (off // HOP) + j
                # envelope at hop starts, computed on the host (no device sync)
                k = np.arange(len(m)) * HOP
                envh = np.ones(len(m), np.float32)
                if fi:
                    envh = np.minimum(envh, k / fi)
                if fo:
                    envh = np.minimum(envh, (n - k) / fo)
                mm = m[:len(envh)] * (envh > 0.1)
                h0 = off // HOP
                j0 = max(0, -h0)
                j1 = min(len(mm), T - h0)
                if j1 <= j0:
                    continue
                seg = mm[j0:j1]
                labs = np.nonzero(self.pool.labels[i])[0]
                for c in labs:
                    tgt[b, h0 + j0:h0 + j1, c] = np.maximum(tgt[b, h0 + j0:h0 + j1, c], seg)
                if soft:
                    vis = (envh[j0:j1] > 0.1)[:, None]
                    st = self.pool.teacher[i][hops[j0:j1]].astype(np.float32) * vis
                    stgt[b, h0 + j0:h0 + j1] = np.maximum(stgt[b, h0 + j0:h0 + j1], st)
                act = np.nonzero(seg > 0)[0]
                if len(act):
                    on = (h0 + j0 + act[0] + 1) * HOP / SR   # frame time = end of hop
                    offt = (h0 + j0 + act[-1] + 1) * HOP / SR
                    for c in labs:
                        events[b].append((int(c), on, offt, int(i)))
        # room, background, EQ, level
        if mode == "train":
            rows = [b for b in range(B) if rng.random() < 0.3]
        else:
            rows = [b for b in range(B) if rng.random() < 0.15]
        audio_ev = self._reverb(audio_ev, rng, rows)
        bg = self._colored_noise(B, L, rng)
        for b in range(B):
            if mode == "train" and rng.random() < 0.03:
                bg[b] = 0.0
            elif len(self.backgrounds) and rng.random() < 0.15:
                i = int(rng.choice(self.backgrounds))
                a, _, hops = self._clip(i, rng, L / SR, 1.0)
                a = a / max(self.rms[i], 1e-4)
                reps = -(-L // len(a))
                bg[b] = 0.5 * bg[b] + a.repeat(reps)[:L]
                if soft:
                    # tiled like the audio: scene hop t starts at sample 160 t of the repeats
                    src = hops[(np.arange(T) * HOP % len(a)) // HOP]
                    stgt[b] = np.maximum(stgt[b], self.pool.teacher[i][src].astype(np.float32))
        x = audio_ev + bg
        x = self._eq(x, rng)
        peak = x.abs().amax(1, keepdim=True).clamp_min(1e-6)
        lvl_db = self._h2d(rng.uniform(-40, -1, B).astype(np.float32))
        if mode == "eval":
            lvl_db = self._h2d(rng.uniform(-25, -3, B).astype(np.float32))
        x = x / peak * (10 ** (lvl_db / 20))[:, None]
        if mode == "train":
            for b in range(B):
                if rng.random() < 0.05:  # some clipping
                    x[b] = (x[b] * float(rng.uniform(2, 6))).clamp(-1, 1)
        if soft:
            return x.float(), self._h2d(tgt), events, self._h2d(stgt)
        return x.float(), self._h2d(tgt), events
