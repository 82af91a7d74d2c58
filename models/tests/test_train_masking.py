"""SpecAugment-style feature masking in models/train.py (--freq-mask / --time-mask): off by default
and then the features are untouched; masked features are exactly 0 in the normalised space with
the drawn counts and widths; never applied outside training steps; and the fresh-state
consistency run gets the same mask as the carried run over the same frames."""

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

LABELS8 = ["speech", "music", "animal", "alarm", "vehicle", "tools", "impact", "weather"]


def _runs(row):
    """Contiguous True runs of a 1-D bool array as (start, length)."""
    row = np.asarray(row, dtype=np.int8)
    d = np.diff(np.concatenate([[0], row, [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return list(zip(starts.tolist(), (ends - starts).tolist()))


def _traced_smoke(monkeypatch, tmp_path, *args):
    """Run the smoke training with every MambaTagger.forward call recorded: train/eval mode,
    grad mode, the feature mask passed, the features that reached the embedding layer and the
    unmasked normalised features of the same audio (recomputed with the same history)."""
    from models import train
    from models.mamba import MambaTagger

    calls = []
    orig = MambaTagger.forward

    def traced(self, audio, logits=False, state=None, return_state=False, feature_mask=None):
        st = state or {}
        a2 = audio if audio.dim() == 2 else audio.unsqueeze(0)
        with torch.no_grad():
            ref = self.frontend(a2, st.get("state.audio"))[0].clone()
        seen = []
        h = self.embed.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()))
        try:
            out = orig(self, audio, logits=logits, state=state, return_state=return_state,
                       feature_mask=feature_mask)
        finally:
            h.remove()
        assert len(seen) == 1
        calls.append({"training": self.training, "grad": torch.is_grad_enabled(), "mask": feature_mask,
                      "feats": seen[0], "ref": ref, "carried": state is not None})
        return out

    monkeypatch.setattr(MambaTagger, "forward", traced)
    summary = train.main(["--smoke", "--out", str(tmp_path), *args])
    assert summary["steps"] == 2
    return calls, summary


def _train_calls(calls):
    return [c for c in calls if c["training"] and c["grad"]]


# (a) flags off ---------------------------------------------------------------------------------

def test_flags_off_draw_nothing_and_leave_features_bit_identical(monkeypatch, tmp_path):
    from models.train import spec_mask

    g = torch.Generator().manual_seed(3)
    before = g.get_state().clone()
    assert spec_mask(2, 50, 0, 8, 0, 20, g, torch.device("cpu")) is None
    assert torch.equal(g.get_state(), before)  # no random numbers drawn when off

    calls, summary = _traced_smoke(monkeypatch, tmp_path)
    assert summary["feature_masks"] == {"freq_mask": 0, "freq_mask_width": 8, "time_mask": 0,
                                        "time_mask_frames": 20}
    tr = _train_calls(calls)
    # step 1: the carried run only (no state yet); step 2: carried + fresh-state run
    assert len(tr) == 3
    for c in calls:
        assert c["mask"] is None
        assert c["feats"].dtype == torch.float32 and torch.equal(c["feats"], c["ref"])


def test_flags_off_weights_do_not_depend_on_the_mask_generator(tmp_path):
    """With the counts at 0 a run is the same whatever the mask settings (nothing is drawn)."""
    from models import train
    from models.weights import load_weights

    train.main(["--smoke", "--out", str(tmp_path / "a")])
    train.main(["--smoke", "--out", str(tmp_path / "b"), "--freq-mask-width", "30", "--time-mask-frames", "5"])
    wa, _ = load_weights(tmp_path / "a" / "weights.safetensors")
    wb, _ = load_weights(tmp_path / "b" / "weights.safetensors")
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)


# (b) the masks ---------------------------------------------------------------------------------

def test_draw_intervals_respects_counts_and_widths():
    from models.train import draw_intervals

    g = torch.Generator().manual_seed(0)
    start, w = draw_intervals(4000, 3, 8, 64, g)
    assert start.shape == w.shape == (4000, 3) and start.dtype == w.dtype == torch.int64
    assert int(w.min()) == 0 and int(w.max()) == 8  # the whole range 0..8 is drawn
    assert set(torch.unique(w).tolist()) == set(range(9))
    assert int(start.min()) == 0 and int((start + w).max()) == 64
    assert bool((start >= 0).all()) and bool((start + w <= 64).all())
    # widths wider than the axis are clipped to it
    start, w = draw_intervals(200, 2, 50, 10, torch.Generator().manual_seed(1))
    assert int(w.max()) == 10 and bool((start == 0)[w == 10].all()) and bool((start + w <= 10).all())
    # the same seed gives the same intervals
    a = draw_intervals(5, 2, 8, 64, torch.Generator().manual_seed(7))
    b = draw_intervals(5, 2, 8, 64, torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_spec_mask_is_the_union_of_the_drawn_intervals():
    from models.train import draw_intervals, spec_mask

    B, T = 64, 300
    m = spec_mask(B, T, 2, 8, 3, 20, torch.Generator().manual_seed(5), torch.device("cpu"))
    assert m.shape == (B, T, 64) and m.dtype == torch.bool
    g = torch.Generator().manual_seed(5)  # replay: frequency intervals first, then time
    fs, fw = draw_intervals(B, 2, 8, 64, g)
    ts, tw = draw_intervals(B, 3, 20, T, g)
    for b in range(B):
        band = np.zeros(64, bool)
        for s, w in zip(fs[b].tolist(), fw[b].tolist()):
            band[s:s + w] = True
        frame = np.zeros(T, bool)
        for s, w in zip(ts[b].tolist(), tw[b].tolist()):
            frame[s:s + w] = True
        assert np.array_equal(m[b].numpy(), band[None, :] | frame[:, None])
        assert len(_runs(band)) <= 2 and band.sum() <= 16
        assert len(_runs(frame)) <= 3 and frame.sum() <= 60
    assert 0 < int(m.sum()) < m.numel()


def test_freq_masks_are_zero_in_normalised_space(monkeypatch, tmp_path):
    calls, summary = _traced_smoke(monkeypatch, tmp_path, "--freq-mask", "2", "--freq-mask-width", "8")
    assert summary["feature_masks"]["freq_mask"] == 2
    tr = _train_calls(calls)
    assert len(tr) == 3
    n_masked = 0
    for c in tr:
        m = c["mask"]
        assert m is not None and m.dtype == torch.bool
        m = m[:, :c["feats"].shape[1]].expand_as(c["feats"])
        f, ref = c["feats"], c["ref"]
        assert bool((f[m] == 0).all())  # exactly the band mean
        assert torch.equal(f[~m], ref[~m])  # everything else untouched
        assert bool((ref[m] != 0).any())  # the zeros come from the mask, not from the audio
        for b in range(m.shape[0]):
            # frequency masks only: the same bands in every frame, at most 2 runs of <= 8 each
            assert bool((m[b] == m[b, :1]).all())
            band = m[b, 0].numpy()
            runs = _runs(band)
            assert len(runs) <= 2 and band.sum() <= 16 and all(n <= 16 for _, n in runs)
            n_masked += int(band.sum())
    assert n_masked > 0


def test_time_masks_cover_all_bands_of_short_spans(monkeypatch, tmp_path):
    calls, _ = _traced_smoke(monkeypatch, tmp_path, "--time-mask", "2", "--time-mask-frames", "20")
    tr = _train_calls(calls)
    assert len(tr) == 3
    n_masked = 0
    for c in tr:
        f, ref = c["feats"], c["ref"]
        m = c["mask"][:, :f.shape[1]].expand_as(f)
        assert bool((f[m] == 0).all()) and torch.equal(f[~m], ref[~m])
        for b in range(m.shape[0]):
            assert bool((m[b] == m[b, :, :1]).all())  # whole frames
            frame = m[b, :, 0].numpy()
            assert len(_runs(frame)) <= 2 and frame.sum() <= 40
            n_masked += int(frame.sum())
    assert n_masked > 0


def test_negative_counts_are_refused(tmp_path):
    from models import train

    with pytest.raises(SystemExit):
        train.main(["--smoke", "--out", str(tmp_path), "--freq-mask", "-1"])


# (c) never outside training steps ---------------------------------------------------------------

def test_no_masking_in_validation_or_threshold_tuning(monkeypatch, tmp_path):
    # wide masks (most of the features would be masked) make any leak obvious
    calls, _ = _traced_smoke(monkeypatch, tmp_path, "--freq-mask", "4", "--freq-mask-width", "32",
                             "--time-mask", "4", "--time-mask-frames", "50")
    tr = _train_calls(calls)
    ev = [c for c in calls if not (c["training"] and c["grad"])]
    assert len(tr) == 3 and all(c["mask"] is not None for c in tr)
    assert sum(int(c["mask"].sum()) for c in tr) > 0
    # monitor() on the val scenes and tune_thresholds() on the threshold scenes, eval mode
    assert len(ev) >= 4 and all(not c["training"] and not c["grad"] for c in ev)
    for c in ev:
        assert c["mask"] is None and torch.equal(c["feats"], c["ref"])


def test_predict_ignores_the_training_masks():
    from models.mamba import MambaConfig, MambaTagger
    from models.train import predict

    m = MambaTagger(MambaConfig(d_model=16, n_layers=1, d_state=4, labels=LABELS8), seed=0)
    m.frontend.compute_dtype = torch.float32
    x = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0)) * 0.1
    mask = torch.zeros(2, 50, 64, dtype=torch.bool)
    mask[:, :, 10:30] = True
    with torch.no_grad():
        plain = m(x)
        masked = m(x, feature_mask=mask)
    assert not torch.equal(plain, masked)  # the mask does change the output when passed
    assert torch.equal(predict(m, x), plain.float())
    assert m.training  # predict restores train mode


