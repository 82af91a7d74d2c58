#!/usr/bin/env python3
"""Per-op-type profile of a mambatag graph in ONNX Runtime (CPU, 1 thread).

    python3 scripts/profile_step.py models/default/step.onnx BATCH RUNS

Shares of kernel time matter more than absolute numbers: profiling adds per-kernel cost.
"""
import json, sys, collections, numpy as np, onnxruntime as ort, glob, os
path, B, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
so.enable_profiling = True; so.profile_file_prefix = f"/tmp/prof_{os.path.basename(os.path.dirname(path))}_{B}"
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
feeds = {}
for i in s.get_inputs():
    shp = [B if isinstance(d, str) else d for d in i.shape]
    if i.name == "audio" and isinstance(i.shape[1], str): shp[1] = 250*160
    feeds[i.name] = (np.random.randn(*shp)*0.1).astype(np.float32)
for _ in range(n): s.run(None, feeds)
f = s.end_profiling()
ev = json.load(open(f))
by = collections.Counter(); cnt = collections.Counter(); tot = 0; runs = 0
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        op = e["args"]["op_name"]; by[op] += e["dur"]; cnt[op] += 1
    if e.get("cat") == "Session" and e["name"] == "model_run": tot += e["dur"]; runs += 1
kern = sum(by.values())
print(f"{path} B={B}: model_run {tot/runs:.1f} us/run, kernels {kern/runs:.1f} us/run, {sum(cnt.values())/runs:.0f} kernels/run")
for op, d in by.most_common(12): print(f"  {op:28s} {d/runs:7.1f} us  {cnt[op]/runs:4.0f} x")
