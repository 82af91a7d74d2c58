"""The optional training signals of models/train.py: onset emphasis (--onset-w, :func:`onset_weights`)
and YAMNet soft-label distillation (--distill-w): exact onset weights on hand-made targets, the loss
terms of step_loss, the mixer's soft targets (aligned with the hard targets, zero where nothing is
placed, background tiling) and that asking for them changes no random draw, and the smoke run."""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models" / "data"))

import pool  # noqa: E402
import scenes  # noqa: E402

LABELS8 = ["speech", "music", "animal", "alarm", "vehicle", "tools", "impact", "weather"]


def _w(seq, K, W, prev=None):
    """onset_weights of one row, one class given as a list."""
    from models.train import onset_weights

    y = torch.tensor(seq, dtype=torch.float32).view(1, -1, 1)
    p = None if prev is None else torch.tensor([[prev]], dtype=torch.float32)
    return onset_weights(y, K, W, p)[0, :, 0].tolist()


# onset_weights -----------------------------------------------------------------------------------

def test_onset_weights_hand_made():
    # two runs: the first longer than K (only its first K frames), the second cut by the end
    assert _w([0, 0, 1, 1, 1, 1, 1, 0, 1, 1], K=3, W=2) == [1, 1, 3, 3, 3, 1, 1, 1, 3, 3]
    # K boundary: the onset frame and the K - 1 after it, not frame onset + K
    assert _w([0] + [1] * 8, K=5, W=1) == [1, 2, 2, 2, 2, 2, 1, 1, 1]
    assert _w([0] + [1] * 8, K=1, W=1) == [1, 2, 1, 1, 1, 1, 1, 1, 1]
    # a new onset restarts the window; negative frames are never weighted
    assert _w([1, 1, 0, 1, 1, 1, 1, 0, 0], K=4, W=2) == [3, 3, 1, 3, 3, 3, 3, 1, 1]
    assert _w([1, 0, 1, 0, 1, 0], K=30, W=0.5) == [1.5, 1, 1.5, 1, 1.5, 1]
    # threshold: > 0.5 is on; 0.5 -> 0.6 is an onset, 0.5 itself is off
    assert _w([0.5, 0.6, 0.9, 0.5, 0.5], K=2, W=2) == [1, 3, 3, 1, 1]
    # W = 0: all ones
    assert _w([0, 1, 1, 0, 1], K=3, W=0) == [1] * 5


def test_onset_weights_frame_zero_follows_prev():
    seq = [1, 1, 1, 0, 0, 1, 1]
    # no prev (fresh stream) or prev off: frame 0 is an onset
    assert _w(seq, K=2, W=2) == [3, 3, 1, 1, 1, 3, 3]
    assert _w(seq, K=2, W=2, prev=0.0) == [3, 3, 1, 1, 1, 3, 3]
    # prev on: the run continues the previous step, no onset at frame 0; later onsets still count
    assert _w(seq, K=2, W=2, prev=1.0) == [1, 1, 1, 1, 1, 3, 3]
    # prev on but frame 0 off: nothing special
    assert _w([0, 1, 1], K=5, W=1, prev=1.0) == [1, 2, 2]


def test_onset_weights_rows_and_classes_independent_and_match_a_loop():
    from models.train import onset_weights

    y = torch.zeros(2, 6, 3)
    y[0, 1:4, 0] = 1   # row 0 class 0: onset at 1
    y[0, 0:6, 1] = 1   # row 0 class 1: on throughout
    y[1, 3:6, 0] = 1   # row 1 class 0: onset at 3
    prev = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    w = onset_weights(y, 2, 1.0, prev)
    assert w.shape == (2, 6, 3) and w.dtype == torch.float32
    assert w[0, :, 0].tolist() == [1, 2, 2, 1, 1, 1]
    assert w[0, :, 1].tolist() == [1] * 6          # continues from prev: no onset
    assert w[0, :, 2].tolist() == [1] * 6          # never on
    assert w[1, :, 0].tolist() == [1, 1, 1, 2, 2, 1]  # row 1's prev for class 0 is on, but frame 0 is off
    assert w[1, :, 1].tolist() == [1] * 6
    # random targets against a plain loop over frames
    g = torch.Generator().manual_seed(0)
    B, T, C, K, W = 3, 300, 8, 7, 2.5
    y = (torch.rand(B, T, C, generator=g) > 0.6).float() * torch.rand(B, T, C, generator=g)
    prev = torch.rand(B, C, generator=g)
    got = onset_weights(y, K, W, prev)
    ref = torch.ones(B, T, C)
    for b in range(B):
        for c in range(C):
            last, before = None, bool(prev[b, c] > 0.5)
            for t in range(T):
                on = bool(y[b, t, c] > 0.5)
                if on and not before:
                    last = t
                if on and last is not None and t - last < K:
                    ref[b, t, c] = 1 + W
                before = on
    assert torch.equal(got, ref)


