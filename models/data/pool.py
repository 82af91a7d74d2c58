"""Load the data bundle written by build.py (index.json + Opus shards) into memory.

    pool = load_bundle(".data/bundle", split="train")   # or "val"
    pool.audio[i]      float32 [n] at 16 kHz (peak-normalised to 0.9)
    pool.labels[i]     multi-hot float32 [C]
    pool.mask[i]       uint8 [ceil(n/160)] activity per 10 ms hop (where the sound is audible)
    pool.role[i]       "event" | "distractor" | "background"
    pool.loop[i]       bool: loopable (engine, rain ...): the mixer may tile it, mask = all ones
    pool.meta[i]       the index record (source package, path, synthetic, ...)
    pool.teacher[i]    float16 [len(pool.mask[i]), C] YAMNet teacher scores per hop, on pool.mask's
                       hop grid (only with load_bundle(..., teacher=True), train split; else None)

Also `fake_pool()` (random synthetic sounds, no files) for the CPU smoke test.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SR = 16000
HOP = 160
CLASSES = ["speech", "music", "animal", "alarm", "vehicle", "tools", "impact", "weather"]
# teacher.npz layout written by models/data/teacher.py (2: clips scored after 0.48 s of silence)
TEACHER_FORMAT = "mambatag-teacher-2"


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
        self.teacher = None
        self.teacher_meta = None

    def attach_teacher(self, tracks: list[np.ndarray], meta: dict, source: str) -> None:
        """Set ``self.teacher`` after checking that every track lies on its clip's hop grid
        (``[len(mask[i]), C]``); ``source`` names where the tracks came from, for the error."""
        if len(tracks) != len(self.audio):
            raise ValueError(f"{source}: {len(tracks)} teacher tracks for a pool of {len(self.audio)} clips")
        for i, (t, m) in enumerate(zip(tracks, self.mask)):
            if t.shape != (len(m), len(self.classes)):
                raise ValueError(f"{source}: teacher track of clip {i} ({self.meta[i].get('path', '?')}) has "
                                 f"shape {t.shape}, the clip's hop grid needs ({len(m)}, {len(self.classes)})")
        self.teacher = [np.asarray(t, dtype=np.float16) for t in tracks]
        self.teacher_meta = meta

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
                include_synthetic: bool = True, teacher: bool | str = False) -> Pool:
    """``teacher``: True (``BUNDLE/teacher.npz``) or a path: attach the YAMNet teacher tracks
    written by ``models/data/teacher.py`` as ``pool.teacher`` (train split only); a missing file,
    or one made for another index.json, is an error."""
    if teacher and split != "train":
        raise ValueError(f"load_bundle({bundle_dir!r}, split={split!r}, teacher=...): teacher tracks exist for "
                         "the train split only (validation audio is never shown to the teacher)")
    index_path = os.path.join(bundle_dir, "index.json")
    with open(index_path, "rb") as f:
        raw = f.read()
    meta = json.loads(raw)
    classes = meta["classes"]
    # position in index.json's "clips" list: the key of teacher.npz
    sel = [k for k, r in enumerate(meta["clips"])
           if r["split"] == split and (include_synthetic or not r["synthetic"])]
    recs = [meta["clips"][k] for k in sel]
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
    pool = Pool(audio, labels, roles, loops, recs, classes)
    if teacher:
        path = os.path.join(bundle_dir, "teacher.npz") if teacher is True else teacher
        tracks, tmeta = read_teacher(path, bundle_dir, hashlib.sha256(raw).hexdigest(), classes, sel, recs)
        pool.attach_teacher(tracks, tmeta, path)
    return pool


def read_teacher(path: str, bundle_dir: str, index_sha256: str, classes: list[str], clip_ids: list[int],
                 recs: list[dict]) -> tuple[list[np.ndarray], dict]:
    """The teacher tracks of the clips ``clip_ids`` (positions in index.json's "clips", records
    ``recs``) from ``path`` (models/data/teacher.py's output), after checking that the file was
    made from this very index.json (sha256), for these classes, and that each clip's shard,
    start and length agree. Returns (tracks, the file's metadata)."""
    redo = f"(re)make it with `python3 models/data/teacher.py {bundle_dir} --out {path}`"
    if not os.path.exists(path):
        raise FileNotFoundError(f"teacher tracks {path} not found: {redo}")
    with np.load(path, allow_pickle=False) as z:
        tmeta = json.loads(str(z["meta"]))
        if tmeta.get("format") != TEACHER_FORMAT:
            raise ValueError(f"{path}: format {tmeta.get('format')!r}, expected {TEACHER_FORMAT!r}; {redo}")
        if tmeta["bundle_index_sha256"] != index_sha256:
            raise ValueError(f"{path} is stale: made for an index.json with sha256 "
                             f"{tmeta['bundle_index_sha256'][:12]}..., the bundle's is {index_sha256[:12]}...; {redo}")
        if tmeta["classes"] != list(classes):
            raise ValueError(f"{path}: classes {tmeta['classes']} differ from the bundle's {classes}; {redo}")
        ids, shard, start, n, offs = z["clip_index"], z["shard"], z["start"], z["n"], z["offsets"]
        tr = z["tracks"]
    row = {int(c): k for k, c in enumerate(ids)}
    tracks = []
    for cid, r in zip(clip_ids, recs):
        k = row.get(cid)
        if k is None:
            raise ValueError(f"{path}: no teacher track for clip {cid} ({r['pkg']}/{r['path']}); {redo}")
        if (str(shard[k]), int(start[k]), int(n[k])) != (r["shard"], r["start"], r["n"]):
            raise ValueError(f"{path}: clip {cid} is {shard[k]}@{start[k]}+{n[k]} there but "
                             f"{r['shard']}@{r['start']}+{r['n']} in index.json; {redo}")
        tracks.append(tr[offs[k]:offs[k + 1]])
    return tracks, tmeta


def fake_pool(seed: int = 0, per_class: int = 3, seconds: float = 1.0, teacher: bool = False) -> Pool:
    """Tiny synthetic pool (tones/noise bursts per class) for smoke tests; no files needed.
    ``teacher``: also attach plausible teacher tracks (0.8 x the clip's label plus up to 0.15 of
    noise per hop and class), drawn from their own generator so the audio is the same either way."""
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
    pool = Pool(audio, labels, roles, loops, metas)
    if teacher:
        trng = np.random.default_rng([seed, 1])
        tracks = [np.clip(0.8 * lab[None, :] + trng.uniform(0, 0.15, (len(m), len(CLASSES))), 0, 1)
                  for lab, m in zip(pool.labels, pool.mask)]
        pool.attach_teacher(tracks, {"format": TEACHER_FORMAT, "teacher": "fake_pool"}, "fake_pool")
    return pool
