"""The chunk graph (CONTRACT.md §3): contract, parity with the step graph over carried calls with
a shorter last call, both scan algorithms, numerical stability, CLI."""

import numpy as np
import onnx
import pytest

from conftest import LABELS8, TINY_DIR, export_to
from models.export import CHUNK_FRAMES, build_chunk_graph, make_metadata, make_session
from models.reference import reference_scores
from models.verify import check_contract, chunk_call_sizes, run_chunks, run_steps, test_signal
from models.weights import MambaConfig, init_weights


def chunk_of(step_path):
    return step_path.parent / "chunk.onnx"


def test_tiny_chunk_contract(tiny_model):
    path, w, c = tiny_model
    step = check_contract(path, expect_graph="step")
    info = check_contract(chunk_of(path), expect_graph="chunk")
    assert info.labels == LABELS8 and info.states == step.states
    assert info.chunk_frames == CHUNK_FRAMES
    md = dict(info.metadata)
    assert md.pop("mambatag.graph") == "chunk" and md.pop("mambatag.chunk_frames") == str(CHUNK_FRAMES)
    assert md == {k: v for k, v in step.metadata.items() if k != "mambatag.graph"}
    m = onnx.load(str(chunk_of(path)))
    dims = {vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in list(m.graph.input) + list(m.graph.output)}
    assert dims["audio"][0] == "B" and isinstance(dims["audio"][1], str)  # T symbolic
    assert dims["scores"] == ["B", "T", 8]


@pytest.mark.parametrize("which,frames,T", [("tiny", 1000, 250), ("big", 3000, 700)])
def test_chunk_matches_step_and_reference(which, frames, T, tiny_model, big_model):
    path, w, c = tiny_model if which == "tiny" else big_model
    audio = np.stack([test_signal(frames), test_signal(frames, seed=11)])
    want = run_steps(make_session(path), audio)
    sizes = chunk_call_sizes(frames, T)
    assert len(sizes) >= 4 and sizes[-1] < T  # several carried calls, shorter last one
    got, _ = run_chunks(make_session(chunk_of(path)), audio, sizes)
    err = np.abs(got - want).max()
    rerr = np.abs(got[0] - reference_scores(w, c, audio[0])).max()
    print(f"{which}: chunk vs step {err:.3g}, vs reference {rerr:.3g} ({sizes})")
    assert err <= 1e-4 and rerr <= 1e-4


def test_chunked_scan_matches_step(big_model, tmp_path):
    """The sub-chunked scan (the non-default algorithm) is exact too, for T not a multiple of
    the sub-chunk and T smaller than it."""
    path, w, c = big_model
    md = make_metadata(c, "chunk", "big", "0.0.0", "unspecified", chunk_frames=100)
    p = tmp_path / "chunked.onnx"
    onnx.save(build_chunk_graph(w, c, md, scan="chunked", sub_chunk=16), str(p))
    audio = test_signal(1200, seed=5)
    want = run_steps(make_session(path), audio)
    got, _ = run_chunks(make_session(p), audio, [1, 5, 16, 333, 500, 345])
    assert np.abs(got - want).max() <= 1e-4


def test_large_dt_is_stable(tmp_path):
    """dt ~ 20 with |A| up to 16: exp(-cumsum) would overflow float32 within a few frames; both
    scan algorithms only exponentiate non-positive numbers."""
    c = MambaConfig(d_model=32, n_layers=2, d_state=16, labels=["a", "b", "c"])
    w = init_weights(c, 3)
    for i in range(c.n_layers):
        w[f"layers.{i}.mixer.dt_proj.bias"] = np.full(c.d_inner, 20.0, np.float32)
    path = export_to(tmp_path, w, c, chunk_frames=100)
    audio = test_signal(400, seed=2)
    want = run_steps(make_session(path), audio)
    assert np.all(np.isfinite(want))
    for scan in ("scan", "chunked"):
        p = tmp_path / f"{scan}.onnx"
        md = make_metadata(c, "chunk", "m", "0", "x", chunk_frames=100)
        onnx.save(build_chunk_graph(w, c, md, scan=scan, sub_chunk=32), str(p))
        got, st = run_chunks(make_session(p), audio, [64, 300, 36])
        assert all(np.all(np.isfinite(v)) for v in st.values())
        assert np.abs(got - want).max() <= 1e-4, scan


def test_one_frame_calls_and_state_equal_step(tiny_model):
    path, w, c = tiny_model
    audio = test_signal(40, seed=6)
    step, chunk = make_session(path), make_session(chunk_of(path))
    names = [o.name for o in step.get_outputs()]
    state = {i.name: np.zeros([1] + list(i.shape[1:]), np.float32)
             for i in step.get_inputs() if i.name.startswith("state.")}
    st_step, st_chunk = dict(state), dict(state)
    for t in range(40):
        hop = audio[None, t * 160:(t + 1) * 160]
        r = dict(zip(names, step.run(names, {"audio": hop, **st_step})))
        st_step = {k: r[k + ".next"] for k in state}
        got, st_chunk = run_chunks(chunk, hop, [1], state=st_chunk)
        assert np.abs(got[0, 0] - r["scores"][0]).max() <= 1e-6
    for k in state:
        assert np.abs(st_chunk[k] - st_step[k]).max() <= 1e-5, k


def test_chunk_causal_and_rows_independent(big_model):
    path, w, c = big_model
    sess = make_session(chunk_of(path))
    a = test_signal(300, seed=4)
    b = a.copy()
    b[200 * 160:] = 0.5  # change only the future from hop 200 on
    rows = np.stack([a, b, np.zeros_like(a)])
    got, _ = run_chunks(sess, rows, [300])
    assert np.array_equal(got[0, :200], got[1, :200]) and not np.array_equal(got[0, 200:], got[1, 200:])
    single = np.concatenate([run_chunks(sess, r, [120, 180])[0] for r in rows])
    assert np.abs(got - single).max() <= 1e-5


def test_export_cli_chunk_options(tmp_path, capsys):
    from models import export, verify as vmod
    from models.weights import save_weights

    c = MambaConfig(d_model=16, n_layers=1, d_state=4, labels=["a", "b"])
    save_weights(tmp_path / "w.safetensors", init_weights(c, 3), c)
    pkg = tmp_path / "pkg"
    assert export.main([str(tmp_path / "w.safetensors"), str(pkg), "--chunk-frames", "123"]) == 0
    assert check_contract(pkg / "chunk.onnx").chunk_frames == 123
    assert vmod.main([str(pkg), "--frames", "300"]) == 0
    out = capsys.readouterr().out
    assert "ok chunk parity" in out and "PASS" in out
    assert export.main([str(tmp_path / "w.safetensors"), str(pkg), "--chunk-frames", "0"]) == 0
    assert (pkg / "step.onnx").exists() and not (pkg / "chunk.onnx").exists()
    assert vmod.main([str(pkg), "--frames", "50"]) == 0
    assert "chunk checks skipped" in capsys.readouterr().out


def test_verify_catches_a_wrong_chunk_graph(tmp_path, capsys):
    """A chunk graph from other weights fails verify's chunk parity."""
    from models import verify as vmod

    c = MambaConfig(d_model=16, n_layers=1, d_state=4, labels=["a", "b"])
    export_to(tmp_path / "a", init_weights(c, 1), c, name="m")
    export_to(tmp_path / "b", init_weights(c, 2), c, name="m")
    assert vmod.main([str(tmp_path / "a"), "--frames", "100", "--chunk", str(tmp_path / "b" / "chunk.onnx")]) == 1
    assert "FAIL chunk parity" in capsys.readouterr().out
