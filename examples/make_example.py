"""Build examples/small_cnn.onnx, the model the README's first command quantizes.

A small image classifier (3x32x32 -> 10 classes): three Conv+Relu stages with a residual
connection, global pooling and a Gemm head, about 300k float32 weights. The weights are seeded
random values (He-initialised), so the file is reproducible: `python examples/make_example.py`.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(seed: int = 2026) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits: dict[str, np.ndarray] = {}

    def conv_weight(name: str, cout: int, cin: int, k: int) -> str:
        std = np.sqrt(2.0 / (cin * k * k))
        inits[name + ".weight"] = (rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32)
        inits[name + ".bias"] = (rng.standard_normal(cout) * 0.05).astype(np.float32)
        return name

    nodes = []

    def conv(name: str, x: str, cout: int, cin: int, k: int = 3, stride: int = 1, relu: bool = True) -> str:
        conv_weight(name, cout, cin, k)
        pad = k // 2
        nodes.append(
            helper.make_node(
                "Conv",
                [x, name + ".weight", name + ".bias"],
                [name],
                name=name,
                kernel_shape=[k, k],
                pads=[pad] * 4,
                strides=[stride, stride],
            )
        )
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [name + ".relu"], name=name + ".relu"))
        return name + ".relu"

    h = conv("stem", "image", 32, 3)
    h = conv("stage1", h, 64, 32, stride=2)
    r = conv("block.conv1", h, 64, 64)
    r = conv("block.conv2", r, 64, 64, relu=False)
    nodes.append(helper.make_node("Add", [h, r], ["block.add"], name="block.add"))
    nodes.append(helper.make_node("Relu", ["block.add"], ["block.out"], name="block.relu"))
    h = conv("stage2", "block.out", 128, 64, stride=2)
    h = conv("stage3", h, 128, 128)
    nodes.append(helper.make_node("GlobalAveragePool", [h], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"))
    inits["head.weight"] = (rng.standard_normal((10, 128)) * np.sqrt(1.0 / 128)).astype(np.float32)
    inits["head.bias"] = np.zeros(10, np.float32)
    nodes.append(helper.make_node("Gemm", ["flat", "head.weight", "head.bias"], ["logits"], name="head", transB=1))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1))

    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="quantrs-example")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


if __name__ == "__main__":
    out = Path(__file__).with_name("small_cnn.onnx")
    onnx.save(build(), str(out))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
