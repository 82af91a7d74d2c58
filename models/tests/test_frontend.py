import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from models import frontend as F
from models.export import GraphBuilder, features, frontend_matrices


def test_constants_and_window():
    assert (F.SAMPLE_RATE, F.HOP, F.WIN, F.N_FFT, F.N_BINS, F.N_MELS) == (16000, 160, 400, 512, 257, 64)
    w = F.hann_window()
    assert w.shape == (400,) and w[0] == 0.0 and abs(w[200] - 1.0) < 1e-15
    assert np.allclose(w[1:], w[1:][::-1])  # periodic: symmetric about n = 200


def test_framing_alignment():
    audio = np.arange(1, 1000, dtype=np.float64)  # 999 samples -> 6 full hops
    fr = F.frame_audio(audio)
    assert fr.shape == (6, 400)
    for t in range(6):  # frame t ends with hop t: last sample audio[(t+1)*160 - 1]
        assert fr[t, -1] == audio[(t + 1) * 160 - 1]
        assert fr[t, -160] == audio[t * 160]
    assert np.all(fr[0, :240] == 0.0)


def test_power_spectrum_matches_rfft():
    rng = np.random.default_rng(0)
    fr = rng.standard_normal((5, 400))
    want = np.abs(np.fft.rfft(fr * F.hann_window(), n=512)) ** 2
    assert np.allclose(F.power_spectrum(fr), want, rtol=1e-9, atol=1e-9)


def test_mel_filterbank_htk():
    M = F.mel_filterbank()
    assert M.shape == (257, 64)
    assert M.min() >= 0.0 and M.max() <= 1.0 + 1e-12
    assert np.all(M.sum(0) > 0), "every band has some weight"
    pts = F.mel_points_hz()
    assert pts[0] == 0.0 and abs(pts[-1] - 8000.0) < 1e-9
    assert np.allclose(np.diff(F.hz_to_mel(pts)), F.hz_to_mel(8000.0) / 65)
    assert abs(F.hz_to_mel(1000.0) - 1000.0) < 0.1  # HTK: 1000 Hz ~ 1000 mel
    # independent evaluation of one band at one bin
    f = F.fft_freqs()
    m, k = 40, int(np.argmin(np.abs(f - pts[41])))
    lo, c, hi = pts[40], pts[41], pts[42]
    want = max(0.0, min((f[k] - lo) / (c - lo), (hi - f[k]) / (hi - c)))
    assert abs(M[k, m] - want) < 1e-12


def test_1khz_sine_peaks_in_right_band():
    t = np.arange(16000) / 16000
    lm = F.logmel(0.5 * np.sin(2 * np.pi * 1000 * t))
    assert lm.shape == (100, 64)
    centres = F.mel_points_hz()[1:-1]
    want = int(np.argmin(np.abs(centres - 1000.0)))
    assert np.all(np.argmax(lm[5:], axis=1) == want)


def test_silence_is_log_eps():
    lm = F.logmel(np.zeros(1600))
    assert np.allclose(lm, np.log(1e-6))


def _frontend_graph():
    g = GraphBuilder()
    x = g.input("frames", ["B", 400])
    for name, v, shape in zip(("C", "S", "M"), frontend_matrices(g), ([200, 257], [200, 257], [257, 64])):
        g.output(name, shape, v)
        g.outputs[-1].type.tensor_type.elem_type = TensorProto.DOUBLE
    g.output("logmel_out", ["B", 64], features(g, x))
    m = helper.make_model(helper.make_graph(g.nodes, "fe", g.inputs, g.outputs, g.initializers),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def test_graph_frontend_matches_numpy():
    sess = _frontend_graph()
    rng = np.random.default_rng(1)
    t = np.arange(16000) / 16000
    audio = np.concatenate([np.clip(3 * np.sin(2 * np.pi * 3000 * t[:4000]), -1, 1),
                            1e-4 * rng.standard_normal(4000), 0.3 * rng.standard_normal(4000)])
    fr = F.frame_audio(audio.astype(np.float32))
    C, S, M, lm = sess.run(None, {"frames": fr.astype(np.float32)})
    cos, sin = F.dft_matrices()  # rows n = m: cos(2 pi m k / 512)
    w = F.hann_window()[200:400, None]
    assert np.abs(C[1:] - (w * cos[:200])[1:]).max() < 1e-12 and np.abs(C[0] - 0.5 * w[0] * cos[0]).max() < 1e-12
    assert np.abs(S - w * sin[:200]).max() < 1e-12
    assert np.abs(M - F.mel_filterbank()).max() < 1e-12
    assert np.abs(lm - F.logmel(audio.astype(np.float32))).max() < 1e-6
