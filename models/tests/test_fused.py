"""The fused-op graphs (step-fused.onnx / step-layer.onnx / chunk-fused.onnx, CONTRACT.md §7): written by the
exporter, same contract as their standard twins, and — through the numpy semantics of the ops in
models/fused_ops.py — the same scores as the standard step graph and the float64 reference."""

import numpy as np
import onnx
import pytest

from models import frontend
from models.fused_ops import FusedRunner, mamba_conv, mamba_logmel, mamba_ssm, uses_fused_ops
from models.reference import reference_scores
from models.verify import check_contract, make_session, run_steps, test_signal, verify


def test_packages_have_fused_graphs(tiny_model, big_model):
    for step_path in (tiny_model[0], big_model[0]):
        for kind in ("step", "chunk"):
            p = step_path.parent / f"{kind}-fused.onnx"
            m = onnx.load(str(p), load_external_data=False)
            assert uses_fused_ops(m)
            info = check_contract(m, expect_graph=kind)
            assert info.states == check_contract(onnx.load(str(step_path)), "step").states
            ops = [n.op_type for n in m.graph.node]
            n_layers = sum(1 for k in info.states if k.endswith(".ssm"))
            assert ops.count("MambaSsm") == ops.count("MambaConv") == n_layers
            assert ops.count("MambaLogMel") == 1
            # far fewer nodes than the standard graph
            std = onnx.load(str(step_path.parent / f"{kind}.onnx"), load_external_data=False)
            assert len(m.graph.node) < 0.6 * len(std.graph.node)


@pytest.mark.parametrize("which", ["tiny", "big"])
def test_fused_chunk_matches_reference(which, tiny_model, big_model):
    step_path, w, c = tiny_model if which == "tiny" else big_model
    audio = test_signal(300, seed=13)
    ref = reference_scores(w, c, audio)
    r = FusedRunner(step_path.parent / "chunk-fused.onnx")
    st = {i.name: np.zeros([1] + [d.dim_value for d in i.type.tensor_type.shape.dim[1:]], np.float32)
          for i in r.model.graph.input if i.name.startswith("state.")}
    got = []
    for a, b in ((0, 1), (1, 120), (120, 300)):  # calls of 1, 119 and 180 hops, state carried
        o = r.run({"audio": audio[None, a * 160:b * 160].astype(np.float32), **st})
        got.append(o["scores"][0])
        st = {k: o[k + ".next"] for k in st}
    err = np.abs(np.concatenate(got) - ref).max()
    assert err < 1e-4, err


def test_fused_chunk_adds_each_residual_in_the_next_norm(tiny_model):
    """chunk-fused.onnx: every residual add after a block is fused with the RMSNorm that follows
    (the next block's or the head's): one SkipSimplifiedLayerNormalization per layer, only the
    first block's norm plain, no residual Add left; ONNX Runtime itself runs the graph's
    standard and contrib nodes (checked against the reference above through the numpy runner)."""
    step_path, _, c = tiny_model
    m = onnx.load(str(step_path.parent / "chunk-fused.onnx"), load_external_data=False)
    ops = [n.op_type for n in m.graph.node]
    skip = [n for n in m.graph.node if n.op_type == "SkipSimplifiedLayerNormalization"]
    assert len(skip) == c.n_layers and all(n.domain == "com.microsoft" for n in skip)
    assert ops.count("ReduceMean") == 1  # layer 0's plain RMSNorm
    assert skip[-1].output[3] == ""  # the head's norm needs no sum
    assert ops.count("Add") == 3  # the embedding's and the head's biases, layer 0's norm epsilon
    assert {o.domain for o in m.opset_import} >= {"", "ai.mambatag", "com.microsoft"}


