"""Embedding lookups in onnxruntime: the float table, the quantized table read gather-first
(only the looked-up rows are dequantized: what quantrs writes), and the whole table dequantized
at every run (what `DequantizeLinear -> Gather` costs, the layout quantrs wrote before), side by
side in one group per table size. The bar: gather-first within 5x the float lookup, or +0.1 ms.

    pytest bench/test_bench_embedding.py --benchmark-only --benchmark-columns=min,median,rounds
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import quantrs
from quantrs import QuantizeConfig

TOKENS = 16


def table_model(rows: int, dim: int) -> onnx.ModelProto:
    table = np.random.default_rng(0).standard_normal((rows, dim), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, TOKENS])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [1, TOKENS, dim])],
        [numpy_helper.from_array(table, "table")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def dequantize_first(quantized: onnx.ModelProto) -> onnx.ModelProto:
    """The same codes, scales and zero points read as DequantizeLinear(table) -> Gather."""
    inits = {t.name: t for t in quantized.graph.initializer}
    codes, scale = inits["table_quantized"], inits["table_scale"]
    zero_point = inits.get("table_zero_point")
    inputs = [codes.name, scale.name] + ([zero_point.name] if zero_point is not None else [])
    nodes = [
        helper.make_node("DequantizeLinear", inputs, ["table"], axis=0),
        helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0),
    ]
    graph = helper.make_graph(nodes, "lookup", list(quantized.graph.input), list(quantized.graph.output), list(inits.values()))
    return helper.make_model(graph, opset_imports=list(quantized.opset_import))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embedding")
    out = {}
    for rows, dim in ((32000, 256), (32000, 1024)):
        src = folder / f"table_{dim}.onnx"
        onnx.save(table_model(rows, dim), src)
        dst = folder / f"table_{dim}_int8.onnx"
        quantrs.quantize(src, dst, QuantizeConfig(per_channel=True))
        old = folder / f"table_{dim}_dq_first.onnx"
        onnx.save(dequantize_first(onnx.load(str(dst))), old)
        out[dim] = {"float": src, "gather-first int8": dst, "dequantize-first int8": old}
    return out


@pytest.mark.parametrize("layout", ["float", "gather-first int8", "dequantize-first int8"])
@pytest.mark.parametrize("dim", [256, 1024])
def test_lookup_latency(benchmark, models, dim, layout):
    benchmark.group = f"lookup of {TOKENS} rows in a 32000x{dim} table"
    session = ort.InferenceSession(str(models[dim][layout]), providers=["CPUExecutionProvider"])
    feed = {"ids": np.random.default_rng(1).integers(0, 32000, size=(1, TOKENS)).astype(np.int64)}
    for _ in range(5):
        session.run(None, feed)
    benchmark(session.run, None, feed)
