#!/usr/bin/env python3
"""The Triton selective scan next to the PyTorch one: parity (y, h_T and all gradients, relative
to the same recurrence in float64) and forward+backward time of each. Used by run-scan-train.sh on the
GPU; a CPU dry run: TRITON_INTERPRET=1 python3 scripts/gpu/scan_check.py --device cpu --B 2 --T 40 --E 32
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from models.mamba import selective_scan  # noqa: E402
from models.scan_triton import recurrence, selective_scan_triton  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cuda")
ap.add_argument("--B", type=int, default=32)
ap.add_argument("--T", type=int, default=3000)
ap.add_argument("--E", type=int, default=256)
ap.add_argument("--N", type=int, default=16)
ap.add_argument("--reps", type=int, default=10)
a = ap.parse_args()
dev = torch.device(a.device)
torch.backends.cuda.matmul.allow_tf32 = False
B, T, E, N = a.B, a.T, a.E, a.N
g = torch.Generator(device=dev).manual_seed(0)


def r(*s):
    return torch.randn(*s, device=dev, generator=g, dtype=torch.float64)


base = [r(B, T, E), torch.nn.functional.softplus(r(B, T, E) - 2), -torch.exp(r(E, N) * 0.5),
        r(B, T, N), r(B, T, N), r(B, E, N)]
gy, ghT = r(B, T, E), r(B, E, N)


def run(fn, dtype):
    leaves = [t.detach().to(dtype).requires_grad_(True) for t in base]
    y, hT = fn(*leaves)
    ((y * gy.to(y.dtype)).sum() + (hT * ghT.to(hT.dtype)).sum()).backward()
    return [y.detach().double(), hT.detach().double()] + [t.grad.double() for t in leaves]


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


ref = run(recurrence, torch.float64)
names = ["y", "hT", "dx", "ddt", "dA", "dB", "dC", "dh0"]
scans = (("triton", selective_scan_triton), ("torch", selective_scan))
worst = {}
for label, fn in scans:
    got = run(fn, torch.float32)
    errs = [float((x - y).norm() / y.norm()) for x, y in zip(got, ref)]
    worst[label] = max(errs)
    print(f"{label} rel err vs float64: " + " ".join(f"{n} {e:.1e}" for n, e in zip(names, errs)), flush=True)
for label, fn in scans:
    times = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(a.reps + 3):
        sync()
        t0 = time.perf_counter()
        run(fn, torch.float32)
        sync()
        if i >= 3:
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    mem = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
    print(f"{label}: forward+backward {times[len(times) // 2]:.1f} ms, median of {a.reps} "
          f"(B {B}, T {T}, E {E}, N {N}; includes the float32 copies of the inputs), peak {mem:.1f} GiB", flush=True)
if worst["triton"] > 1e-4:
    sys.exit(f"triton scan off by {worst['triton']:.1e} relative (limit 1e-4)")
