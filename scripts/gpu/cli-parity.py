"""Compare per-frame scores of two `mambatag tag --frames` JSONL outputs (used on the GPU machine:
CPU standard graph vs CUDA fused graph). Prints the max abs difference; exit 1 above 1e-3."""
import json
import sys


def frames(path):
    out = []
    for line in open(path):
        d = json.loads(line)
        if "scores" in d:
            out.append([d["scores"][k] for k in sorted(d["scores"])])
    return out


a, b = frames(sys.argv[1]), frames(sys.argv[2])
assert len(a) == len(b) and a, (len(a), len(b))
m = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
print(f"{sys.argv[2]}: {len(a)} frames, max abs score difference vs {sys.argv[1]}: {m:.3g}")
sys.exit(0 if m <= 1e-3 else 1)
