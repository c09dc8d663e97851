"""Which tensors are quantized, along which axis, and why the others are not."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import BUILDERS
from onnx import TensorProto, helper, numpy_helper

from quantrs.config import QuantizeConfig
from quantrs.model import WeightStore
from quantrs.plan import plan_weights


def plan(model: onnx.ModelProto, **options):
    config = QuantizeConfig(min_elements=0, per_channel=True, **options)
    weights = WeightStore(model.graph, base_dir=None, model_path=None)
    return {p.name: p for p in plan_weights(model.graph, weights, config)}


@pytest.mark.parametrize(
    "name, expected",
    [
        ("conv_net", {"conv1.w": 0, "conv2.w": 0, "fc.w": 0}),
        ("mlp", {"w1": 1, "w2": 1}),
        ("gemm_transB0", {"B": 1}),
        ("gemm_transB1", {"B": 0}),
        ("embedding", {"emb": 0, "head": 1}),
        ("conv_transpose", {"wt": 1}),
    ],
)
def test_axis_follows_how_the_graph_uses_the_weight(name, expected):
    model, _ = BUILDERS[name]()
    plans = plan(model)
    assert {n: p.axis for n, p in plans.items() if p.quantize} == expected


def test_biases_are_not_weights():
    plans = plan(BUILDERS["conv_net"]()[0])
    for bias in ("conv1.b", "conv2.b", "fc.b"):
        assert not plans[bias].quantize
        assert plans[bias].reason.startswith("not a weight: input 2 of")


def test_per_tensor_has_no_axis():
    model, _ = BUILDERS["shared_weight"]()
    weights = WeightStore(model.graph, None, None)
    plans = plan_weights(model.graph, weights, QuantizeConfig(per_channel=False, min_elements=0))
    assert all(p.quantize and p.axis is None for p in plans)  # conflicting axes do not matter per tensor


def _graph_with(nodes, inits, inputs=None, outputs=None):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits))


def test_reasons_for_skipped_tensors():
    w = np.ones((8, 8), np.float32)
    model = _graph_with(
        [
            helper.make_node("MatMul", ["x", "w_small"], ["a"]),
            helper.make_node("MatMul", ["x", "w_excluded"], ["b"]),
            helper.make_node("Add", ["a", "b"], ["c"]),
            helper.make_node("MatMul", ["c", "w_out"], ["y"]),
            helper.make_node("MatMul", ["w_left", "c"], ["z"]),
            helper.make_node("Reshape", ["c", "shape"], ["r"]),
            helper.make_node("MatMul", ["x", "w_input"], ["i"]),
            helper.make_node("MatMul", ["x", "w_half"], ["h"]),
        ],
        [
            numpy_helper.from_array(w, "w_small"),
            numpy_helper.from_array(w, "w_excluded"),
            numpy_helper.from_array(w, "w_out"),
            numpy_helper.from_array(w, "w_left"),
            numpy_helper.from_array(np.array([1, 64], np.int64), "shape"),
            numpy_helper.from_array(w, "w_input"),
            numpy_helper.from_array(w.astype(np.float16), "w_half"),
            numpy_helper.from_array(w, "unused"),
        ],
        inputs=[
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
            helper.make_tensor_value_info("w_input", TensorProto.FLOAT, [8, 8]),
        ],
        outputs=[
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("w_out", TensorProto.FLOAT, None),
        ],
    )
    weights = WeightStore(model.graph, None, None)
    config = QuantizeConfig(min_elements=100, exclude=("w_excluded",))
    reasons = {p.name: p.reason for p in plan_weights(model.graph, weights, config) if not p.quantize}
    assert reasons["w_small"] == "too small: 64 elements < min_elements 100"
    assert reasons["w_excluded"] == "excluded by the user"
    assert reasons["w_out"] == "also a graph output"
    assert reasons["w_left"].startswith("not a weight: input 0 of MatMul")
    assert reasons["shape"] == "not a float tensor (INT64)"
    assert reasons["w_input"].startswith("also a graph input")
    assert reasons["w_half"] == "too small: 64 elements < min_elements 100"  # float16 is a weight like float32
    assert reasons["unused"] == "not used by any node"


def test_weights_captured_by_subgraphs_are_quantized_in_the_outer_graph():
    w = np.ones((8, 8), np.float32)
    then_branch = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["t"])], "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)]
    )
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)]
    )
    model = _graph_with(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(True), "cond")],
    )
    plans = plan(model)
    assert plans["w"].quantize and plans["w"].axis == 1 and plans["w"].scope == ""


def test_gather_on_another_axis_is_not_an_embedding():
    model = _graph_with(
        [helper.make_node("Gather", ["table", "idx"], ["y"], axis=1)],
        [numpy_helper.from_array(np.ones((8, 8), np.float32), "table"), numpy_helper.from_array(np.array([0, 1]), "idx")],
    )
    assert not plan(model)["table"].quantize
