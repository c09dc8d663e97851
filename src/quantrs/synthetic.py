"""Synthetic models of any size, for benchmarks and tests.

    python -m quantrs.synthetic DIR --params 100M [--hidden 4096] [--external-data]

Counts take K, M and B suffixes; below one hidden x hidden layer, one smaller square layer is
written. The parameters made are printed (layers round to the nearest whole layer).

A chain of `layers` MatMul [hidden, hidden] weights with a bias Add after each, written with
quantrs' own streaming writer so that a multi-GB model never has to sit in memory.
"""

from __future__ import annotations

import argparse
import re
import sys
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

            def produce(shape: tuple[int, ...] = shape, i: int = i, is_bias: bool = name == b) -> np.ndarray:
                rng = np.random.default_rng((seed, i, is_bias))
                scale = 0.01 if is_bias else 1.0 / np.sqrt(hidden)
                return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)

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


_SUFFIXES = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9}


def parse_params(text: str) -> int:
    """A parameter count such as 25M, 1.5B, 300K or 1000000; ValueError for anything else."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMBG]?)\s*", text.upper())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a parameter count like 25M, 1.5B or 300K")
    return int(float(match.group(1)) * _SUFFIXES[match.group(2)])


def shape_for(params: int, hidden: int) -> tuple[int, int]:
    """(layers, hidden) for about `params` parameters: `hidden` wide when that leaves at least
    one layer, else one square layer as wide as the count allows (a multiple of 8)."""
    if params >= hidden * hidden + hidden:
        return layers_for(params, hidden), hidden
    side = max(8, int((params**0.5) // 8 * 8))
    return 1, side


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m quantrs.synthetic",
        description="Write a MatMul-stack ONNX model of about the given size (for benchmarks and tests).",
    )
    parser.add_argument("folder", type=Path, help="Folder to write the model to (created if missing).")
    parser.add_argument("--params", default="100M", help="Parameters, e.g. 300K, 25M, 400M, 1.5B (default 100M).")
    parser.add_argument("--hidden", type=int, default=4096, help="Width of each square layer (default 4096).")
    parser.add_argument("--external-data", action="store_true", help="Keep the weights in MODEL.onnx.data beside the model.")
    args = parser.parse_args(argv)
    try:
        params = parse_params(args.params)
    except ValueError as exc:
        parser.error(f"--params: {exc}")
    if args.hidden < 1:
        parser.error(f"--hidden: must be positive, not {args.hidden}")
    layers, hidden = shape_for(params, args.hidden)
    args.folder.mkdir(parents=True, exist_ok=True)
    path = matmul_stack(args.folder / f"matmul_{args.params}.onnx", layers, hidden, external_data=args.external_data)
    made = layers * (hidden * hidden + hidden)
    print(f"{path}: {layers} layer(s) of {hidden}x{hidden}, {made:,} parameters (asked {params:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
