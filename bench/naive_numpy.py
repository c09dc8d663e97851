"""The baseline a user would write by hand: onnx.load, per-channel INT8 in numpy, onnx.save.

python bench/naive_numpy.py MODEL OUT
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


def main(src: str, dst: str) -> None:
    model = onnx.load(src)
    graph = model.graph
    weights = {n.input[1] for n in graph.node if n.op_type == "MatMul"}
    new_inits, dq_nodes = [], []
    for init in graph.initializer:
        if init.name not in weights:
            new_inits.append(init)
            continue
        w = numpy_helper.to_array(init)
        lo = np.minimum(w.min(axis=0), 0)
        hi = np.maximum(w.max(axis=0), 0)
        scale = ((hi - lo) / 255).astype(np.float32)
        scale[scale == 0] = 1
        zp = np.clip(np.rint(-lo / scale), 0, 255).astype(np.uint8)
        q = np.clip(np.rint(w / scale) + zp, 0, 255).astype(np.uint8)
        new_inits += [
            numpy_helper.from_array(q, init.name + "_q"),
            numpy_helper.from_array(scale, init.name + "_s"),
            numpy_helper.from_array(zp, init.name + "_z"),
        ]
        dq_nodes.append(
            helper.make_node("DequantizeLinear", [init.name + "_q", init.name + "_s", init.name + "_z"], [init.name], axis=1)
        )
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    nodes = dq_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    big = model.ByteSize() > 2**31 - 2**24
    onnx.save(model, dst, save_as_external_data=big, location=Path(dst).name + ".data")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
