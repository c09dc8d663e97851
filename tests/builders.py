"""Small ONNX models built with onnx.helper, one per weight layout quantrs must handle.

Weights are random with a different magnitude per output channel, so that per-channel
quantization has something to win. Each builder returns (model, feeds) where feeds are inputs
for onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def _weight(rng: np.random.Generator, shape: tuple[int, ...], axis: int) -> np.ndarray:
    w = rng.standard_normal(shape).astype(np.float32)
    spread = np.exp(rng.uniform(-2.0, 1.0, size=shape[axis])).astype(np.float32)
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return (w * spread.reshape(view) / np.sqrt(np.prod(shape) / shape[axis])).astype(np.float32)


def _model(nodes, inputs, outputs, inits, opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="quantrs-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def conv_net(seed: int = 0):
    """Conv -> Relu -> Conv -> GlobalAveragePool -> Flatten -> Gemm(transB=1)."""
    rng = np.random.default_rng(seed)
    inits = {
        "conv1.w": _weight(rng, (32, 3, 3, 3), 0),
        "conv1.b": rng.standard_normal(32).astype(np.float32) * 0.1,
        "conv2.w": _weight(rng, (64, 32, 3, 3), 0),
        "conv2.b": rng.standard_normal(64).astype(np.float32) * 0.1,
        "fc.w": _weight(rng, (10, 64), 0),
        "fc.b": rng.standard_normal(10).astype(np.float32) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv1.w", "conv1.b"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2.w", "conv2.b"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], transB=1, name="fc"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    feeds = {"x": rng.standard_normal((4, 3, 16, 16)).astype(np.float32)}
    return _model(nodes, [x], [y], inits), feeds


def mlp(seed: int = 0):
    """MatMul with [K, N] weights: x @ W1 + b1 -> Relu -> @ W2."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": _weight(rng, (64, 128), 1),
        "b1": rng.standard_normal(128).astype(np.float32) * 0.1,
        "w2": _weight(rng, (128, 32), 1),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])
    feeds = {"x": rng.standard_normal((8, 64)).astype(np.float32)}
    return _model(nodes, [x], [y], inits), feeds


def gemm(trans_b: int, seed: int = 0):
    """Gemm with B [N, K] (transB=1) or [K, N] (transB=0)."""
    rng = np.random.default_rng(seed)
    shape, axis = ((48, 96), 0) if trans_b else ((96, 48), 1)
    inits = {"B": _weight(rng, shape, axis), "C": rng.standard_normal(48).astype(np.float32) * 0.1}
    nodes = [helper.make_node("Gemm", ["x", "B", "C"], ["y"], transB=trans_b, name="gemm")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 96])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 48])
    feeds = {"x": rng.standard_normal((8, 96)).astype(np.float32)}
    return _model(nodes, [x], [y], inits), feeds


def embedding(seed: int = 0):
    """Gather rows of an embedding table, then a MatMul head."""
    rng = np.random.default_rng(seed)
    inits = {"emb": _weight(rng, (200, 32), 0), "head": _weight(rng, (32, 16), 1)}
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], axis=0, name="embed"),
        helper.make_node("MatMul", ["e", "head"], ["y"], name="head"),
    ]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "T"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "T", 16])
    feeds = {"ids": rng.integers(0, 200, size=(2, 7)).astype(np.int64)}
    return _model(nodes, [ids], [y], inits), feeds


def shared_weight(seed: int = 0):
    """One weight feeding two MatMuls (same axis), plus one shared with conflicting axes."""
    rng = np.random.default_rng(seed)
    inits = {"w": _weight(rng, (64, 64), 1), "tied": _weight(rng, (64, 64), 0)}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="mm_a"),
        helper.make_node("MatMul", ["a", "w"], ["b"], name="mm_b"),
        # "tied" is a Gemm weight with transB=1 (axis 0) and a MatMul weight (axis 1).
        helper.make_node("Gemm", ["b", "tied"], ["c"], transB=1, name="gemm_tied"),
        helper.make_node("MatMul", ["c", "tied"], ["y"], name="mm_tied"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])
    feeds = {"x": rng.standard_normal((8, 64)).astype(np.float32)}
    return _model(nodes, [x], [y], inits), feeds


def conv_transpose(seed: int = 0):
    """ConvTranspose with weight [C_in, C_out, kH, kW] (channel axis 1)."""
    rng = np.random.default_rng(seed)
    inits = {"wt": _weight(rng, (16, 24, 3, 3), 1)}
    nodes = [helper.make_node("ConvTranspose", ["x", "wt"], ["y"], name="deconv")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 24, 10, 10])
    feeds = {"x": rng.standard_normal((2, 16, 8, 8)).astype(np.float32)}
    return _model(nodes, [x], [y], inits), feeds