# (d) the consistency run shares the mask --------------------------------------------------------

def test_smoke_fresh_run_gets_the_carried_runs_mask(monkeypatch, tmp_path):
    calls, _ = _traced_smoke(monkeypatch, tmp_path, "--freq-mask", "2", "--time-mask", "3",
                             "--time-mask-frames", "20")
    tr = _train_calls(calls)
    assert [c["carried"] for c in tr] == [False, True, False]
    carried, fresh = tr[1], tr[2]
    W = fresh["feats"].shape[1]
    assert 0 < W <= carried["feats"].shape[1]
    assert torch.equal(fresh["mask"], carried["mask"][:, :W])
    assert bool(fresh["mask"].any())
    # the masked features of the two runs agree wherever the audio history does not matter
    # (frames 0 and 1 of the carried run also see the previous step's last 240 samples)
    ff, fc = fresh["feats"][:, 2:], carried["feats"][:, 2:W]
    assert torch.equal(ff == 0, fc == 0) and bool((ff == 0).any())
    assert torch.allclose(ff, fc, rtol=0, atol=1e-5)
    # a new mask is drawn every step
    assert not torch.equal(tr[0]["mask"], carried["mask"])


def _args(**kw):
    d = dict(consist_w=1.0, fresh_bce_w=0.5, maxpool_w=0.0, consist_seconds=1.0, consist_skip=0.25)
    d.update(kw)
    return argparse.Namespace(**d)