def test_ops_match_the_standard_step_arithmetic():
    """One hop of the ops against the formulas the standard step graph spells out op by op."""
    rng = np.random.default_rng(3)
    B, E, N, R, K = 2, 6, 4, 3, 4
    xz = rng.standard_normal((B, 1, 2 * E)).astype(np.float32)
    st = rng.standard_normal((B, K - 1, E)).astype(np.float32)
    w, b = rng.standard_normal((K, E)), rng.standard_normal(E)
    xc, st2 = mamba_conv(xz, st, w, b)
    win = np.concatenate([st, xz[:, :, :E]], 1)
    acc = (win * w).sum(1, keepdims=True) + b
    np.testing.assert_allclose(xc, acc / (1 + np.exp(-acc)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(st2, win[:, 1:])
    dbc = rng.standard_normal((B, 1, R + 2 * N)).astype(np.float32)
    dt_w, dt_b = rng.standard_normal((R, E)), rng.standard_normal(E)
    A, D = -np.exp(rng.standard_normal((N, E))), rng.standard_normal(E)
    h = rng.standard_normal((B, N, E)).astype(np.float32)
    y, h2 = mamba_ssm(xc, xz, dbc, dt_w, dt_b, A, D, h)
    dtr = dbc[:, :, :R] @ dt_w + dt_b
    dt = np.log1p(np.exp(dtr))
    hh = np.exp(dt * A) * h + dbc[:, 0, R:R + N, None] * (dt * xc)
    yy = (dbc[:, :, R + N:] @ hh + D * xc) * (xz[:, :, E:] / (1 + np.exp(-xz[:, :, E:])))
    np.testing.assert_allclose(h2, hh, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, yy, rtol=1e-5, atol=1e-5)


def test_verify_checks_fused_graphs(big_model, capsys):
    path, w, c = big_model
    assert verify(path.parent, weights=path.parent / "weights.safetensors", frames=200)
    out = capsys.readouterr().out
    assert "ok fused: step-fused.onnx" in out and "ok fused: chunk-fused.onnx" in out
    assert "ok fused: step-layer.onnx" in out


@pytest.mark.parametrize("which", ["tiny", "big"])
def test_layer_step_graph_matches_reference(which, tiny_model, big_model):
    """step-layer.onnx: one MambaLayer op per layer, the embedding and the head as MambaEmbed /
    MambaHead (no MatMul left), the step graph's contract, and the float64 reference's scores
    over 80 carried steps."""
    step_path, w, c = tiny_model if which == "tiny" else big_model
    p = step_path.parent / "step-layer.onnx"
    m = onnx.load(str(p), load_external_data=False)
    info = check_contract(m, expect_graph="step")
    n_layers = sum(1 for k in info.states if k.endswith(".ssm"))
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("MambaLayer") == n_layers and "MambaSsm" not in ops
    assert ops.count("MambaEmbed") == 1 and ops.count("MambaHead") == 1
    assert "MatMul" not in ops and "Sigmoid" not in ops
    audio = test_signal(80, seed=5)
    ref = reference_scores(w, c, audio)
    r = FusedRunner(p)
    st = {k: np.zeros([1] + v, np.float32) for k, v in info.states.items()}
    got = []
    for t in range(80):
        o = r.run({"audio": audio[None, t * 160:(t + 1) * 160].astype(np.float32), **st})
        got.append(o["scores"][0])
        st = {k: o[k + ".next"] for k in st}
    err = np.abs(np.stack(got) - ref).max()
    assert err < 1e-4, err


def test_verify_catches_a_wrong_fused_graph(tmp_path, tiny_model, capsys):
    """A fused graph whose SSM got another layer's A must fail verification."""
    import shutil

    src = tiny_model[0].parent
    for f in ("step.onnx", "chunk.onnx", "step-fused.onnx", "chunk-fused.onnx", "weights.safetensors"):
        shutil.copy(src / f, tmp_path / f)
    m = onnx.load(str(tmp_path / "step-fused.onnx"))
    inits = {t.name: t for t in m.graph.initializer}
    a0, a1 = inits["l0_A"], inits["l1_A"]
    a0.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(a1) * 3.0, "l0_A"))
    onnx.save(m, str(tmp_path / "step-fused.onnx"))
    assert not verify(tmp_path, frames=150)
    assert "FAIL fused: step-fused.onnx" in capsys.readouterr().out


def test_export_no_fused_removes_them(tmp_path, tiny_model, capsys):
    from models.export import main

    w = tiny_model[0].parent / "weights.safetensors"
    assert main([str(w), str(tmp_path)]) == 0
    assert (tmp_path / "step-fused.onnx").is_file() and (tmp_path / "chunk-fused.onnx").is_file()
    assert main([str(w), str(tmp_path), "--no-fused"]) == 0
    assert not (tmp_path / "step-fused.onnx").exists() and not (tmp_path / "chunk-fused.onnx").exists()
    # the standard graphs still run alone
    s = make_session(tmp_path / "step.onnx")
    assert run_steps(s, test_signal(5)).shape[1] == 5


def test_logmel_op_is_the_contract_front_end():
    """MambaLogMel on history + T hops equals frontend.logmel of the stream (zero history)."""
    audio = test_signal(37, seed=21)
    full = np.concatenate([np.zeros(frontend.HISTORY), audio])[None].astype(np.float32)
    got = mamba_logmel(full, frontend.mel_filterbank())[0]
    want = frontend.logmel(audio.astype(np.float32))
    assert got.shape == (37, frontend.N_MELS)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
