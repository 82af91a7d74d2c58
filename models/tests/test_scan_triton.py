"""models/scan_triton.py (the Triton selective scan for GPU training) against the plain float64
recurrence, outputs and all six gradients, run by Triton's CPU interpreter (TRITON_INTERPRET=1,
set in a child process before Triton is imported). Sizes cover channel masking (E not a multiple
of the 32-channel block), a partial last chunk, and with and without an initial state."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]

CHILD = r'''
import sys, torch
sys.path.insert(0, sys.argv[1])
from models.scan_triton import selective_scan_triton, recurrence as reference
from models.mamba import selective_scan

torch.manual_seed(0)
worst = 0.0
for (Bsz, T, E, N, L, with_h0) in [(2, 37, 40, 16, 8, True), (1, 20, 32, 4, 64, False), (3, 9, 7, 8, 4, True)]:
    x = torch.randn(Bsz, T, E, dtype=torch.float64)
    dt = torch.nn.functional.softplus(torch.randn(Bsz, T, E, dtype=torch.float64) - 1)
    A = -torch.exp(torch.randn(E, N, dtype=torch.float64) * 0.5)
    Bm = torch.randn(Bsz, T, N, dtype=torch.float64)
    Cm = torch.randn(Bsz, T, N, dtype=torch.float64)
    h0 = torch.randn(Bsz, E, N, dtype=torch.float64) if with_h0 else None
    gy = torch.randn(Bsz, T, E, dtype=torch.float64)
    ghT = torch.randn(Bsz, E, N, dtype=torch.float64)
    leaves = [x, dt, A, Bm, Cm] + ([h0] if with_h0 else [])

    def grads(fn, dtype):
        ins = [t.detach().to(dtype).requires_grad_(True) for t in leaves]
        h = ins[5] if with_h0 else None
        y, hT = fn(*ins[:5], h)
        ((y * gy.to(dtype)).sum() + (hT * ghT.to(dtype)).sum()).backward()
        return [y.detach().double(), hT.detach().double()] + [t.grad.double() for t in ins]

    ref = grads(reference, torch.float64)
    got = grads(lambda *a: selective_scan_triton(*a, chunk=L), torch.float32)
    torch_scan = grads(lambda *a: selective_scan(*a, chunk=L), torch.float32)
    names = ["y", "hT", "dx", "ddt", "dA", "dB", "dC", "dh0"]
    for name, r, g, s in zip(names, ref, got, torch_scan):
        err = float((g - r).norm() / r.norm())
        err_torch = float((s - r).norm() / r.norm())
        worst = max(worst, err)
        print(f"{(Bsz, T, E, N, L, with_h0)} {name}: rel err {err:.2e} (PyTorch scan {err_torch:.2e})")
        assert torch.isfinite(g).all(), name
        assert err < 1e-5, (name, err)
# under autocast some inputs arrive in bf16: each gradient comes back in its input's dtype
xb = torch.randn(1, 5, 8).bfloat16().requires_grad_(True)
Bb = torch.randn(1, 5, 4).bfloat16().requires_grad_(True)
dtb = torch.rand(1, 5, 8, requires_grad=True)
Ab = (-torch.rand(8, 4) - 0.1).requires_grad_(True)
y, hT = selective_scan_triton(xb, dtb, Ab, Bb, Bb.detach().float(), None, chunk=2)
(y.sum() + hT.sum()).backward()
assert y.dtype == torch.float32 and xb.grad.dtype == torch.bfloat16 and Bb.grad.dtype == torch.bfloat16
assert dtb.grad.dtype == torch.float32 and torch.isfinite(xb.grad.float()).all()
# MambaTagger.set_scan puts the kernel into every layer, and the model's outputs agree
from models.mamba import MambaConfig, MambaTagger
m = MambaTagger(MambaConfig(d_model=16, n_layers=2, d_state=4, labels=["a", "b"]), seed=0)
m.frontend.compute_dtype = torch.float32
audio = torch.randn(2, 160 * 30)
ref_out = m(audio)
m.set_scan("triton")
assert all(l.mixer.scan is selective_scan_triton for l in m.layers) and m.scan_impl == "triton"
assert float((m(audio) - ref_out).abs().max()) < 1e-5
print("worst", worst)
'''


def test_triton_scan_matches_the_recurrence_and_its_gradients():
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", CHILD, str(ROOT)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "worst" in r.stdout


def test_train_smoke_with_the_triton_scan(tmp_path):
    """models/train.py --scan triton runs end to end (CPU interpreter) and trains the same
    model as the PyTorch scan: after two identical steps the weights agree to float32 noise."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    outs = {}
    for scan in ("triton", "torch"):
        out = tmp_path / scan
        r = subprocess.run([sys.executable, str(ROOT / "models" / "train.py"), "--smoke", "--scan", scan,
                            "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        outs[scan] = out / "weights.safetensors"
    import json
    from safetensors.numpy import load_file
    a, b = load_file(outs["triton"]), load_file(outs["torch"])
    assert a.keys() == b.keys()
    worst = max(float(abs(a[k] - b[k]).max()) for k in a)
    assert worst < 1e-4, worst
    assert worst > 0, "both runs used the same scan: --scan triton did not reach the model"
    summary = json.loads((tmp_path / "triton" / "train_summary.json").read_text())
    assert summary["scan"] == "triton"


def test_train_refuses_the_triton_scan_without_a_gpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, str(ROOT / "models" / "train.py"), "--smoke", "--scan", "triton",
                        "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "--scan triton: needs a CUDA device" in r.stderr
