"""--shared-weights: both graphs read one weights.bin (ONNX external data) and score exactly as
the self-contained graphs do."""

import numpy as np
import onnxruntime as ort

from models.export import SHARED_WEIGHTS, export_package
from models.weights import MambaConfig, init_weights, save_weights


def _run(path, audio):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros([1] + list(i.shape[1:]), np.float32) for i in s.get_inputs() if i.name != "audio"}
    feeds["audio"] = audio
    return s.run(["scores"], feeds)[0]


def test_shared_weights_are_stored_once_and_score_identically(tmp_path):
    cfg = MambaConfig(d_model=32, n_layers=2, labels=["a", "b", "c"])
    w = tmp_path / "w.safetensors"
    save_weights(w, init_weights(cfg, seed=3), cfg)
    plain = export_package(w, tmp_path / "plain", copy_weights=False).parent
    shared = export_package(w, tmp_path / "shared", copy_weights=False, shared_weights=True).parent
    blob = (shared / SHARED_WEIGHTS).stat().st_size
    inside = sum((plain / g).stat().st_size for g in ("step.onnx", "chunk.onnx"))
    # Most bytes are weights the two graphs share: stored once they take well under both graphs.
    assert blob < 0.75 * inside
    for g in ("step.onnx", "chunk.onnx"):
        assert (shared / g).stat().st_size < 64 * 1024
    rng = np.random.default_rng(0)
    hop = rng.standard_normal((1, 160)).astype(np.float32) * 0.3
    assert np.array_equal(_run(plain / "step.onnx", hop), _run(shared / "step.onnx", hop))
    chunk = rng.standard_normal((1, 160 * 7)).astype(np.float32) * 0.3
    assert np.array_equal(_run(plain / "chunk.onnx", chunk), _run(shared / "chunk.onnx", chunk))
    # Re-exporting without the option removes the stale weights.bin.
    export_package(w, shared, copy_weights=False)
    assert not (shared / SHARED_WEIGHTS).exists()
