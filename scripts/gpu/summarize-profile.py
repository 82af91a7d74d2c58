"""Summarize an ONNX Runtime profile (MAMBATAG_ORT_PROFILE=prefix): time per op type per run,
and the number of nodes run per session call. Usage: python3 summarize-profile.py PROFILE.json"""
import collections
import json
import sys

ev = json.load(open(sys.argv[1]))
runs = sum(1 for e in ev if e.get("name") == "model_run")
by = collections.defaultdict(float)
n = 0
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        by[e["args"].get("op_name", "?")] += e["dur"]
        n += 1
total = sum(by.values())
print(f"{runs} runs, {n / max(runs, 1):.0f} nodes per run, node time {total / max(runs, 1):.1f} us per run")
for k, v in sorted(by.items(), key=lambda kv: -kv[1]):
    print(f"  {k:28s} {v / max(runs, 1):8.1f} us/run  {100 * v / total:5.1f} %")