def test_shared_mask_makes_no_fake_inconsistency():
    """From a zero carried state the carried and the fresh run see the same audio, so with the
    mask shared the consistency loss stays ~0; two independent masks would make it large."""
    from models.mamba import MambaConfig, MambaTagger
    from models.train import HOP, spec_mask, step_loss

    torch.manual_seed(0)
    m = MambaTagger(MambaConfig(d_model=32, n_layers=2, d_state=8, labels=LABELS8), seed=1)
    m.frontend.compute_dtype = torch.float32
    g = torch.Generator().manual_seed(0)
    B, N = 3, 32000  # 2 s: T = 200 frames, fresh window W = 100, consistency from frame 25
    x = torch.randn(B, N, generator=g) * 0.1
    x[:, 4000:12000] *= 5  # some structure in time
    with torch.no_grad():
        lm = m.frontend(x, normalize=False)[0].reshape(-1, 64)
    m.set_frontend_stats(lm.mean(0).numpy(), np.maximum(lm.std(0).numpy(), 0.5))
    y = (torch.rand(B, N // HOP, 8, generator=g) > 0.8).float()
    a = _args()
    T, W, k0 = N // HOP, 100, 25
    gen = torch.Generator().manual_seed(4)
    mask = spec_mask(B, T, 2, 8, 3, 20, gen, torch.device("cpu"))
    mask2 = spec_mask(B, T, 2, 8, 3, 20, gen, torch.device("cpu"))
    assert bool(mask[:, k0:W].any()) and not torch.equal(mask[:, :W], mask2[:, :W])

    zero = m.init_state(B)
    loss, state, lc, lmp = step_loss(m, x, y, zero, a, [], False, mask)
    assert lmp is None and lc is not None and torch.isfinite(loss)
    lc = float(lc.detach())
    assert lc < 1e-6, lc
    assert set(state) == set(zero)
    # without masks it is ~0 too, and the loss differs from the masked one
    loss0, _, lc0, _ = step_loss(m, x, y, m.init_state(B), a, [], False, None)
    assert float(lc0.detach()) < 1e-6 and float(loss0.detach()) != float(loss.detach())

    # the broken alternative: a separately drawn mask for the fresh run
    with torch.no_grad():
        lg = m(x, logits=True, state=m.init_state(B), feature_mask=mask)
        lf = m(x[:, :W * HOP], logits=True, feature_mask=mask2[:, :W])
    fake = float((torch.sigmoid(lg[:, k0:W]) - torch.sigmoid(lf[:, k0:W])).abs().mean())
    assert fake > 1e-4 and fake > 100 * lc, (fake, lc)

    # no carried state: one run only, no consistency term
    _, _, lc_none, _ = step_loss(m, x, y, None, a, [], False, mask)
    assert lc_none is None
