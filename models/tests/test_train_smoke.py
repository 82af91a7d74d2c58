"""CPU smoke run of models/train.py (2 tiny steps on fake data): the training script runs end to
end and writes loadable weights with front-end stats and thresholds."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def test_train_smoke(tmp_path):
    from models import train
    from models.mamba import MambaTagger

    summary = train.main(["--smoke", "--out", str(tmp_path)])
    assert summary["steps"] == 2
    w = tmp_path / "weights.safetensors"
    assert w.exists()
    m = MambaTagger.from_safetensors(w)
    assert m.config.labels == ["speech", "music", "animal", "alarm", "vehicle", "tools", "impact", "weather"]
    assert float(m.frontend.std.min()) > 0 and not np.allclose(m.frontend.mean.numpy(), 0)
    th = json.loads((tmp_path / "thresholds.json").read_text())
    assert set(th) == set(m.config.labels) and all(0 < v < 1 for v in th.values())
    with torch.no_grad():
        p = m(torch.zeros(1, 1600))
    assert p.shape == (1, 10, 8)
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert all(json.loads(l) for l in lines)


def test_scene_targets_follow_events():
    sys.path.insert(0, str(ROOT / "models" / "data"))
    import pool
    import scenes

    p = pool.fake_pool(seed=3)
    mixer = scenes.SceneMixer(p)
    x, y, ev = mixer.generate(2, 16000 * 10, np.random.default_rng(0), mode="eval", n_events=(2, 3))
    assert x.shape == (2, 160000) and y.shape == (2, 1000, 8)
    assert float(x.abs().max()) <= 1.0
    for b in range(2):
        assert ev[b], "eval scenes have events"
        for c, on, off, _ in ev[b]:
            t_on = int(round(on * 100)) - 1
            assert y[b, t_on, c] == 1 and off > on


def test_teacher_segments_cut_confident_pieces():
    sys.path.insert(0, str(ROOT / "models" / "data"))
    import build

    x = np.arange(16000 * 10, dtype=np.float32)
    # patches every 0.48 s; only those ending at 3.375, 3.855, 4.335 s are confident for "animal"
    ends = [0.975 + 0.48 * k for k in range(19)]
    sc = [[0.0] * 8 for _ in ends]
    for k, e in enumerate(ends):
        if 2.9 < e < 4.4:
            sc[k][2] = 0.9
    pieces = build.teacher_segments(x, {"scores": sc, "patch_end_s": ends}, "animal", 0.5, 20.0, 120.0)
    assert len(pieces) == 1
    p = pieces[0]
    assert abs(p[0] / 16000 - (3.375 - 0.975)) < 0.02 and abs((p[-1] + 1) / 16000 - 4.335) < 0.02
    # max piece length and the per-file total are respected; pieces under 1 s are dropped
    sc2 = [[0.0, 0, 0.9, 0, 0, 0, 0, 0] for _ in ends]
    pieces = build.teacher_segments(x, {"scores": sc2, "patch_end_s": ends}, "animal", 0.5, 3.0, 5.0)
    assert all(len(q) <= 3 * 16000 for q in pieces) and sum(len(q) for q in pieces) <= 6 * 16000


def test_synthetic_share_cap_train_only():
    sys.path.insert(0, str(ROOT / "models" / "data"))
    import pool
    import scenes

    p = pool.fake_pool(seed=4, per_class=4)
    # the first clip of every class is "real", the other three synthetic
    for i, m in enumerate(p.meta):
        m["synthetic"] = not (i % 4 == 0) if i < 32 else False
    mixer = scenes.SceneMixer(p, max_synthetic_share=0.5)
    assert all(len(r) == 1 and len(s) == 3 for r, s in zip(mixer.by_class_real, mixer.by_class_syn))
    # eval mode draws exactly as before (same rng stream as a mixer without the cap)
    ref = scenes.SceneMixer(p, max_synthetic_share=1.0)
    a = mixer.generate(2, 16000 * 5, np.random.default_rng(9), mode="eval")
    b = ref.generate(2, 16000 * 5, np.random.default_rng(9), mode="eval")
    assert a[2] == b[2]


def test_train_smoke_with_maxpool_loss(tmp_path):
    from models import train

    summary = train.main(["--smoke", "--out", str(tmp_path), "--maxpool-w", "0.5", "--maxpool-frames", "50,100"])
    assert summary["steps"] == 2
    logged = [json.loads(l) for l in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    mp = [d["maxpool"] for d in logged if d.get("maxpool") is not None]
    assert mp and all(v > 0 for v in mp)


def test_maxpool_loss_sees_the_spike_that_frame_bce_averages_away():
    from models.train import maxpool_bce
    import torch.nn.functional as F

    T, C = 300, 2
    y = torch.zeros(1, T, C)
    y[0, 100:200, 0] = 1  # class 0 present in the middle second; class 1 never
    g = torch.Generator().manual_seed(0)
    quiet = torch.where(y > 0, torch.tensor(4.0), torch.tensor(-4.0)) + 0.01 * torch.randn(1, T, C, generator=g)
    spiky = quiet.clone()
    spiky[0, 10, 1] = 4.0  # one confident false frame of class 1 (an onset spike)
    f0 = F.binary_cross_entropy_with_logits(quiet, y)
    f1 = F.binary_cross_entropy_with_logits(spiky, y)
    m0, m1 = maxpool_bce(quiet, y, [100]), maxpool_bce(spiky, y, [100])
    assert float(f1 - f0) < 0.01  # 1 frame in 600: frame BCE hardly notices
    assert float(m1 - m0) > 0.5  # 1 segment-class in 6: the max-pool loss does
    # its gradient reaches exactly the spiking frame of the absent class
    s = spiky.clone().requires_grad_(True)
    maxpool_bce(s, y, [100]).backward()
    g = s.grad[0, :, 1]
    assert g[10] > 0 and int((g != 0).sum()) == 3  # one frame per 100-frame segment
    # a length that does not divide T is used for the whole segments only; none at all is 0
    assert float(maxpool_bce(quiet, y, [1000])) == 0.0


def test_clip_ap_on_the_fake_pool(tmp_path):
    """models/eval/clip_ap.py: every clip scored, one AP per class in [0, 1], a clip's score is the
    max over its frames, and a model that scores every clip alike gets the positive rate."""
    sys.path.insert(0, str(ROOT / "models" / "data"))
    import pool
    from models.eval.clip_ap import clip_ap
    from models import train

    train.main(["--smoke", "--out", str(tmp_path), "--max-steps", "2"])
    from models.mamba import MambaTagger
    m = MambaTagger.from_safetensors(tmp_path / "weights.safetensors")
    m.eval()
    p = pool.fake_pool(seed=5)
    r = clip_ap(m, p)
    assert r["n_clips"] == len(p) and set(r["ap"]) == set(p.classes)
    assert all(0 <= v <= 1 for v in r["ap"].values())
    from models.eval.clip_ap import clip_scores
    x = np.zeros(16000, np.float32)
    x[:len(p.audio[0])] = p.audio[0]
    with torch.no_grad():
        frames = m(torch.from_numpy(x)[None])[0].numpy()
    assert np.allclose(clip_scores(m, p, [0])[0], frames.max(0))
    with torch.no_grad():
        for prm in m.head.parameters():
            prm.zero_()
    flat = clip_ap(m, p)
    # every clip scores 0.5 for every class: AP is the positive rate (3 of 26 clips per class)
    assert abs(flat["macro_ap"] - 3 / len(p)) < 1e-6