def prelu_cnn(seed: int = 0, *, conv_output: bool = False):
    """MTCNN's layout in small: Conv -> PRelu -> MaxPool -> Conv -> PRelu -> Flatten -> MatMul +
    bias Add (as keras2onnx writes a dense layer) -> PRelu -> Gemm head. PRelu has no integer
    kernel: it reads the Convs' outputs in float. `conv_output`: the second Conv's output is
    a graph output too."""
    rng = np.random.default_rng(seed)
    inits = {
        "c1.w": _weight(rng, (8, 3, 3, 3), 0),
        "c1.b": rng.standard_normal(8).astype(np.float32) * 0.1,
        "c1.slope": rng.uniform(0.1, 0.4, (8, 1, 1)).astype(np.float32),
        "c2.w": _weight(rng, (16, 8, 3, 3), 0),
        "c2.b": rng.standard_normal(16).astype(np.float32) * 0.1,
        "c2.slope": rng.uniform(0.1, 0.4, (16, 1, 1)).astype(np.float32),
        "d.w": _weight(rng, (16 * 9 * 9, 32), 1),
        "d.b": rng.standard_normal(32).astype(np.float32) * 0.1,
        "d.slope": rng.uniform(0.1, 0.4, 32).astype(np.float32),
        "head.w": _weight(rng, (4, 32), 0),
        "head.b": rng.standard_normal(4).astype(np.float32) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["c1"], name="conv1"),
        helper.make_node("PRelu", ["c1", "c1.slope"], ["a1"], name="prelu1"),
        helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "c2.w", "c2.b"], ["c2"], name="conv2"),
        helper.make_node("PRelu", ["c2", "c2.slope"], ["a2"], name="prelu2"),
        helper.make_node("Flatten", ["a2"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "d.w"], ["d"], name="dense"),
        helper.make_node("Add", ["d", "d.b"], ["db"], name="dense_bias"),
        helper.make_node("PRelu", ["db", "d.slope"], ["da"], name="prelu3"),
        helper.make_node("Gemm", ["da", "head.w", "head.b"], ["y"], transB=1, name="head"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 24, 24])
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])]
    if conv_output:
        outputs.append(helper.make_tensor_value_info("c2", TensorProto.FLOAT, ["N", 16, 9, 9]))
    feeds = {"x": rng.standard_normal((4, 3, 24, 24)).astype(np.float32)}
    return _model(nodes, [x], outputs, inits), feeds


def relu6_cnn(seed: int = 0, *, low: float = 0.0, high: float = 6.0):
    """MobileNet's block: Conv -> Clip(low, high) -> depthwise Conv -> Clip -> 1x1 Conv. The first
    Clip's bounds are initializers, the second's Constant nodes."""
    rng = np.random.default_rng(seed)
    inits = {
        "expand.w": _weight(rng, (32, 8, 1, 1), 0),
        "expand.b": rng.standard_normal(32).astype(np.float32) * 0.1,
        "dw.w": _weight(rng, (32, 1, 3, 3), 0),
        "dw.b": rng.standard_normal(32).astype(np.float32) * 0.1,
        "project.w": _weight(rng, (8, 32, 1, 1), 0),
        "low": np.array(low, np.float32),
        "high": np.array(high, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "expand.w", "expand.b"], ["e"], name="expand"),
        helper.make_node("Clip", ["e", "low", "high"], ["e6"], name="clip1"),
        helper.make_node("Conv", ["e6", "dw.w", "dw.b"], ["d"], group=32, pads=[1, 1, 1, 1], name="dw"),
        helper.make_node("Constant", [], ["low2"], value=helper.make_tensor("low2", TensorProto.FLOAT, [], [low])),
        helper.make_node("Constant", [], ["high2"], value=helper.make_tensor("high2", TensorProto.FLOAT, [], [high])),
        helper.make_node("Clip", ["d", "low2", "high2"], ["d6"], name="clip2"),
        helper.make_node("Conv", ["d6", "project.w"], ["y"], name="project"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 16, 16])
    feeds = {"x": rng.standard_normal((4, 8, 16, 16)).astype(np.float32)}
    return _model(nodes, [x], [y], inits), feeds


BUILDERS = {
    "conv_net": conv_net,
    "mlp": mlp,
    "gemm_transB0": lambda: gemm(0),
    "gemm_transB1": lambda: gemm(1),
    "embedding": embedding,
    "shared_weight": shared_weight,
    "conv_transpose": conv_transpose,
}
