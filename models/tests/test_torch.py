"""PyTorch model tests (skipped where torch is not installed)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import LABELS8, TINY_DIR  # noqa: E402
from models.export import make_session  # noqa: E402
from models.mamba import MambaConfig, MambaTagger, selective_scan  # noqa: E402
from models.reference import reference_logits, reference_scores  # noqa: E402
from models.verify import run_steps, test_signal  # noqa: E402
from models.weights import load_weights  # noqa: E402

torch.set_num_threads(2)


def tiny_torch():
    w, c = load_weights(TINY_DIR / "weights.safetensors")
    m = MambaTagger(c)
    m.load_numpy_weights(w)
    return m.eval(), w, c


def sequential_scan(x, dt, A, Bm, Cm, h0):
    h, ys = h0.clone(), []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append((h * Cm[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1), h


@pytest.mark.parametrize("chunk", [1, 5, 16, 64, 500])
def test_selective_scan_matches_sequential(chunk):
    g = torch.Generator().manual_seed(0)
    B, T, E, N = 2, 97, 6, 4
    x = torch.randn(B, T, E, generator=g, dtype=torch.float64)
    dt = torch.rand(B, T, E, generator=g, dtype=torch.float64) * 2
    A = -torch.rand(E, N, generator=g, dtype=torch.float64) * 16
    Bm, Cm = torch.randn(B, T, N, generator=g, dtype=torch.float64), torch.randn(B, T, N, generator=g, dtype=torch.float64)
    h0 = torch.randn(B, E, N, generator=g, dtype=torch.float64)
    y, h = selective_scan(x, dt, A, Bm, Cm, h0, chunk)
    yr, hr = sequential_scan(x.float(), dt.float(), A.float(), Bm.float(), Cm.float(), h0.float())
    assert torch.allclose(y, yr, atol=1e-5) and torch.allclose(h, hr, atol=1e-5)
    y0, _ = selective_scan(x, dt, A, Bm, Cm, None, chunk)
    yr0, _ = sequential_scan(x.float(), dt.float(), A.float(), Bm.float(), Cm.float(), torch.zeros_like(h0).float())
    assert torch.allclose(y0, yr0, atol=1e-5)


def test_selective_scan_huge_dt_is_finite():
    B, T, E, N = 1, 300, 4, 16
    x = torch.randn(B, T, E)
    dt = torch.full((B, T, E), 60.0)  # exp(-60*16*64) would overflow a naive exp(-cumsum)
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1)
    Bm, Cm = torch.randn(B, T, N), torch.randn(B, T, N)
    y, h = selective_scan(x, dt, A, Bm, Cm, None, 64)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    yr, _ = sequential_scan(x, dt, A, Bm, Cm, torch.zeros(B, E, N))
    assert torch.allclose(y, yr, atol=1e-4)


def test_forward_matches_numpy_reference():
    m, w, c = tiny_torch()
    audio = test_signal(400, seed=11)
    with torch.no_grad():
        probs = m(torch.from_numpy(audio)[None])[0].numpy()
        logits = m(torch.from_numpy(audio)[None], logits=True)[0].numpy()
    assert probs.shape == (400, 8)
    assert np.abs(probs - reference_scores(w, c, audio)).max() < 1e-4
    assert np.abs(logits - reference_logits(w, c, audio)).max() < 1e-3


def test_random_model_forward_step_reference():
    c = MambaConfig(d_model=32, n_layers=2, d_state=8, labels=["a", "b", "c"])
    m = MambaTagger(c, seed=3).eval()
    rng = np.random.default_rng(0)
    m.set_frontend_stats(rng.normal(-5, 1, 64), rng.uniform(2, 4, 64))
    audio = test_signal(300, seed=5)
    ref = reference_scores(m.numpy_weights(), c, audio)
    with torch.no_grad():
        fwd = m(torch.from_numpy(audio)[None])[0].numpy()
        st, steps = m.init_state(1), []
        for t in range(300):
            p, st = m.step(torch.from_numpy(audio[t * 160:(t + 1) * 160])[None], st)
            steps.append(p[0].numpy())
    assert np.abs(fwd - ref).max() < 1e-4
    assert np.abs(np.array(steps) - ref).max() < 1e-4


def test_forward_with_state_continues_stream():
    m, w, c = tiny_torch()
    audio = torch.from_numpy(test_signal(250, seed=6))[None].repeat(2, 1)
    audio[1] *= 0.5
    with torch.no_grad():
        full = m(audio)
        a, st = m(audio[:, :100 * 160 + 37], return_state=True)  # stops mid-hop: 100 frames
        # continue from the end of hop 99 (the 37 extra samples were not consumed)
        b, _ = m(audio[:, 100 * 160:], state=st, return_state=True)
    assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-5)


def test_torch_step_state_feeds_onnx():
    m, w, c = tiny_torch()
    audio = test_signal(120, seed=8)
    sess = make_session(TINY_DIR / "step.onnx")
    names = [o.name for o in sess.get_outputs()]
    with torch.no_grad():
        st = m.init_state(1)
        for t in range(60):
            _, st = m.step(torch.from_numpy(audio[t * 160:(t + 1) * 160])[None], st)
        onnx_state = {k: v.numpy().astype(np.float32) for k, v in st.items()}
        assert set(onnx_state) == {i.name for i in sess.get_inputs() if i.name.startswith("state.")}
        for t in range(60, 120):
            hop = audio[t * 160:(t + 1) * 160][None]
            p, st = m.step(torch.from_numpy(hop), st)
            r = dict(zip(names, sess.run(names, {"audio": hop, **onnx_state})))
            onnx_state = {k: r[k + ".next"] for k in onnx_state}
            assert np.abs(r["scores"] - p.numpy()).max() < 1e-4


def test_safetensors_round_trip_and_export(tmp_path):
    from models.export import export_package
    from models.verify import verify

    c = MambaConfig(d_model=32, n_layers=2, d_state=8, labels=LABELS8)
    m = MambaTagger(c, seed=9)
    m.set_frontend_stats(np.full(64, -6.0), np.full(64, 3.0))
    with torch.no_grad():
        m.head.bias += 0.25  # make sure trained-looking changes survive
    path = tmp_path / "w.safetensors"
    m.save_safetensors(path)
    w, c2 = load_weights(path)
    assert c2.to_dict() == c.to_dict()
    assert set(w) == set(m.state_dict())
    m2 = MambaTagger.from_safetensors(path)
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    m3 = MambaTagger(c, seed=1)
    m3.load_safetensors(path)
    assert torch.equal(m3.head.bias, m.head.bias)
    with pytest.raises(ValueError, match="differs"):
        MambaTagger(MambaConfig(d_model=16, n_layers=2, d_state=8, labels=LABELS8)).load_safetensors(path)
    export_package(path, tmp_path / "pkg", name="t")
    assert verify(tmp_path / "pkg", frames=200, log=lambda *_: None)
    audio = test_signal(200)
    with torch.no_grad():
        fwd = m(torch.from_numpy(audio)[None])[0].numpy()
    onnx_scores = run_steps(make_session(tmp_path / "pkg" / "step.onnx"), audio)[0]
    assert np.abs(fwd - onnx_scores).max() < 1e-4


def test_init_and_training_step():
    c = MambaConfig(d_model=32, n_layers=2, labels=["a", "b"])
    m = MambaTagger(c, seed=0)
    mix = m.layers[0].mixer
    assert c.dt_rank == 2 and mix.A_log._no_weight_decay and mix.D._no_weight_decay
    assert torch.allclose(mix.A_log[0], torch.log(torch.arange(1, 17, dtype=torch.float32)))
    dt = torch.nn.functional.softplus(mix.dt_proj.bias)
    assert dt.min() >= 1e-4 * 0.999 and dt.max() <= 0.1 * 1.001
    m.train()
    m.chunk_size = 16
    audio = torch.from_numpy(test_signal(100, seed=1))[None].repeat(2, 1)
    target = torch.zeros(2, 100, 2)
    for ckpt in (False, True):
        m.zero_grad()
        m.gradient_checkpointing = ckpt
        loss = torch.nn.functional.binary_cross_entropy_with_logits(m(audio, logits=True), target)
        loss.backward()
        grads = [p.grad for p in m.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert m.frontend.mean.grad is None  # stats are buffers
