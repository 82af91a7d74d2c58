"""Load the data bundle written by build.py (index.json + Opus shards) into memory.

    pool = load_bundle(".data/bundle", split="train")   # or "val"
    pool.audio[i]      float32 [n] at 16 kHz (peak-normalised to 0.9)
    pool.labels[i]     multi-hot float32 [C]
    pool.mask[i]       uint8 [ceil(n/160)] activity per 10 ms hop (where the sound is audible)
    pool.role[i]       "event" | "distractor" | "background"
    pool.loop[i]       bool: loopable (engine, rain ...): the mixer may tile it, mask = all ones
    pool.meta[i]       the index record (source package, path, synthetic, ...)

Also `fake_pool()` (random synthetic sounds, no files) for the CPU smoke test.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SR = 16000
HOP = 160
CLASSES = ["speech", "music", "animal", "alarm", "vehicle", "tools", "impact", "weather"]


def activity_mask(x: np.ndarray, rel_db: float = 30.0, floor_db: float = -55.0,
                  close_hops: int = 15) -> np.ndarray:
    """Per-hop activity: hop RMS above (max - rel_db) and above floor_db dBFS, with gaps of
    <= close_hops hops (150 ms) closed, so words/notes separated by short pauses form one event."""
    nh = -(-len(x) // HOP)
    pad = np.zeros(nh * HOP, np.float32)
    pad[:len(x)] = x
    rms = np.sqrt((pad.reshape(nh, HOP) ** 2).mean(1) + 1e-12)
    db = 20 * np.log10(rms)
    act = db > max(db.max() - rel_db, floor_db)
    idx = np.nonzero(act)[0]
    if len(idx) > 1:
        gaps = np.diff(idx)
        for a, g in zip(idx[:-1], gaps):
            if 1 < g <= close_hops + 1:
                act[a:a + g] = True
    return act.astype(np.uint8)


class Pool:
    def __init__(self, audio, labels, roles, loops, metas, classes=CLASSES):
        self.audio = audio
        self.labels = np.stack(labels).astype(np.float32) if labels else np.zeros((0, len(classes)), np.float32)
        self.role = list(roles)
        self.loop = np.array(loops, dtype=bool)
        self.meta = metas
        self.classes = list(classes)
        self.mask = [np.ones(-(-len(a) // HOP), np.uint8) if lp else activity_mask(a)
                     for a, lp in zip(audio, loops)]

    def __len__(self):
        return len(self.audio)

    def by_class(self) -> list[np.ndarray]:
        """Indices of event clips carrying each class."""
        ev = np.array([r == "event" for r in self.role])
        return [np.nonzero(ev & (self.labels[:, c] > 0))[0] for c in range(len(self.classes))]

    def indices(self, role: str) -> np.ndarray:
        return np.array([i for i, r in enumerate(self.role) if r == role], dtype=np.int64)

    def minutes(self) -> dict:
        out = {}
        for i, a in enumerate(self.audio):
            labs = [self.classes[c] for c in np.nonzero(self.labels[i])[0]] or [self.role[i]]
            for lab in labs:
                out[lab] = out.get(lab, 0.0) + len(a) / SR / 60
        return out


def _read_shard(path: str) -> np.ndarray:
    import soundfile as sf
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    if sr != SR:
        raise ValueError(f"{path}: {sr} Hz, expected {SR}")
    return x[:, 0]


def load_bundle(bundle_dir: str, split: str = "train", threads: int = 16,
                include_synthetic: bool = True) -> Pool:
    with open(os.path.join(bundle_dir, "index.json")) as f:
        meta = json.load(f)
    classes = meta["classes"]
    recs = [r for r in meta["clips"] if r["split"] == split and (include_synthetic or not r["synthetic"])]
    shards = sorted({r["shard"] for r in recs})
    with ThreadPoolExecutor(max_workers=threads) as ex:
        data = dict(zip(shards, ex.map(lambda s: _read_shard(os.path.join(bundle_dir, "audio", s)), shards)))
    audio, labels, roles, loops = [], [], [], []
    for r in recs:
        x = data[r["shard"]][r["start"]:r["start"] + r["n"]]
        audio.append(np.ascontiguousarray(x, dtype=np.float32))
        lab = np.zeros(len(classes), np.float32)
        for l in r["labels"]:
            lab[classes.index(l)] = 1
        labels.append(lab)
        roles.append(r["role"])
        loops.append(r["loop"])
    return Pool(audio, labels, roles, loops, recs, classes)


def fake_pool(seed: int = 0, per_class: int = 3, seconds: float = 1.0) -> Pool:
    """Tiny synthetic pool (tones/noise bursts per class) for smoke tests; no files needed."""
    rng = np.random.default_rng(seed)
    audio, labels, roles, loops, metas = [], [], [], [], []
    n = int(seconds * SR)
    t = np.arange(n) / SR
    for c, name in enumerate(CLASSES):
        for k in range(per_class):
            f = 200 * (c + 1) * (1 + 0.1 * k)
            x = np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * (c + 1) * t))
            x = (x + 0.05 * rng.standard_normal(n)).astype(np.float32) * 0.8
            lab = np.zeros(len(CLASSES), np.float32)
            lab[c] = 1
            audio.append(x)
            labels.append(lab)
            roles.append("event")
            loops.append(k == 0)
            metas.append({"pkg": "fake", "path": f"{name}{k}", "synthetic": True})
    for k in range(2):
        audio.append((rng.standard_normal(n) * 0.3).astype(np.float32))
        labels.append(np.zeros(len(CLASSES), np.float32))
        roles.append("distractor")
        loops.append(False)
        metas.append({"pkg": "fake", "path": f"d{k}", "synthetic": True})
    return Pool(audio, labels, roles, loops, metas)
