#!/usr/bin/env python3
"""Evaluate a mambatag model package (step.onnx) side by side with YAMNet.

    python3 -m models.eval.evaluate models/default --out models/default/eval      # full (~10 min, 2 cores)
    python3 -m models.eval.evaluate models/default --quick --out /tmp/ev            # CI smoke (~1 min)
    python3 -m models.eval.evaluate models/default --stability-hours 1.0 --out DIR  # long-stream check

Everything runs on CPU with onnxruntime, 1 intra-op thread. The package's ``step.onnx`` runs with
B = number of clips/scenes as batch rows (rows are independent, CONTRACT §2), states from zero.
Data: the VALIDATION split of the bundle (``.data/bundle``, ``models/data/build.py``); the train
split is touched only to pick YAMNet's per-class thresholds (the same recipe train.py used for the
shipped mambatag thresholds: frame-F1-optimal on train-pool scenes), and by ``--split train``, which
runs the same clip and scene measurements on the training split, to choose between runs without
looking at validation. Nothing is tuned on validation.

Measures (JSON + markdown in --out):

1. Clip-level AP per class and macro AP on the validation clips. Clip score = max over the clip's
   frames (mambatag: 10 ms frames; YAMNet: 0.96 s patches at 0.48 s hop). Every clip is run alone
   from a fresh state and padded with digital silence to at least 1.0 s (YAMNet needs 0.975 s; the
   same padding is given to both). Positives of a class: clips labelled with it; negatives: all
   other clips (other classes, distractors, background). 95% bootstrap intervals over clips.
2. Synthetic validation scenes (``scenes.SceneMixer(val_pool).generate(mode="eval")``: 30 s
   coloured-noise backgrounds, sometimes a recorded background, with non-overlapping events at
   3-25 dB over the background, mild reverb/EQ, fixed seed):
   - frame AP (mambatag frames; YAMNet patch scores held from the moment each patch is available,
     i.e. what a live listener sees, and, for reference, "aligned": each frame gets the max of the
     patches whose window covers it, which a live YAMNet cannot do);
   - onset-to-detection delay: for each reference event, first frame at or after its onset (and
     before offset + 1 s) whose score reaches the class threshold; delay = that frame's time (the
     moment the score exists) - onset. Median and p90 over detected events, and the miss rate;
   - event F1 at the thresholds: detected events by hysteresis (on at thr, off below 0.7 thr, as
     the engine does); a detection matches a reference event of its class when it overlaps
     [onset, offset + 1 s]; one-to-one greedy matching; per class and micro-averaged.
3. CPU time per second of audio, one thread: mambatag step graph at B=1 (live, one stream) and
   per stream at B=64; YAMNet per 0.96 s patch, counted at 0.48 s hop (live) and 0.96 s hop.
4. ``--stability-hours H``: H hours of continuous dense mixed validation audio (30 s train-mode
   scenes back to back) through one carried state per stream, then a probe (2 s of background +
   a validation event + 1 s), compared with the same probe from a fresh state.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from models.metrics import average_precision, tune_thresholds_frames  # noqa: E402
sys.path.insert(0, os.path.join(REPO, "models", "data"))
sys.path.insert(0, HERE)

SR = 16000
HOP = 160
TOL_S = 1.0        # detection window after offset (delay + F1)
MIN_CLIP_S = 1.0


# ----------------------------------------------------------------------------- metrics

def bootstrap_ap(y, s, n=200, seed=0):
    rng = np.random.default_rng(seed)
    N = len(y)
    vals = []
    for _ in range(n):
        ix = rng.integers(0, N, N)
        if y[ix].sum() == 0:
            continue
        vals.append(average_precision(y[ix], s[ix]))
    if not vals:
        return [float("nan"), float("nan")]
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


def hysteresis_events(s: np.ndarray, times: np.ndarray, thr: float, off_ratio: float = 0.7):
    """[(start_time, end_time)] where s >= thr starts an event and s < off_ratio*thr ends it."""
    return [(a, b) for a, b, _ in detect_events(s, times, thr, off_ratio, smooth=1, min_frames=1)]


# The CLI/daemon's event-logic defaults in frames (src/events.rs: DEFAULT_SMOOTH,
# DEFAULT_MIN_DURATION = 0.03 s = 3 hops of 10 ms).
EVENT_SMOOTH = 5
EVENT_MIN_FRAMES = 3


def detect_events(s, times, thr, off_ratio=0.7, smooth=1, min_frames=1):
    """The engine's event logic (src/events.rs): causal moving average over `smooth` frames,
    on at >= thr, off below off_ratio*thr, events shorter than `min_frames` dropped; an onset is
    announced once the event has lasted min_frames. Returns [(start, end, announce_time)]."""
    s = np.asarray(s, np.float64)
    if smooth > 1:
        c = np.cumsum(np.concatenate([[0.0], s]))
        n = np.arange(1, len(s) + 1)
        lo = np.maximum(0, n - smooth)
        s = (c[n] - c[lo]) / (n - lo)
    out, on, i0 = [], False, 0
    for i, v in enumerate(s):
        if not on and v >= thr:
            on, i0 = True, i
        elif on and v < off_ratio * thr:
            if i - i0 >= min_frames:
                out.append((times[i0], times[i], times[i0 + min_frames - 1]))
            on = False
    if on and len(s) - i0 >= min_frames:
        out.append((times[i0], times[-1], times[i0 + min_frames - 1]))
    return out


def scene_metrics(scores, times, events, classes, thresholds, smooth=1, min_frames=1, seg_s=1.0):
    """scores [N, F, C] (value available at times[f]), events[n] = [(c, on, off, clip)].

    - score delay: first frame in [onset, offset + TOL_S] with raw score >= threshold, minus onset;
    - announce delay: the first detected event (engine logic) overlapping [onset, offset + TOL_S],
      its announcement time minus onset (0 if it was already announced before the onset);
    - event P/R/F1: detections matched one-to-one to reference events of the class that they
      overlap (reference window [onset, offset + TOL_S]);
    - segment F1: 1 s segments, a segment is positive when a reference event / a detection
      overlaps it (DCASE-style segment-based F1)."""
    C = len(classes)
    delays = {c: [] for c in classes}
    adelays = {c: [] for c in classes}
    misses = {c: 0 for c in classes}
    tp = np.zeros(C, int)
    n_det = np.zeros(C, int)
    n_ref = np.zeros(C, int)
    seg = np.zeros((C, 3), int)   # tp, fp, fn
    per_event = {}                 # (scene, class, ref index) -> score delay in s
    dur = float(times[-1])
    nseg = int(math.ceil(dur / seg_s - 1e-9))
    for n, evs in enumerate(events):
        for k, c in enumerate(classes):
            thr = thresholds[c]
            refs = [(on, off) for (ci, on, off, _) in evs if ci == k]
            n_ref[k] += len(refs)
            s = scores[n, :, k]
            dets = detect_events(s, times, thr, smooth=smooth, min_frames=min_frames)
            for j, (on, off) in enumerate(refs):
                w = np.nonzero((times >= on - 1e-9) & (times <= off + TOL_S) & (s >= thr))[0]
                if len(w):
                    delays[c].append(float(times[w[0]] - on))
                    per_event[(n, k, j)] = float(times[w[0]] - on)
                else:
                    misses[c] += 1
                hit = [d for d in dets if d[0] <= off + TOL_S and d[1] >= on and d[2] <= off + TOL_S]
                if hit:
                    adelays[c].append(max(0.0, float(min(d[2] for d in hit) - on)))
            n_det[k] += len(dets)
            used = set()
            for (a, b, _) in dets:
                for j, (on, off) in enumerate(refs):
                    if j not in used and a <= off + TOL_S and b >= on:
                        used.add(j)
                        tp[k] += 1
                        break
            rs = np.zeros(nseg, bool)
            ds = np.zeros(nseg, bool)
            for on, off in refs:
                rs[int(on // seg_s):int(min(nseg - 1, off // seg_s)) + 1] = True
            for a, b, _ in dets:
                ds[int(a // seg_s):int(min(nseg - 1, b // seg_s)) + 1] = True
            seg[k] += [int((rs & ds).sum()), int((~rs & ds).sum()), int((rs & ~ds).sum())]

    def q(d, p):
        return 1000 * float(np.percentile(d, p)) if d else float("nan")

    per = {}
    all_d, all_a = [], []
    for k, c in enumerate(classes):
        d, ad = delays[c], adelays[c]
        all_d += d
        all_a += ad
        p = tp[k] / n_det[k] if n_det[k] else float("nan")
        r = tp[k] / n_ref[k] if n_ref[k] else float("nan")
        f1 = 2 * tp[k] / (n_det[k] + n_ref[k]) if (n_det[k] + n_ref[k]) else float("nan")
        sden = 2 * seg[k, 0] + seg[k, 1] + seg[k, 2]
        per[c] = {"events": int(n_ref[k]), "detected_onsets": len(d), "miss_rate": misses[c] / max(1, n_ref[k]),
                  "delay_median_ms": q(d, 50), "delay_p90_ms": q(d, 90),
                  "announce_delay_median_ms": q(ad, 50), "announce_delay_p90_ms": q(ad, 90),
                  "event_precision": p, "event_recall": r, "event_f1": f1,
                  "detections": int(n_det[k]), "tp": int(tp[k]),
                  "segment_f1": 2 * seg[k, 0] / sden if sden else float("nan")}
    P = tp.sum() / max(1, n_det.sum())
    R = tp.sum() / max(1, n_ref.sum())
    st = seg.sum(0)
    summ = {"events": int(n_ref.sum()),
            "delay_median_ms": q(all_d, 50), "delay_p90_ms": q(all_d, 90),
            "announce_delay_median_ms": q(all_a, 50), "announce_delay_p90_ms": q(all_a, 90),
            "miss_rate": 1 - len(all_d) / max(1, n_ref.sum()),
            "event_precision": float(P), "event_recall": float(R),
            "event_f1_micro": float(2 * tp.sum() / max(1, n_det.sum() + n_ref.sum())),
            "event_f1_macro": float(np.nanmean([per[c]["event_f1"] for c in classes])),
            "segment_f1_micro": float(2 * st[0] / max(1, 2 * st[0] + st[1] + st[2])),
            "segment_f1_macro": float(np.nanmean([per[c]["segment_f1"] for c in classes])),
            "postprocessing": {"smooth_frames": smooth, "min_frames": min_frames, "off_ratio": 0.7}}
    summ["_per_event"] = per_event
    return per, summ


def frame_ap(scores, targets, classes):
    s = scores.reshape(-1, len(classes))
    y = targets.reshape(-1, len(classes)) > 0
    ap = {c: average_precision(y[:, k], s[:, k]) for k, c in enumerate(classes)}
    vals = [v for v in ap.values() if not math.isnan(v)]
    return ap, float(np.mean(vals)) if vals else float("nan")


# ----------------------------------------------------------------------------- models

class StepModel:
    """A package's step.onnx run over [B, N] audio from zero state (or a given state)."""

    def __init__(self, path, threads=1):
        import onnxruntime as ort
        if os.path.isdir(path):
            path = os.path.join(path, "step.onnx")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        md = self.sess.get_modelmeta().custom_metadata_map
        self.meta = dict(md)
        self.labels = json.loads(md["mambatag.labels"])
        self.thresholds = json.loads(md["mambatag.thresholds"])
        self.hop = int(md["mambatag.hop"])
        self.states = [(i.name, i.shape[1:]) for i in self.sess.get_inputs() if i.name.startswith("state.")]
        self.out_names = ["scores"] + [n + ".next" for n, _ in self.states]

    def zero_state(self, B):
        return {n: np.zeros([B] + list(sh), np.float32) for n, sh in self.states}

    def run(self, audio: np.ndarray, state=None):
        """audio [B, N] (N multiple of hop) -> scores [B, N/hop, C], final state."""
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        B, N = audio.shape
        T = N // self.hop
        st = state if state is not None else self.zero_state(B)
        out = np.empty((B, T, len(self.labels)), np.float32)
        names = [n for n, _ in self.states]
        for t in range(T):
            feeds = {"audio": audio[:, t * self.hop:(t + 1) * self.hop]}
            feeds.update(st)
            res = self.sess.run(self.out_names, feeds)
            out[:, t] = res[0]
            st = dict(zip(names, res[1:]))
        return out, st


