"""What a Python user would write: the same weights as a PyTorch eager step loop.

Runs ``MambaTagger.step`` (one 10 ms hop per call, state carried) for N concurrent streams and
prints one JSON line per N with per-step latency and stream-frames per second, so `mambatag
bench --device cuda` can be compared with it in the same run on the same GPU.

    python3 -m models.bench_torch WEIGHTS.safetensors --streams 1,16,256,4096 [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from models.mamba import MambaTagger


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--streams", default="1,16,256,1024,4096,16384")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    model = MambaTagger.from_safetensors(a.weights).to(dev).eval()
    for n in [int(x) for x in a.streams.split(",") if x]:
        state = model.init_state(n, device=dev)
        hop = torch.randn(n, 160, device=dev) * 0.1
        times = []
        with torch.inference_mode():
            for i in range(a.steps + 20):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                probs, state = model.step(hop, state)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                if i >= 20:
                    times.append(time.perf_counter() - t)
        times.sort()
        p50 = times[len(times) // 2] * 1e6
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1e6
        mean = sum(times) / len(times)
        print(json.dumps({"impl": "pytorch-eager", "device": str(dev), "streams": n, "step_us_p50": p50,
                          "step_us_p99": p99, "stream_frames_per_s": n / mean}), flush=True)


if __name__ == "__main__":
    main()