# step_loss ---------------------------------------------------------------------------------------

def _tiny():
    from models.mamba import MambaConfig, MambaTagger

    m = MambaTagger(MambaConfig(d_model=16, n_layers=1, d_state=4, labels=LABELS8), seed=1)
    m.frontend.compute_dtype = torch.float32
    return m


def test_step_loss_adds_exactly_the_new_terms():
    from models.train import HOP, onset_weights, step_loss

    m = _tiny()
    g = torch.Generator().manual_seed(1)
    B, N = 2, 32000
    x = torch.randn(B, N, generator=g) * 0.1
    y = torch.zeros(B, N // HOP, 8)
    y[0, 0:40, 2] = 1
    y[1, 70:150, 5] = 1
    y[:, 120:190, 0] = 1
    soft = torch.rand(B, N // HOP, 8, generator=g)
    prev = torch.tensor([[0.0, 0, 1, 0, 0, 0, 0, 0], [0.0] * 8])
    a = argparse.Namespace(consist_w=0.0, fresh_bce_w=0.5, maxpool_w=0.0, consist_seconds=1.0, consist_skip=0.25)
    Wf = 100
    with torch.no_grad():
        lg = m(x, logits=True, state=m.init_state(B), return_state=True)[0].float()
        lf = m(x[:, :Wf * HOP], logits=True).float()
        base = F.binary_cross_entropy_with_logits(lg, y) + 0.5 * F.binary_cross_entropy_with_logits(lf, y[:, :Wf])
        # defaults: exactly the old loss
        loss0 = step_loss(m, x, y, m.init_state(B), a, [], False)[0]
        assert torch.allclose(loss0, base, rtol=1e-6, atol=0)
        terms = {}
        loss = step_loss(m, x, y, m.init_state(B), a, [], False, soft=soft, distill_w=0.7, onset_w=2.0,
                         onset_frames=10, prev=prev, terms=terms)[0]
    # the teacher only speaks where the hard label is off
    off = (y <= 0.5).float()
    want = (F.binary_cross_entropy_with_logits(lg, y, weight=onset_weights(y, 10, 2.0, prev))
            + 0.7 * F.binary_cross_entropy_with_logits(lg, soft, weight=off)
            + 0.5 * (F.binary_cross_entropy_with_logits(lf, y[:, :Wf], weight=onset_weights(y[:, :Wf], 10, 2.0))
                     + 0.7 * F.binary_cross_entropy_with_logits(lf, soft[:, :Wf], weight=off[:, :Wf])))
    assert torch.allclose(loss, want, rtol=1e-6, atol=0)
    assert torch.allclose(terms["distill"], F.binary_cross_entropy_with_logits(lg, soft, weight=off), rtol=1e-6,
                          atol=0)
    # so a teacher disagreeing with a label (soft 0 where y is 1) changes nothing
    soft2 = torch.where(y > 0.5, torch.zeros_like(soft), soft)
    with torch.no_grad():
        loss2 = step_loss(m, x, y, m.init_state(B), a, [], False, soft=soft2, distill_w=0.7, onset_w=2.0,
                          onset_frames=10, prev=prev)[0]
    assert torch.allclose(loss2, loss, rtol=1e-6, atol=0)
    # the onset weights make a difference here (row 0 class 2 continues from prev: no onset there)
    assert not torch.allclose(onset_weights(y, 10, 2.0, prev), onset_weights(y, 10, 2.0))
    with pytest.raises(ValueError, match="soft"):
        step_loss(m, x, y, m.init_state(B), a, [], False, distill_w=0.5)
    with pytest.raises(ValueError, match="prev"):
        step_loss(m, x, y, None, a, [], False, onset_w=1.0, prev=prev)


# the mixer's soft targets ------------------------------------------------------------------------

def _tone(n, f=440.0, seed=0):
    t = np.arange(n) / 16000
    rng = np.random.default_rng(seed)
    return (0.5 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


RAMP = 2048.0


def _ramp(nh):
    """(j + 1) / 2048: in (0, 1) and exact in float16 for j < 2047, so a soft value names its
    source hop."""
    assert nh < RAMP
    return (np.arange(nh) + 1) / RAMP


def test_soft_targets_follow_a_single_placed_clip():
    """One 5 s event clip (class 1) with a gap in its activity mask: its teacher track carries the
    source hop in class 0 (a ramp), its mask in class 1 and 0.5 in class 2. Each scene has one clip,
    cropped and sped up or down by the mixer at random."""
    n = 5 * 16000
    lab = np.zeros(8, np.float32)
    lab[1] = 1
    p = pool.Pool([_tone(n)], [lab], ["event"], [False], [{"pkg": "t", "path": "tone", "synthetic": False}])
    p.mask[0][:] = 1
    p.mask[0][200:260] = 0
    nh = len(p.mask[0])
    tr = np.zeros((nh, 8), np.float32)
    tr[:, 0] = _ramp(nh)
    tr[:, 1] = p.mask[0]
    tr[:, 2] = 0.5
    p.attach_teacher([tr], {"teacher": "test"}, "test")
    mixer = scenes.SceneMixer(p)
    speeds = set()
    for seed in range(6):
        x, y, ev, soft = mixer.generate(4, 16000 * 8, np.random.default_rng(seed), mode="eval",
                                        n_events=(1, 1), soft=True)
        assert soft.shape == y.shape == (4, 800, 8) and soft.dtype == torch.float32
        soft, y = soft.numpy(), y.numpy()
        assert soft.min() >= 0 and soft.max() <= 1
        for b in range(4):
            s = soft[b]
            # the mask column is the hard target: same hops, crop, speed and fade gate
            assert np.array_equal(s[:, 1], y[b, :, 1])
            vis = s[:, 2] > 0
            assert set(np.unique(s[:, 2])) <= {0.0, 0.5}
            idx = np.flatnonzero(vis)
            assert len(idx) and np.array_equal(idx, np.arange(idx[0], idx[-1] + 1))  # one placement
            assert not s[~vis].any()  # zero wherever the clip is not placed or faded out
            src = np.round(s[idx, 0] * RAMP).astype(int) - 1
            assert np.array_equal(s[idx], tr[src])  # teacher[source hop] x visibility 1, every class
            steps = np.diff(src)
            assert set(steps) <= {0, 1, 2}
            speeds.add(bool((steps == 1).all()))
            for c, on, off, _ in ev[b]:
                assert c == 1 and vis[int(round(on * 100)) - 1] and vis[int(round(off * 100)) - 1]
    assert speeds == {True, False}  # both plain and sped-up/down placements were checked


def test_soft_targets_tile_background_clips_like_the_audio():
    """Two background clips: A (0.7 s, not loopable: tiled) and B (loopable, longer than the scene:
    cropped). Their teacher tracks carry the source hop in classes 7 and 6; the event clip's track
    is 0 there."""
    L = 16000 * 5
    nA, nB = 11230, 3 * L + 50
    ev_lab = np.zeros(8, np.float32)
    ev_lab[0] = 1
    p = pool.Pool([_tone(16000), _tone(nA, 90.0, 1), _tone(nB, 60.0, 2)],
                  [ev_lab, np.zeros(8, np.float32), np.zeros(8, np.float32)],
                  ["event", "background", "background"], [False, False, True],
                  [{"pkg": "t", "path": k, "synthetic": False} for k in ("e", "A", "B")])
    tracks = [np.full((len(m), 8), 0.2, np.float32) for m in p.mask]
    tracks[0][:, 6:] = 0
    tracks[1][:] = 0
    tracks[1][:, 7] = _ramp(len(p.mask[1]))
    tracks[2][:] = 0
    tracks[2][:, 6] = _ramp(len(p.mask[2]))
    p.attach_teacher(tracks, {"teacher": "test"}, "test")
    mixer = scenes.SceneMixer(p)
    T = L // 160
    seen = {"A": 0, "B": 0, "none": 0}
    for mode in ("train", "eval"):
        for seed in range(4):
            _, _, _, soft = mixer.generate(16, L, np.random.default_rng(seed), mode=mode, soft=True)
            soft = soft.numpy()
            assert soft.min() >= 0 and soft.max() <= 1
            for b in range(16):
                a7, b6 = soft[b, :, 7], soft[b, :, 6]
                if a7.any():
                    seen["A"] += 1
                    assert not b6.any()
                    want = ((np.arange(T) * 160 % nA) // 160 + 1) / RAMP
                    assert np.array_equal(a7, want.astype(np.float32))
                elif b6.any():
                    seen["B"] += 1
                    src = np.round(b6 * RAMP).astype(int) - 1
                    assert np.array_equal(np.diff(src), np.ones(T - 1, int))  # a contiguous crop
                    assert 0 <= src[0] and src[-1] < len(p.mask[2])
                else:
                    seen["none"] += 1
    assert min(seen.values()) > 0, seen


def _pool_with_background(teacher):
    p = pool.fake_pool(seed=6, teacher=teacher)
    bg = _tone(16000 * 3, 70.0, 5)
    q = pool.Pool(p.audio + [bg], list(p.labels) + [np.zeros(8, np.float32)], p.role + ["background"],
                  list(p.loop) + [False], p.meta + [{"pkg": "fake", "path": "bg", "synthetic": True}])
    if teacher:
        q.attach_teacher(p.teacher + [np.full((len(q.mask[-1]), 8), 0.1, np.float16)], p.teacher_meta, "test")
    return q


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_soft_targets_change_no_random_draw(mode):
    """Eval-mode scenes are a fixed validation set and a distillation run should see the scenes of
    the run without it: soft=True must draw exactly what soft=False draws."""
    plain = scenes.SceneMixer(_pool_with_background(False))
    withs = scenes.SceneMixer(_pool_with_background(True))
    assert all(np.array_equal(a, b) for a, b in zip(plain.pool.audio, withs.pool.audio))
    for seed in range(4):
        r0, r1 = np.random.default_rng(seed), np.random.default_rng(seed)
        x0, y0, e0 = plain.generate(6, 16000 * 6, r0, mode=mode)
        x1, y1, e1, s1 = withs.generate(6, 16000 * 6, r1, mode=mode, soft=True)
        assert torch.equal(x0, x1) and torch.equal(y0, y1) and e0 == e1
        assert r0.bit_generator.state == r1.bit_generator.state
        assert float(s1.max()) > 0 and float(s1.min()) >= 0 and float(s1.max()) <= 1
        # where a class's hard target is on, its clip's teacher (0.8 + noise) is on too
        assert bool((s1[y1 > 0.5] >= 0.79).all())
    with pytest.raises(ValueError, match="teacher"):
        plain.generate(1, 16000, np.random.default_rng(0), soft=True)


# train.py ----------------------------------------------------------------------------------------

def test_train_smoke_with_distillation_and_onset_emphasis(tmp_path):
    from models import train
    from models.mamba import MambaTagger

    summary = train.main(["--smoke", "--out", str(tmp_path), "--distill-w", "0.5", "--onset-w", "2"])
    assert summary["steps"] == 2
    assert summary["signals"] == {"distill_w": 0.5, "teacher": "fake_pool", "onset_w": 2.0, "onset_frames": 30}
    for f in ("weights.safetensors", "thresholds.json", "train_log.jsonl", "train_summary.json"):
        assert (tmp_path / f).exists(), f
    MambaTagger.from_safetensors(tmp_path / "weights.safetensors")
    logged = [json.loads(l) for l in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    d = [r["distill"] for r in logged if "step" in r and "loss" in r]
    assert len(d) == 2 and all(v is not None and v > 0 for v in d)
    # off by default: no distillation term logged
    train.main(["--smoke", "--out", str(tmp_path / "off")])
    logged = [json.loads(l) for l in (tmp_path / "off" / "train_log.jsonl").read_text().splitlines()]
    assert all(r["distill"] is None for r in logged if "step" in r and "loss" in r)


@pytest.mark.parametrize("reset_p,carried", [("0", True), ("1", False)])
def test_train_passes_the_previous_steps_last_targets(monkeypatch, tmp_path, reset_p, carried):
    """--onset-w: step 2's carried run gets step 1's last frame of targets as `prev` (no reset),
    or zeros for rows reset to a zero state; step 1 has no carried state and no prev."""
    from models import train

    seen = []
    orig = train.step_loss

    def rec(model, x, y, state, *args, **kw):
        seen.append({"y": y.clone(), "prev": kw.get("prev"), "carried": state is not None})
        return orig(model, x, y, state, *args, **kw)

    monkeypatch.setattr(train, "step_loss", rec)
    train.main(["--smoke", "--out", str(tmp_path), "--onset-w", "2", "--reset-p", reset_p])
    assert [s["carried"] for s in seen] == [False, True]
    assert seen[0]["prev"] is None
    want = seen[0]["y"][:, -1] if carried else torch.zeros_like(seen[0]["y"][:, -1])
    assert torch.equal(seen[1]["prev"], want)


def test_bad_signal_options_are_refused(tmp_path):
    from models import train

    for args in (["--distill-w", "-1"], ["--onset-w", "-0.5"], ["--onset-frames", "0"],
                 ["--teacher", str(tmp_path / "t.npz")], ["--distill-w", "1", "--teacher", "x.npz"]):
        with pytest.raises(SystemExit):
            train.main(["--smoke", "--out", str(tmp_path), *args])