def yamnet_patch_scores(ym, x):
    """[P, 8] YAMNet 8-class scores of audio x and the time each patch becomes available."""
    import yamnet_baseline as yb
    if len(x) < yb.PATCH_SAMPLES:
        x = np.pad(x, (0, yb.PATCH_SAMPLES - len(x)))
    return ym.scores(x)


def yamnet_to_frames(ps, ends, T, mode="held"):
    """Patch scores -> [T, C] per 10 ms frame. held: latest patch available at the frame's time
    (zeros before the first patch); aligned: max of the patches whose window contains the frame."""
    import yamnet_baseline as yb
    ft = (np.arange(T) + 1) * HOP / SR
    out = np.zeros((T, ps.shape[1]), np.float32)
    if mode == "held":
        idx = np.searchsorted(ends, ft + 1e-9, side="right") - 1
        ok = idx >= 0
        out[ok] = ps[idx[ok]]
    else:
        starts = ends - yb.PATCH_SAMPLES / SR
        for p in range(len(ends)):
            m = (ft > starts[p]) & (ft <= ends[p] + 1e-9)
            out[m] = np.maximum(out[m], ps[p])
    return out




# ----------------------------------------------------------------------------- parts

def gen_scenes(pool, n, seconds, seed, mode="eval"):
    import torch
    import scenes
    torch.manual_seed(seed)
    mixer = scenes.SceneMixer(pool, "cpu")
    rng = np.random.default_rng(seed)
    L = int(seconds * SR) // HOP * HOP
    xs, ys, evs = [], [], []
    for i in range(0, n, 8):
        b = min(8, n - i)
        x, y, e = mixer.generate(b, L, rng, mode=mode)
        xs.append(x.numpy())
        ys.append(y.numpy())
        evs += e
    return np.concatenate(xs), np.concatenate(ys), evs


