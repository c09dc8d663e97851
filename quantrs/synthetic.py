"""Synthetic models of any size, for benchmarks and tests.

    python -m quantrs.synthetic DIR --params 100M [--hidden 4096] [--external-data]

A chain of `layers` MatMul [hidden, hidden] weights with a bias Add after each, written with
quantrs' own streaming writer so that a multi-GB model never has to sit in memory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from quantrs.writer import OutTensor, Payload, write_model


def matmul_stack(path: Path, layers: int, hidden: int = 4096, *, external_data: bool = False, seed: int = 0) -> Path:
    """Write the model and return its path. Weights are N(0, 1/hidden), biases small.

    Each weight is generated only when the writer reaches it, so memory stays at one layer.
    """
    nodes, tensors = [], []
    x = "x"
    for i in range(layers):
        w, b = f"layer{i}.weight", f"layer{i}.bias"
        nodes.append(helper.make_node("MatMul", [x, w], [f"h{i}"], name=f"layer{i}.matmul"))
        nodes.append(helper.make_node("Add", [f"h{i}", b], [f"y{i}"], name=f"layer{i}.add"))
        x = f"y{i}"
        for name, shape in ((w, (hidden, hidden)), (b, (hidden,))):
            header = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)

            def produce(shape=shape, i=i, is_bias=name == b):
                rng = np.random.default_rng((seed, i, is_bias))
                scale = 0.01 if is_bias else 1.0 / np.sqrt(hidden)
                return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale))

            tensors.append(OutTensor(header, Payload(4 * int(np.prod(shape)), produce)))
    graph = helper.make_graph(
        nodes,
        "matmul_stack",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", hidden])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", hidden])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="quantrs-bench")
    model.ir_version = 8
    write_model(model, tensors, path, external_data=external_data)
    return path


def layers_for(params: float, hidden: int) -> int:
    return max(1, round(params / (hidden * hidden + hidden)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--params", default="100M", help="e.g. 25M, 100M, 400M, 600M")
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--external-data", action="store_true")
    args = parser.parse_args()
    params = float(args.params.rstrip("M")) * 1e6
    layers = layers_for(params, args.hidden)
    args.folder.mkdir(parents=True, exist_ok=True)
    path = matmul_stack(args.folder / f"matmul_{args.params}.onnx", layers, args.hidden, external_data=args.external_data)
    print(f"{path}: {layers} layers of {args.hidden}x{args.hidden}")


if __name__ == "__main__":
    main()
