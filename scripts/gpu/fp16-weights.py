#!/usr/bin/env python3
"""The fp16-weights trial of issue #5: a copy of a model package whose projection weights are
float16 while the recurrent state and everything else stay float32.

    python3 scripts/gpu/fp16-weights.py models/default /tmp/m16 [--graphs step-fused.onnx,chunk-fused.onnx]

Every MatMul whose second input is an initializer becomes Cast(x -> fp16) . MatMul(x16, W16) .
Cast(-> fp32); the other nodes, the inputs/outputs, the state tensors and the metadata are
unchanged. The rewritten graphs are written self-contained (no external weights file); the
other files of the package are symlinked, so `mambatag --model /tmp/m16` loads it like the
original. Not shipped: this is how the trial was made (BENCHMARKS.md, GPU section).
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def convert(model: onnx.ModelProto) -> int:
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    done = {}
    nodes = []
    n_conv = 0
    for node in g.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            w = node.input[1]
            if w not in done:
                arr = numpy_helper.to_array(inits[w])
                if arr.dtype != np.float32:
                    raise SystemExit(f"{w}: expected float32 weights, found {arr.dtype}")
                g.initializer.append(numpy_helper.from_array(arr.astype(np.float16), w + ".fp16"))
                done[w] = w + ".fp16"
            x16, y16 = node.output[0] + ".x16", node.output[0] + ".y16"
            nodes.append(helper.make_node("Cast", [node.input[0]], [x16], to=TensorProto.FLOAT16,
                                          name=node.name + ".cast_in"))
            nodes.append(helper.make_node("MatMul", [x16, done[w]], [y16], name=node.name))
            nodes.append(helper.make_node("Cast", [y16], [node.output[0]], to=TensorProto.FLOAT,
                                          name=node.name + ".cast_out"))
            n_conv += 1
        else:
            nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return n_conv


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package")
    ap.add_argument("out")
    ap.add_argument("--graphs", default="step-fused.onnx,chunk-fused.onnx")
    a = ap.parse_args()
    graphs = [g for g in a.graphs.split(",") if g]
    os.makedirs(a.out, exist_ok=True)
    for f in sorted(os.listdir(a.package)):
        dst = os.path.join(a.out, f)
        if f in graphs or os.path.lexists(dst):
            continue
        os.symlink(os.path.abspath(os.path.join(a.package, f)), dst)
    for gname in graphs:
        src = os.path.join(a.package, gname)
        if not os.path.exists(src):
            print(f"{src}: no such graph in the package", file=sys.stderr)
            return 1
        m = onnx.load(src, load_external_data=True)
        n = convert(m)
        onnx.checker.check_model(m)
        onnx.save(m, os.path.join(a.out, gname))
        print(f"{gname}: {n} MatMuls with fp16 weights -> {os.path.join(a.out, gname)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