def eval_clips(model, ym, pool, classes, max_clips=None, batch=64, log=print):
    idx = np.arange(len(pool))
    if max_clips:
        rng = np.random.default_rng(0)
        # keep every class represented in quick mode
        pick = set()
        for c in range(len(classes)):
            pos = np.nonzero(pool.labels[:, c] > 0)[0]
            pick.update(rng.permutation(pos)[:max(2, max_clips // (len(classes) + 1))].tolist())
        neg = np.nonzero(pool.labels.sum(1) == 0)[0]
        pick.update(rng.permutation(neg)[:max(2, max_clips // (len(classes) + 1))].tolist())
        idx = np.array(sorted(pick))
    lens = np.array([max(len(pool.audio[i]), int(MIN_CLIP_S * SR)) for i in idx])
    order = idx[np.argsort(lens, kind="stable")]
    m_scores = {}
    t0 = time.process_time()
    for j in range(0, len(order), batch):
        grp = order[j:j + batch]
        n = max(max(len(pool.audio[i]), int(MIN_CLIP_S * SR)) for i in grp)
        n = -(-n // HOP) * HOP
        X = np.zeros((len(grp), n), np.float32)
        for r, i in enumerate(grp):
            X[r, :len(pool.audio[i])] = pool.audio[i]
        s, _ = model.run(X)
        for r, i in enumerate(grp):
            T = -(-max(len(pool.audio[i]), int(MIN_CLIP_S * SR)) // HOP)
            m_scores[i] = s[r, :T].max(0)
    m_cpu = time.process_time() - t0
    log(f"clips: mambatag {len(order)} clips in {m_cpu:.1f} s CPU")
    y_scores = {}
    t0 = time.process_time()
    if ym is not None:
        for i in idx:
            x = pool.audio[i]
            if len(x) < MIN_CLIP_S * SR:
                x = np.pad(x, (0, int(MIN_CLIP_S * SR) - len(x)))
            ps, _ = yamnet_patch_scores(ym, x)
            y_scores[i] = ps.max(0)
        log(f"clips: YAMNet {len(idx)} clips in {time.process_time() - t0:.1f} s CPU")
    Y = pool.labels[idx] > 0
    res = {"n_clips": int(len(idx)), "positives": {c: int(Y[:, k].sum()) for k, c in enumerate(classes)}}
    for name, sc in (("mambatag", m_scores), ("yamnet", y_scores)):
        if not sc:
            continue
        S = np.stack([sc[i] for i in idx])
        ap = {c: average_precision(Y[:, k], S[:, k]) for k, c in enumerate(classes)}
        ci = {c: bootstrap_ap(Y[:, k], S[:, k]) for k, c in enumerate(classes)}
        vals = [v for v in ap.values() if not math.isnan(v)]
        res[name] = {"ap": ap, "ap_ci95": ci, "macro_ap": float(np.mean(vals)) if vals else float("nan")}
    return res


def eval_scenes(model, ym, va_pool, classes, n_scenes, seconds, ym_thresholds, log=print,
                smooth=EVENT_SMOOTH, min_frames=EVENT_MIN_FRAMES):
    X, Yt, events = gen_scenes(va_pool, n_scenes, seconds, seed=2027, mode="eval")
    N, L = X.shape
    T = L // HOP
    ft = (np.arange(T) + 1) * HOP / SR
    t0 = time.process_time()
    S, _ = model.run(X)
    log(f"scenes: mambatag {N} x {seconds:.0f} s in {time.process_time() - t0:.1f} s CPU")
    res = {"n_scenes": int(N), "seconds": seconds, "events_per_class": {}}
    fap, fmap = frame_ap(S, Yt, classes)
    per, summ = scene_metrics(S, ft, events, classes, model.thresholds, smooth=smooth,
                              min_frames=min_frames)
    res["mambatag"] = {"frame_ap": fap, "frame_map": fmap, "per_class": per, "summary": summ,
                       "thresholds": model.thresholds}
    if ym is not None:
        t0 = time.process_time()
        held, aligned, pscores, pends = [], [], [], None
        for n in range(N):
            ps, ends = yamnet_patch_scores(ym, X[n])
            pscores.append(ps)
            pends = ends
            held.append(yamnet_to_frames(ps, ends, T, "held"))
            aligned.append(yamnet_to_frames(ps, ends, T, "aligned"))
        log(f"scenes: YAMNet {N} x {seconds:.0f} s in {time.process_time() - t0:.1f} s CPU")
        held = np.stack(held)
        aligned = np.stack(aligned)
        fap_h, fmap_h = frame_ap(held, Yt, classes)
        fap_a, fmap_a = frame_ap(aligned, Yt, classes)
        # delay / F1 on the patch time grid (a score exists only at each patch's end)
        P = np.stack(pscores)
        per_y, summ_y = scene_metrics(P, pends, events, classes, ym_thresholds)
        pm, py = summ.pop("_per_event"), summ_y.pop("_per_event")
        both = sorted(set(pm) & set(py))
        dm = np.array([pm[e] for e in both])
        dy = np.array([py[e] for e in both])
        res["paired_delay"] = {
            "events_detected_by_both": len(both),
            "mambatag_median_ms": 1000 * float(np.median(dm)) if both else float("nan"),
            "yamnet_median_ms": 1000 * float(np.median(dy)) if both else float("nan"),
            "mambatag_p90_ms": 1000 * float(np.percentile(dm, 90)) if both else float("nan"),
            "yamnet_p90_ms": 1000 * float(np.percentile(dy, 90)) if both else float("nan"),
            "share_mambatag_first": float(np.mean(dm < dy)) if both else float("nan")}
        res["yamnet"] = {"frame_ap_held": fap_h, "frame_map_held": fmap_h,
                         "frame_ap_aligned": fap_a, "frame_map_aligned": fmap_a,
                         "per_class": per_y, "summary": summ_y, "thresholds": ym_thresholds}
    summ.pop("_per_event", None)
    for k, c in enumerate(classes):
        res["events_per_class"][c] = int(sum(1 for e in events for (ci, *_r) in e if ci == k))
    return res


def yamnet_thresholds(ym, tr_pool, classes, n_scenes, seconds, log=print):
    """YAMNet thresholds from train-pool scenes (half eval-mode, half train-mode, as train.py)."""
    t0 = time.process_time()
    Xa, Ya, _ = gen_scenes(tr_pool, n_scenes // 2, seconds, seed=4321, mode="eval")
    Xb, Yb, _ = gen_scenes(tr_pool, n_scenes - n_scenes // 2, seconds, seed=4322, mode="train")
    X = np.concatenate([Xa, Xb])
    Y = np.concatenate([Ya, Yb])
    T = X.shape[1] // HOP
    S = np.stack([yamnet_to_frames(*yamnet_patch_scores(ym, x), T, "held") for x in X])
    th = tune_thresholds_frames(S.reshape(-1, len(classes)), Y.reshape(-1, len(classes)), classes)
    log(f"YAMNet thresholds from {len(X)} train-pool scenes ({time.process_time() - t0:.1f} s CPU): {th}")
    return th


def cpu_cost(model, ym, reps=2000, log=print):
    res = {}
    rng = np.random.default_rng(0)
    for B in (1, 64):
        x = (0.1 * rng.standard_normal((B, HOP * (reps if B == 1 else reps // 8)))).astype(np.float32)
        model.run(x[:, :HOP * 50])
        t0, w0 = time.process_time(), time.perf_counter()
        model.run(x)
        cpu = time.process_time() - t0
        wall = time.perf_counter() - w0
        steps = x.shape[1] // HOP
        audio_s = steps * HOP / SR * B
        res[f"mambatag_B{B}"] = {"cpu_s_per_audio_s": cpu / audio_s, "wall_s_per_audio_s": wall / audio_s,
                                 "us_per_step_call": 1e6 * wall / steps}
    if ym is not None:
        import yamnet_baseline as yb
        x = (0.1 * rng.standard_normal(SR * 60)).astype(np.float32)
        P, _ = yb.patches(x)
        ym.scores521(P[:10])
        t0 = time.process_time()
        for _ in range(3):
            ym.scores521(P)
        net = (time.process_time() - t0) / 3 / len(P)
        t0, w0 = time.process_time(), time.perf_counter()
        for _ in range(3):
            ym.scores(x)
        cpu = (time.process_time() - t0) / 3
        wall = (time.perf_counter() - w0) / 3
        res["yamnet"] = {"cpu_s_per_patch_network": net, "cpu_s_per_audio_s_hop0.48": net / 0.48,
                         "cpu_s_per_audio_s_hop0.96": net / 0.96,
                         "cpu_s_per_audio_s_incl_frontend": cpu / 60.0, "wall_s_per_audio_s": wall / 60.0}
    log(f"cpu: {json.dumps(res)}")
    return res


def stability(model, va_pool, classes, hours, streams=2, lead_ins=(2.0, 5.0, 10.0, 30.0), log=print):
    """`hours` of dense mixed val audio through one state per stream, then a probe (lead-in of quiet
    noise + a validation event + 1 s) compared with the same probe from a fresh state.

    Control: the same probe after only the LAST 30 s block of the stream (from a fresh state): if
    the long-state and the 30 s-state differences match, what remains is the model's memory of
    recent context, not drift accumulated over the hour. Several lead-in lengths show how fast the
    context is forgotten."""
    import torch
    import scenes
    torch.manual_seed(7)
    mixer = scenes.SceneMixer(va_pool, "cpu")
    rng = np.random.default_rng(77)
    L = 30 * SR
    blocks = int(round(hours * 3600 / 30))
    st = model.zero_state(streams)
    t0 = time.process_time()
    w0 = time.time()
    last = None
    for b in range(blocks):
        x, _, _ = mixer.generate(streams, L, rng, mode="train")
        last = x.numpy()
        s, st = model.run(last, st)
        if b % 20 == 0:
            log(f"stability: block {b}/{blocks} ({time.time() - w0:.0f} s)")
    cpu_hour = time.process_time() - t0
    _, st_short = model.run(last)
    state_abs = {n: float(np.abs(v).max()) for n, v in st.items()}
    state_abs_short = {n: float(np.abs(v).max()) for n, v in st_short.items()}
    finite = all(np.isfinite(v).all() for v in st.values())
    byc = va_pool.by_class()
    probes = []
    for c in (["alarm", "speech"] + ["music"] * max(0, streams - 2))[:streams]:
        probes.append((c, int(byc[classes.index(c)][0])))
    n_ev = min(max(len(va_pool.audio[i]) for _, i in probes), 8 * SR)
    rows = []
    for lead in lead_ins:
        Lp = (int(lead * SR) + n_ev + SR) // HOP * HOP
        P = np.zeros((streams, Lp), np.float32)
        noise_rng = np.random.default_rng(5)
        for r, (c, i) in enumerate(probes):
            ev = va_pool.audio[i][:n_ev] * 0.3
            P[r] = noise_rng.standard_normal(Lp).astype(np.float32) * 0.003
            P[r, int(lead * SR):int(lead * SR) + len(ev)] += ev
        on = int(lead * SR) // HOP
        s_long, _ = model.run(P, st)
        s_short, _ = model.run(P, st_short)
        s_fresh, _ = model.run(P)
        d = np.abs(s_long - s_fresh)[:, on:]
        d_short = np.abs(s_short - s_fresh)[:, on:]
        d_ls = np.abs(s_long - s_short)[:, on:]
        rows.append({"lead_in_s": lead,
                     "max_abs_diff_long_vs_fresh": float(d.max()),
                     "max_abs_diff_30s_vs_fresh": float(d_short.max()),
                     "max_abs_diff_long_vs_30s": float(d_ls.max()),
                     "worst_label_long_vs_fresh": classes[int(d.max((0, 1)).argmax())],
                     "probe_class_peak_long": [float(s_long[r, on:, classes.index(c)].max()) for r, (c, _) in enumerate(probes)],
                     "probe_class_peak_fresh": [float(s_fresh[r, on:, classes.index(c)].max()) for r, (c, _) in enumerate(probes)],
                     "pass_0.05": bool(d.max() <= 0.05)})
    res = {"hours_per_stream": blocks * 30 / 3600, "streams": streams,
           "cpu_s_for_the_hours": cpu_hour, "wall_s": time.time() - w0,
           "state_finite": bool(finite), "state_max_abs_after_hours": state_abs,
           "state_max_abs_after_last_30s_only": state_abs_short,
           "probes": [{"class": c, "clip": va_pool.meta[i]["pkg"] + ":" + va_pool.meta[i]["path"]} for c, i in probes],
           "by_lead_in": rows,
           "pass_0.05_at_2s_lead_in": rows[0]["pass_0.05"]}
    log(f"stability: {json.dumps(res)}")
    return res


# ----------------------------------------------------------------------------- report

def fmt(v, d=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{d}f}"


def markdown(R):
    classes = R["classes"]
    split_name = {"val": "validation", "train": "training"}[R.get("split", "val")]
    L = [f"# Evaluation of {R['model']['name']} {R['model']['version']}", "",
         f"{R['machine']}, {R['date']}, `{R['command']}`", ""]
    if "clips" in R:
        c = R["clips"]
        lead = f", after {c['lead_in_s']:g} s of silence" if c.get("lead_in_s") else ""
        L += [f"## {split_name.capitalize()} clips ({c['n_clips']} clips{lead}, clip score = max over frames)", "",
              "| class | positives | mambatag AP [95% CI] | YAMNet AP [95% CI] |", "|---|---|---|---|"]
        for k in classes:
            m = c["mambatag"]
            y = c.get("yamnet")
            L.append(f"| {k} | {c['positives'][k]} | {fmt(m['ap'][k])} [{fmt(m['ap_ci95'][k][0], 2)}–{fmt(m['ap_ci95'][k][1], 2)}] | "
                     + (f"{fmt(y['ap'][k])} [{fmt(y['ap_ci95'][k][0], 2)}–{fmt(y['ap_ci95'][k][1], 2)}] |" if y else "– |"))
        L.append(f"| **macro** | | **{fmt(c['mambatag']['macro_ap'])}** | **{fmt(c['yamnet']['macro_ap']) if 'yamnet' in c else '–'}** |")
        L.append("")
    if "scenes" in R:
        s = R["scenes"]
        m, y = s["mambatag"], s.get("yamnet")
        ms, ys = m["summary"], (y["summary"] if y else None)

        def yv(key, k=None, d=3):
            if not y:
                return "–"
            src = y["per_class"][k] if k else ys
            return fmt(src[key], d)
        pp = ms["postprocessing"]
        min_ms = pp["min_frames"] * HOP / SR * 1000
        L += [f"## Synthetic {split_name} scenes ({s['n_scenes']} × {s['seconds']:.0f} s, {ms['events']} events)", "",
              "Delays in ms, median / p90 over detected events. *score*: first frame whose raw score reaches the "
              "threshold (YAMNet: first patch, at the time the patch exists); *announced*: mambatag's CLI/daemon "
              f"event logic ({pp['smooth_frames']}-frame moving average, {min_ms:.0f} ms minimum duration, "
              f"onset announced once it has lasted {min_ms:.0f} ms).", "",
              "| class | events | mambatag frame AP | YAMNet frame AP held / aligned | mambatag score delay | mambatag announced delay | YAMNet score delay | mambatag miss | YAMNet miss |",
              "|---|---|---|---|---|---|---|---|---|"]
        for k in classes:
            mp = m["per_class"][k]
            L.append(f"| {k} | {mp['events']} | {fmt(m['frame_ap'][k])} | "
                     + (f"{fmt(y['frame_ap_held'][k])} / {fmt(y['frame_ap_aligned'][k])}" if y else "–")
                     + f" | {fmt(mp['delay_median_ms'], 0)} / {fmt(mp['delay_p90_ms'], 0)}"
                     + f" | {fmt(mp['announce_delay_median_ms'], 0)} / {fmt(mp['announce_delay_p90_ms'], 0)}"
                     + f" | {yv('delay_median_ms', k, 0)} / {yv('delay_p90_ms', k, 0)}"
                     + f" | {fmt(mp['miss_rate'], 2)} | {yv('miss_rate', k, 2)} |")
        L.append(f"| **all** | {ms['events']} | **{fmt(m['frame_map'])}** | "
                 + (f"**{fmt(y['frame_map_held'])} / {fmt(y['frame_map_aligned'])}**" if y else "–")
                 + f" | **{fmt(ms['delay_median_ms'], 0)} / {fmt(ms['delay_p90_ms'], 0)}**"
                 + f" | **{fmt(ms['announce_delay_median_ms'], 0)} / {fmt(ms['announce_delay_p90_ms'], 0)}**"
                 + f" | **{yv('delay_median_ms', None, 0)} / {yv('delay_p90_ms', None, 0)}**"
                 + f" | {fmt(ms['miss_rate'], 2)} | {yv('miss_rate', None, 2)} |")
        if "paired_delay" in s:
            pd = s["paired_delay"]
            L += ["", f"Paired: on the {pd['events_detected_by_both']} events both models detected, score delay median "
                  f"{fmt(pd['mambatag_median_ms'], 0)} ms (p90 {fmt(pd['mambatag_p90_ms'], 0)}) for mambatag vs "
                  f"{fmt(pd['yamnet_median_ms'], 0)} ms (p90 {fmt(pd['yamnet_p90_ms'], 0)}) for YAMNet; mambatag first on "
                  f"{100 * pd['share_mambatag_first']:.0f}% of them."]
        L += ["", "Event F1 (detections matched one-to-one to overlapping reference events of the class, "
              "reference window extended 1 s past the offset) and 1 s segment F1, at each model's thresholds "
              "(mambatag: shipped thresholds + CLI event logic; YAMNet: hysteresis on its patch scores):", "",
              "| class | mambatag event P / R / F1 | YAMNet event P / R / F1 | mambatag segment F1 | YAMNet segment F1 |",
              "|---|---|---|---|---|"]
        for k in classes:
            mp = m["per_class"][k]
            L.append(f"| {k} | {fmt(mp['event_precision'], 2)} / {fmt(mp['event_recall'], 2)} / {fmt(mp['event_f1'], 2)} | "
                     f"{yv('event_precision', k, 2)} / {yv('event_recall', k, 2)} / {yv('event_f1', k, 2)} | "
                     f"{fmt(mp['segment_f1'], 2)} | {yv('segment_f1', k, 2)} |")
        L.append(f"| **micro** | {fmt(ms['event_precision'], 2)} / {fmt(ms['event_recall'], 2)} / **{fmt(ms['event_f1_micro'], 2)}** | "
                 f"{yv('event_precision', None, 2)} / {yv('event_recall', None, 2)} / **{yv('event_f1_micro', None, 2)}** | "
                 f"**{fmt(ms['segment_f1_micro'], 2)}** | **{yv('segment_f1_micro', None, 2)}** |")
        L += ["", f"mambatag thresholds (shipped): `{json.dumps(m['thresholds'])}`"]
        if y:
            L.append(f"YAMNet thresholds (frame-F1 on train-pool scenes, the recipe train.py used for mambatag's): `{json.dumps(y['thresholds'])}`")
        L.append("")
    if "cpu" in R:
        c = R["cpu"]
        L += ["## CPU time per second of audio (onnxruntime, 1 thread)", "",
              "| model | setting | CPU s per audio s |", "|---|---|---|",
              f"| mambatag | B=1, one live stream ({fmt(c['mambatag_B1']['us_per_step_call'], 0)} µs per 10 ms step) | {fmt(c['mambatag_B1']['cpu_s_per_audio_s'], 4)} |",
              f"| mambatag | B=64, per stream | {fmt(c['mambatag_B64']['cpu_s_per_audio_s'], 4)} |"]
        if "yamnet" in c:
            L += [f"| YAMNet int8 | 0.48 s hop (live), network only | {fmt(c['yamnet']['cpu_s_per_audio_s_hop0.48'], 4)} |",
                  f"| YAMNet int8 | 0.48 s hop incl. numpy front end | {fmt(c['yamnet']['cpu_s_per_audio_s_incl_frontend'], 4)} |",
                  f"| YAMNet int8 | 0.96 s hop (no overlap), network only | {fmt(c['yamnet']['cpu_s_per_audio_s_hop0.96'], 4)} |"]
        L.append("")
    if "stability" in R:
        s = R["stability"]
        L += ["## Long-stream stability", "",
              f"{s['streams']} streams × {s['hours_per_stream']:.2f} h of dense mixed validation scenes (30 s train-mode scenes "
              f"back to back) through one carried state each, then a probe: quiet noise lead-in + a validation event "
              f"({', '.join(p['class'] for p in s['probes'])}) + 1 s. Max |score difference| over all labels from the event onset on; "
              f"control: the same probe after only the stream's last 30 s. States finite after the hour: {s['state_finite']}.", "",
              "| lead-in | 1 h state vs fresh | last-30 s state vs fresh | 1 h state vs last-30 s state | ≤ 0.05 |", "|---|---|---|---|---|"]
        for r in s["by_lead_in"]:
            L.append(f"| {r['lead_in_s']:.0f} s | {r['max_abs_diff_long_vs_fresh']:.3f} ({r['worst_label_long_vs_fresh']}) | "
                     f"{r['max_abs_diff_30s_vs_fresh']:.3f} | {r['max_abs_diff_long_vs_30s']:.2e} | {r['pass_0.05']} |")
        L.append("")
    return "\n".join(L) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package")
    ap.add_argument("--bundle", default=os.path.join(REPO, ".data", "bundle"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="few clips, 2 short scenes, small timing (CI smoke)")
    ap.add_argument("--scenes", type=int, default=64)
    ap.add_argument("--scene-seconds", type=float, default=30.0)
    ap.add_argument("--yamnet-tune-scenes", type=int, default=32)
    ap.add_argument("--no-yamnet", action="store_true")
    ap.add_argument("--only", default="clips,scenes,cpu", help="comma list of clips,scenes,cpu")
    ap.add_argument("--stability-hours", type=float, default=0.0)
    ap.add_argument("--stability-streams", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clip-lead-in", type=float, default=0.0, metavar="S",
                    help="put S seconds of silence before every clip (both models). At 0 (the protocol since "
                         "1.0.0) a clip's sound starts at YAMNet's first patch's first sample, its worst case; "
                         "0.48 (one patch hop) shows how much the comparison depends on that")
    ap.add_argument("--split", choices=["val", "train"], default="val",
                    help="val: the report. train: the same clips/scenes measurements on the TRAINING split "
                         "(its clips alone, eval-mode scenes mixed from the train pool), to choose between runs "
                         "without looking at validation")
    ap.add_argument("--smooth", type=int, default=EVENT_SMOOTH, metavar="N",
                    help="mambatag's event logic on the scenes: causal moving average over N frames "
                         f"(default {EVENT_SMOOTH}, the CLI's --smooth default)")
    ap.add_argument("--min-frames", type=int, default=EVENT_MIN_FRAMES, metavar="N",
                    help="mambatag's event logic on the scenes: minimum event length in frames, after "
                         f"which the onset is announced (default {EVENT_MIN_FRAMES} = the CLI's --min-duration "
                         "0.03; it was 5 = 0.05 s up to 1.5.0's first evaluation)")
    a = ap.parse_args(argv)
    if a.smooth < 1 or a.min_frames < 1:
        ap.error(f"--smooth {a.smooth} / --min-frames {a.min_frames}: give at least 1 frame")
    if not (0.0 <= a.clip_lead_in <= 60.0):
        ap.error(f"--clip-lead-in {a.clip_lead_in}: give seconds in [0, 60]")
    os.makedirs(a.out, exist_ok=True)

    import pool as poolmod
    model = StepModel(a.package, a.threads)
    classes = model.labels
    ym = None
    if not a.no_yamnet:
        try:
            import yamnet_baseline as yb
            ym = yb.YamNet(threads=a.threads)
        except (FileNotFoundError, ImportError) as e:
            print(f"YAMNet unavailable ({e}); mambatag only")
    R = {"model": {"name": model.meta.get("mambatag.model_name"), "version": model.meta.get("mambatag.model_version"),
                   "package": a.package},
         "classes": classes, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
         "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
         "command": "python3 -m models.eval.evaluate " + " ".join(argv if argv is not None else sys.argv[1:]),
         "quick": a.quick, "split": a.split}
    t_all = time.time()
    va = poolmod.load_bundle(a.bundle, a.split, threads=2)
    assert va.classes == classes, (va.classes, classes)
    only = set(a.only.split(",")) if a.only else set()
    if "clips" in only:
        cp = va
        if a.clip_lead_in > 0:
            # every clip after S seconds of digital silence, for both models
            lead = np.zeros(int(round(a.clip_lead_in * SR)), np.float32)
            cp = poolmod.Pool([np.concatenate([lead, x]) for x in va.audio], list(va.labels), va.role,
                              list(va.loop), va.meta, va.classes)
        R["clips"] = eval_clips(model, ym, cp, classes, max_clips=40 if a.quick else None)
        R["clips"]["lead_in_s"] = a.clip_lead_in
    if "scenes" in only:
        ym_th = None
        if ym is not None:
            if a.quick:
                ym_th = {c: 0.3 for c in classes}
            else:
                tr = poolmod.load_bundle(a.bundle, "train", threads=2)
                ym_th = yamnet_thresholds(ym, tr, classes, a.yamnet_tune_scenes, a.scene_seconds)
                del tr
        R["scenes"] = eval_scenes(model, ym, va, classes, 2 if a.quick else a.scenes,
                                  5.0 if a.quick else a.scene_seconds, ym_th,
                                  smooth=a.smooth, min_frames=a.min_frames)
    if "cpu" in only:
        R["cpu"] = cpu_cost(model, ym, reps=200 if a.quick else 3000)
    if a.stability_hours > 0:
        R["stability"] = stability(model, va, classes, a.stability_hours, a.stability_streams)
    R["wall_s"] = time.time() - t_all
    with open(os.path.join(a.out, "eval.json"), "w") as f:
        json.dump(R, f, indent=1, default=float)
    md = markdown(R)
    with open(os.path.join(a.out, "eval.md"), "w") as f:
        f.write(md)
    print(md)
    return R


if __name__ == "__main__":
    main()
