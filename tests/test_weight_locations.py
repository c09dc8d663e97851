"""Every weight, wherever the graph keeps it: Constant nodes, If/Loop/Scan bodies (own and
captured), recurrent layers, float16/bfloat16, behind a Cast or a Transpose, embedding tables.

Each model is built with onnx.helper, quantized, checked with onnx.checker (full check, bodies
included) and run in onnxruntime against the float model. Tolerances are relative L2 errors of
the outputs: INT8 per channel 2%, per tensor 4%; 4 bits per channel 20%.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import quantrs
from quantrs import QuantizeConfig
from quantrs.errors import AlreadyQuantizedError, ModelLoadError, UnknownNameError, UnsupportedModelError

OPSET = 17


def _w(rng, shape, scale=None):
    scale = scale if scale is not None else 1.0 / np.sqrt(shape[0])
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _model(nodes, inputs, outputs, inits=(), opset=OPSET):
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="quantrs-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _const(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name + "_value"), name=f"const_{name}")


def run(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def rel_l2(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def quantize_and_compare(save, tmp_path, model, feeds_list, config, tolerance, name="model.onnx"):
    """Quantize, check, run every feed (each If branch) in both models; returns the report and
    the output model."""
    src = save(model, name)
    before = src.read_bytes()
    dst = tmp_path / ("q_" + name)
    report = quantrs.quantize(src, dst, config)
    assert src.read_bytes() == before
    out = onnx.load(str(dst))
    onnx.checker.check_model(out, full_check=True)
    assert [(i.name, i.type) for i in out.graph.input] == [(i.name, i.type) for i in model.graph.input]
    assert [(o.name, o.type) for o in out.graph.output] == [(o.name, o.type) for o in model.graph.output]
    for feeds in feeds_list:
        for got, want in zip(run(dst, feeds), run(src, feeds)):
            assert got.dtype == want.dtype
            assert rel_l2(got, want) <= tolerance, (feeds.keys(), rel_l2(got, want))
    return report, out


def all_nodes(graph):
    for node in graph.node:
        yield node, graph
        for attr in node.attribute:
            for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                yield from all_nodes(g)


# --- Constant nodes ----------------------------------------------------------------------------


def constant_mlp(seed=0):
    """x @ W1 (Constant) + b (Constant) -> Relu -> @ W2 (Constant), and a shape Constant."""
    rng = np.random.default_rng(seed)
    nodes = [
        _const("w1", _w(rng, (64, 96))),
        _const("b1", _w(rng, (96,), 0.1)),
        _const("w2", _w(rng, (96, 32))),
        _const("shape", np.array([-1, 32], np.int64)),
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["m"], name="mm2"),
        helper.make_node("Reshape", ["m", "shape"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])
    return _model(nodes, [x], [y]), {"x": rng.standard_normal((8, 64)).astype(np.float32)}


@pytest.mark.parametrize("per_channel", [False, True])
def test_constant_node_weights_are_quantized_in_place(save, tmp_path, per_channel):
    model, feeds = constant_mlp()
    config = QuantizeConfig(per_channel=per_channel, min_elements=0)
    report, out = quantize_and_compare(save, tmp_path, model, [feeds], config, 0.02 if per_channel else 0.04)
    tensors = {t.name: t for t in report.tensors}
    assert tensors["w1"].quantized and tensors["w1"].kind == "constant" and tensors["w2"].quantized
    assert tensors["w1"].axis == (1 if per_channel else None)
    assert not tensors["b1"].quantized and tensors["b1"].reason.startswith("not a weight: input 1 of Add")
    assert not tensors["shape"].quantized and tensors["shape"].reason == "not a float tensor (INT64)"
    ops = {n.output[0]: n.op_type for n in out.graph.node}
    assert ops["w1"] == ops["w2"] == "DequantizeLinear"  # the Constant's output name, now a DequantizeLinear
    assert ops["b1"] == ops["shape"] == "Constant"  # what is not a weight stays as it is
    assert out.graph.node[[n.output[0] for n in out.graph.node].index("w1")].op_type == "DequantizeLinear"
    assert report.compression > 3.0


def test_dry_run_lists_constant_weights():
    model, _ = constant_mlp()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        onnx.save(model, path)
        plan = quantrs.dry_run(path, QuantizeConfig(min_elements=0))
    entries = {e.name: e for e in plan.tensors}
    assert entries["w1"].quantize and entries["w1"].kind == "constant" and entries["w1"].scope == ""
    assert plan.quantized_count == 2


# --- subgraphs ---------------------------------------------------------------------------------


def branching_model(seed=0):
    """If (sr == 16000): then: x @ W_then (a body initializer) @ W_shared (captured from the main
    graph); else: x @ W_else (a Constant in the body) with a nested If whose branches hold a
    Constant each. Both branches end in [N, 16]."""
    rng = np.random.default_rng(seed)
    w_shared = numpy_helper.from_array(_w(rng, (48, 16)), "w_shared")
    then_branch = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w_then"], ["t1"], name="then_mm"),
            helper.make_node("MatMul", ["t1", "w_shared"], ["t2"], name="then_shared"),
        ],
        "then",
        [],
        [helper.make_tensor_value_info("t2", TensorProto.FLOAT, ["N", 16])],
        [numpy_helper.from_array(_w(rng, (32, 48)), "w_then")],
    )
    inner_then = helper.make_graph(
        [_const("w_deep_a", _w(rng, (48, 16))), helper.make_node("MatMul", ["e1", "w_deep_a"], ["d1"], name="deep_a")],
        "inner_then",
        [],
        [helper.make_tensor_value_info("d1", TensorProto.FLOAT, ["N", 16])],
    )
    inner_else = helper.make_graph(
        [_const("w_deep_b", _w(rng, (48, 16))), helper.make_node("MatMul", ["e1", "w_deep_b"], ["d2"], name="deep_b")],
        "inner_else",
        [],
        [helper.make_tensor_value_info("d2", TensorProto.FLOAT, ["N", 16])],
    )
    else_branch = helper.make_graph(
        [
            _const("w_else", _w(rng, (32, 48))),
            helper.make_node("MatMul", ["x", "w_else"], ["e1"], name="else_mm"),
            helper.make_node("If", ["deep"], ["e2"], then_branch=inner_then, else_branch=inner_else, name="inner_if"),
        ],
        "else",
        [],
        [helper.make_tensor_value_info("e2", TensorProto.FLOAT, ["N", 16])],
    )
    nodes = [
        _const("rate", np.array(16000, np.int64)),
        helper.make_node("Equal", ["sr", "rate"], ["is16k"]),
        helper.make_node("If", ["is16k"], ["y"], then_branch=then_branch, else_branch=else_branch, name="by_rate"),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        helper.make_tensor_value_info("deep", TensorProto.BOOL, []),
    ]
    model = _model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], [w_shared])
    x = rng.standard_normal((6, 32)).astype(np.float32)
    feeds = [
        {"x": x, "sr": np.array(16000, np.int64), "deep": np.array(True)},
        {"x": x, "sr": np.array(8000, np.int64), "deep": np.array(True)},
        {"x": x, "sr": np.array(8000, np.int64), "deep": np.array(False)},
    ]
    return model, feeds


@pytest.mark.parametrize("bits, per_channel, tolerance", [(8, True, 0.02), (8, False, 0.04), (4, True, 0.2)])
def test_if_branches_own_and_captured_weights(save, tmp_path, bits, per_channel, tolerance):
    model, feeds = branching_model()
    config = QuantizeConfig(bits=bits, per_channel=per_channel, symmetric=bits == 4, min_elements=0)
    report, out = quantize_and_compare(save, tmp_path, model, feeds, config, tolerance)
    tensors = {t.name: t for t in report.tensors}
    for name in ("w_shared", "w_then", "w_else", "w_deep_a", "w_deep_b"):
        assert tensors[name].quantized, (name, tensors[name].reason)
    assert tensors["w_then"].scope == "If 'by_rate' then_branch" and tensors["w_then"].kind == "initializer"
    assert tensors["w_deep_a"].scope == "If 'by_rate' else_branch > If 'inner_if' then_branch"
    # Where each DequantizeLinear went: the captured weight in the main graph, the others in
    # the body that defined them, with their codes and scales as that body's own initializers
    # (onnxruntime fuses DequantizeLinear -> MatMul in a body only then).
    placed = {}
    for node, graph in all_nodes(out.graph):
        if node.op_type == "DequantizeLinear":
            placed[node.output[0]] = graph.name
    assert placed == {"w_shared": "test", "w_then": "then", "w_else": "else", "w_deep_a": "inner_then", "w_deep_b": "inner_else"}
    inits = {}
    for node, _ in all_nodes(out.graph):
        for attr in node.attribute:
            for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else []:
                inits[g.name] = {t.name for t in g.initializer}
    inits["test"] = {t.name for t in out.graph.initializer}
    assert "w_shared_quantized" in inits["test"] and "w_then_quantized" in inits["then"]
    assert "w_deep_b_quantized" in inits["inner_else"] and "w_else_quantized" in inits["else"]
    assert "w_then" not in inits["then"]  # the body's float weight is gone, not kept beside its codes


def loop_and_scan_model(seed=0):
    """Loop (3 iterations) whose body multiplies the carried state by a body-initializer weight
    and a Constant; Scan over rows with a captured weight."""
    rng = np.random.default_rng(seed)
    body = helper.make_graph(
        [
            _const("w_loop_c", _w(rng, (16, 16))),
            helper.make_node("MatMul", ["h_in", "w_loop"], ["h1"], name="loop_mm"),
            helper.make_node("MatMul", ["h1", "w_loop_c"], ["h2"], name="loop_mm_c"),
            helper.make_node("Tanh", ["h2"], ["h_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "loop_body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [4, 16]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [4, 16]),
        ],
        [numpy_helper.from_array(_w(rng, (16, 16)), "w_loop")],
    )
    scan_body = helper.make_graph(
        [
            helper.make_node("MatMul", ["row", "w_scan"], ["row_out"], name="scan_mm"),
            helper.make_node("Identity", ["acc_in"], ["acc_out"]),
        ],
        "scan_body",
        [
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("row", TensorProto.FLOAT, [1, 16]),
        ],
        [
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("row_out", TensorProto.FLOAT, [1, 8]),
        ],
    )
    nodes = [
        _const("trips", np.array(3, np.int64)),
        _const("go", np.array(True)),
        helper.make_node("Loop", ["trips", "go", "x"], ["h"], body=body, name="loop"),
        helper.make_node("Unsqueeze", ["h", "axis1"], ["h3"]),
        helper.make_node("Scan", ["acc", "h3"], ["acc_final", "rows"], body=scan_body, num_scan_inputs=1, name="scan"),
    ]
    inits = [
        numpy_helper.from_array(_w(rng, (16, 8)), "w_scan"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.zeros(1, np.float32), "acc"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])]
    outputs = [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [4, 1, 8])]
    return _model(nodes, inputs, outputs, inits), {"x": rng.standard_normal((4, 16)).astype(np.float32)}


def test_loop_and_scan_bodies(save, tmp_path):
    model, feeds = loop_and_scan_model()
    report, out = quantize_and_compare(save, tmp_path, model, [feeds], QuantizeConfig(per_channel=True, min_elements=0), 0.03)
    quantized = {t.name for t in report.tensors if t.quantized}
    assert quantized == {"w_loop", "w_loop_c", "w_scan"}
    placed = {node.output[0]: graph.name for node, graph in all_nodes(out.graph) if node.op_type == "DequantizeLinear"}
    assert placed == {"w_loop": "loop_body", "w_loop_c": "loop_body", "w_scan": "test"}


# --- recurrent layers --------------------------------------------------------------------------


GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def recurrent_model(op: str, direction: str, seed=0):
    rng = np.random.default_rng(seed)
    hidden, size, dirs = 32, 24, 2 if direction == "bidirectional" else 1
    g = GATES[op]
    inits = [
        numpy_helper.from_array(_w(rng, (dirs, g * hidden, size), 0.3), "W"),
        numpy_helper.from_array(_w(rng, (dirs, g * hidden, hidden), 0.3), "R"),
        numpy_helper.from_array(_w(rng, (dirs, 2 * g * hidden), 0.1), "B"),
    ]
    node = helper.make_node(op, ["x", "W", "R", "B"], ["Y", "Y_h"], hidden_size=hidden, direction=direction, name=op.lower())
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 2, size])
    outputs = [
        helper.make_tensor_value_info("Y", TensorProto.FLOAT, [5, dirs, 2, hidden]),
        helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [dirs, 2, hidden]),
    ]
    return _model([node], [x], outputs, inits), {"x": rng.standard_normal((5, 2, size)).astype(np.float32)}


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_recurrent_weights_per_gate_row(save, tmp_path, op, direction):
    model, feeds = recurrent_model(op, direction)
    report, _ = quantize_and_compare(save, tmp_path, model, [feeds], QuantizeConfig(per_channel=True, min_elements=0), 0.02)
    tensors = {t.name: t for t in report.tensors}
    assert tensors["W"].quantized and tensors["W"].axis == 1 and tensors["R"].quantized and tensors["R"].axis == 1
    assert not tensors["B"].quantized and tensors["B"].reason.startswith(f"not a weight: input 3 of {op}")
    assert report.compression > 2.5  # the weights dominate; biases stay float


# --- float16 / bfloat16, Cast and Transpose ------------------------------------------------------


def half_mlp(seed=0):
    """A float16 model with float16 inputs and outputs."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_w(rng, (64, 96)).astype(np.float16), "w1"),
        numpy_helper.from_array(_w(rng, (96, 32)).astype(np.float16), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 32])
    return _model(nodes, [x], [y], inits), {"x": rng.standard_normal((8, 64)).astype(np.float16)}


@pytest.mark.parametrize("bits, per_channel, tolerance", [(8, True, 0.02), (8, False, 0.04), (4, True, 0.2)])
def test_float16_model_keeps_float16(save, tmp_path, bits, per_channel, tolerance):
    model, feeds = half_mlp()
    report, out = quantize_and_compare(
        save, tmp_path, model, [feeds], QuantizeConfig(bits=bits, per_channel=per_channel, min_elements=0), tolerance
    )
    assert report.quantized_count == 2 and report.opset_after >= 19
    scales = [t for t in out.graph.initializer if t.name.endswith("_scale")]
    assert scales and all(t.data_type == TensorProto.FLOAT16 for t in scales)
    assert report.compression > (1.8 if bits == 8 else 3.2)  # float16 -> 8 bits is 2x


def mixed_precision(seed=0):
    """Weights stored in float16 and bfloat16, each Cast to float32 before a MatMul (as
    mixed-precision exports write), and a [N, K] weight transposed before a MatMul."""
    rng = np.random.default_rng(seed)
    import ml_dtypes

    w16 = _w(rng, (64, 48)).astype(np.float16)
    wbf = _w(rng, (48, 40)).astype(ml_dtypes.bfloat16)
    wt = _w(rng, (24, 40))  # [N, K]: MatMul reads its transpose
    inits = [numpy_helper.from_array(w16, "w16"), numpy_helper.from_array(wbf, "wbf"), numpy_helper.from_array(wt, "wt")]
    nodes = [
        helper.make_node("Cast", ["w16"], ["w16_f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x", "w16_f"], ["h1"], name="mm16"),
        helper.make_node("Cast", ["wbf"], ["wbf_f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["h1", "wbf_f"], ["h2"], name="mmbf"),
        helper.make_node("Transpose", ["wt"], ["wt_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["h2", "wt_t"], ["y"], name="mmt"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 24])
    return _model(nodes, [x], [y], inits), {"x": rng.standard_normal((8, 64)).astype(np.float32)}


def test_weights_behind_cast_and_transpose(save, tmp_path):
    model, feeds = mixed_precision()
    report, out = quantize_and_compare(save, tmp_path, model, [feeds], QuantizeConfig(per_channel=True, min_elements=0), 0.03)
    tensors = {t.name: t for t in report.tensors}
    assert tensors["w16"].quantized and tensors["w16"].axis == 1 and "through Cast" in tensors["w16"].reason
    assert tensors["wbf"].quantized and tensors["wbf"].axis == 1
    assert tensors["wt"].quantized and tensors["wt"].axis == 0  # MatMul's axis 1 of wt^T is wt's axis 0
    producers = {n.output[0]: n for n in out.graph.node}
    assert producers["w16"].op_type == "DequantizeLinear"
    assert producers["wbf"].op_type == "Cast" and producers["wbf"].attribute[0].i == TensorProto.BFLOAT16
    assert (
        producers["w16_f"].op_type == "Cast" and producers["wt_t"].op_type == "Transpose"
    )  # kept, now on the dequantized weight


# --- embedding tables --------------------------------------------------------------------------


def embedding_model(rows=500, dim=32, tied=False, seed=0):
    """Gather(table, ids) -> MatMul head; with `tied`, the head is Gemm(h, table, transB=1)."""
    rng = np.random.default_rng(seed)
    table = _w(rng, (rows, dim), 1.0) * np.exp(rng.uniform(-2, 0, (rows, 1))).astype(np.float32)
    inits = [numpy_helper.from_array(table, "emb")]
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"], axis=0, name="embed")]
    if tied:
        nodes += [
            helper.make_node("Reshape", ["e", "flat"], ["e2"]),
            helper.make_node("Gemm", ["e2", "emb"], ["y"], transB=1, name="lm_head"),
        ]
        inits.append(numpy_helper.from_array(np.array([-1, dim], np.int64), "flat"))
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", rows])
    else:
        inits.append(numpy_helper.from_array(_w(rng, (dim, 16)), "head"))
        nodes.append(helper.make_node("MatMul", ["e", "head"], ["y"], name="head"))
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "T", 16])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "T"])
    feeds = {"ids": rng.integers(0, rows, size=(3, 7)).astype(np.int64)}
    return _model(nodes, [ids], [y], inits), feeds


@pytest.mark.parametrize("bits, per_channel, tolerance", [(8, True, 0.02), (8, False, 0.06), (4, True, 0.2)])
def test_embedding_lookup_dequantizes_only_the_rows(save, tmp_path, bits, per_channel, tolerance):
    model, feeds = embedding_model()
    config = QuantizeConfig(bits=bits, per_channel=per_channel, min_elements=0)
    report, out = quantize_and_compare(save, tmp_path, model, [feeds], config, tolerance)
    tensors = {t.name: t for t in report.tensors}
    assert tensors["emb"].quantized and tensors["emb"].storage in ("UINT8", "INT8")  # Gather has no 4-bit type
    inits = {t.name: t for t in out.graph.initializer}
    # No DequantizeLinear reads the whole table: the codes are gathered first.
    for node in out.graph.node:
        if node.op_type == "DequantizeLinear":
            assert node.input[0] not in inits or inits[node.input[0]].dims[0] != 500
    readers = [n.op_type for n in out.graph.node if "emb_quantized" in n.input]
    assert readers == ["Gather"]


def test_tied_embeddings_are_stored_once(save, tmp_path):
    model, feeds = embedding_model(tied=True)
    report, out = quantize_and_compare(save, tmp_path, model, [feeds], QuantizeConfig(per_channel=True, min_elements=0), 0.03)
    assert {t.name for t in report.tensors if t.quantized} == {"emb"}
    codes = [t for t in out.graph.initializer if t.name.startswith("emb") and t.name.endswith("_quantized")]
    assert len(codes) == 1  # one copy of the codes serves the lookup and the output projection
    readers = sorted(n.op_type for n in out.graph.node if codes[0].name in n.input)
    assert readers == ["DequantizeLinear", "Gather"]


def test_embedding_lookup_latency_stays_close_to_float(save, tmp_path):
    """The lookup must not dequantize the whole table at every run: compared in the same run as
    the float lookup, with a generous bound (the bench measures it properly)."""
    import time

    model, _ = embedding_model(rows=32000, dim=256)
    src = save(model)
    quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(per_channel=True))
    feeds = {"ids": np.random.default_rng(0).integers(0, 32000, size=(1, 16)).astype(np.int64)}

    def best(path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - t0)
        return min(times)

    # Dequantizing the 8.2M-value table alone takes ~1 ms; the gathered rows take microseconds.
    assert best(tmp_path / "q.onnx") < best(src) + 0.5e-3


# --- names, invalid graphs, already-quantized models ----------------------------------------------


def test_unknown_exclude_name_is_an_error_with_suggestions(save, tmp_path):
    model, _ = constant_mlp()
    src = save(model)
    with pytest.raises(UnknownNameError) as info:
        quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(exclude=("w3",), min_elements=0))
    assert info.value.field == "exclude" and "'w3' matches no weight or node" in str(info.value)
    assert "w1" in info.value.suggestions or "w2" in info.value.suggestions
    with pytest.raises(UnknownNameError, match="'nope' matches no weight") as info:
        quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(layer_bits={"nope": 4}, min_elements=0))
    assert info.value.field == "layer_bits"
    assert not (tmp_path / "q.onnx").exists()


def test_exclude_accepts_node_names(save, tmp_path):
    model, _ = constant_mlp()
    report = quantrs.quantize(save(model), tmp_path / "q.onnx", QuantizeConfig(exclude=("mm2",), min_elements=0))
    tensors = {t.name: t for t in report.tensors}
    assert tensors["w1"].quantized and not tensors["w2"].quantized
    assert tensors["w2"].reason == "read by MatMul 'mm2', excluded by the user"


def _duplicated(kind: str):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(_w(rng, (8, 8)), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    inits = [w]
    if kind == "initializer":
        inits.append(numpy_helper.from_array(_w(rng, (8, 8)), "w"))
    else:
        nodes.insert(0, _const("w", _w(rng, (8, 8))))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


@pytest.mark.parametrize("kind", ["initializer", "constant"])
def test_a_name_defined_twice_is_refused(save, tmp_path, kind):
    src = save(_duplicated(kind))
    with pytest.raises(ModelLoadError, match="invalid graph: 'w' is defined twice"):
        quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(min_elements=0))
    assert not (tmp_path / "q.onnx").exists()


def test_already_quantized_model(save, tmp_path):
    model, _ = constant_mlp()
    src = save(model)
    quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(min_elements=0))
    with pytest.raises(AlreadyQuantizedError, match=r"already quantized \(2 DequantizeLinear\)"):
        quantrs.quantize(tmp_path / "q.onnx", tmp_path / "qq.onnx", QuantizeConfig(min_elements=0))
    assert not (tmp_path / "qq.onnx").exists()
    # Partly quantized: what is still float gets quantized, and the report says what was there.
    quantrs.quantize(src, tmp_path / "half.onnx", QuantizeConfig(min_elements=0, exclude=("w2",)))
    report = quantrs.quantize(tmp_path / "half.onnx", tmp_path / "full.onnx", QuantizeConfig(min_elements=0))
    assert report.already_quantized == "1 DequantizeLinear"
    assert [t.name for t in report.tensors if t.quantized] == ["w2"]


def test_info_counts_constant_and_subgraph_weights(save):
    model, _ = branching_model()
    info = quantrs.inspect_model(save(model))
    assert info.float_weight_count == 5
    assert info.constant_weight_count == 3 and info.subgraph_weight_count == 4


# --- the command line and batches ----------------------------------------------------------------


def test_cli_unknown_exclude_is_a_usage_error(save, tmp_path):
    from typer.testing import CliRunner

    from quantrs.cli import app

    src = save(constant_mlp()[0])
    result = CliRunner().invoke(app, ["quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--exclude", "w3"])
    assert result.exit_code == 2
    assert "--exclude" in result.stderr and "'w3' matches no weight or node" in result.stderr and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--layer-bits", "w9=4"])
    assert result.exit_code == 2 and "--layer-bits" in result.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_batch_skips_already_quantized_models(save, tmp_path):
    src = save(constant_mlp()[0], "float.onnx")
    quantrs.quantize(src, tmp_path / "done.onnx", QuantizeConfig(min_elements=0))
    report = quantrs.quantize_batch([src, tmp_path / "done.onnx"], tmp_path / "out", QuantizeConfig(min_elements=0))
    status = {r.input.rsplit("/", 1)[-1]: (r.status, r.error) for r in report.results}
    assert status["float.onnx"] == ("ok", None)
    assert status["done.onnx"][0] == "skipped" and "already quantized (2 DequantizeLinear)" in status["done.onnx"][1]
    assert report.ok  # not a failure of the batch


def test_config_file_names_the_field_of_an_unknown_name(save, tmp_path):
    from typer.testing import CliRunner

    from quantrs.cli import app

    save(constant_mlp()[0], "m.onnx")
    (tmp_path / "q.yaml").write_text("min_elements: 0\nmodels:\n  - input: m.onnx\n    output: out/m.onnx\n    exclude: [w22]\n")
    result = CliRunner().invoke(app, ["config", str(tmp_path / "q.yaml"), "--dry-run"])
    assert result.exit_code == 1
    assert "q.yaml: models.0: exclude: 'w22' matches no weight or node" in result.stderr
    result = CliRunner().invoke(app, ["config", str(tmp_path / "q.yaml"), "-q", "--format", "json"])
    import json

    assert result.exit_code == 1
    assert "q.yaml: models.0: exclude: 'w22' matches no weight" in json.loads(result.stdout)["results"][0]["error"]


# --- found in review ----------------------------------------------------------------------------


def _sibling_branches(rng):
    """Each branch of an If holds its own MatMul weight 'W' (different values) and Constant 'k':
    legal ONNX (separate scopes), accepted by onnx.checker and onnxruntime."""

    def branch(tag):
        nodes = [
            helper.make_node(
                "Constant", [], ["k"], value=numpy_helper.from_array(np.array([2.0 if tag == "then" else 3.0], np.float32))
            ),
            helper.make_node("MatMul", ["x", "W"], [f"m_{tag}"]),
            helper.make_node("Mul", [f"m_{tag}", "k"], [f"out_{tag}"]),
        ]
        w = numpy_helper.from_array(_w(rng, (64, 64)), "W")
        return helper.make_graph(nodes, tag, [], [helper.make_tensor_value_info(f"out_{tag}", TensorProto.FLOAT, [2, 64])], [w])

    node = helper.make_node("If", ["c"], ["y"], then_branch=branch("then"), else_branch=branch("else"), name="by_flag")
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64]),
        helper.make_tensor_value_info("c", TensorProto.BOOL, []),
    ]
    model = _model([node], inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])], [])
    onnx.checker.check_model(model, full_check=True)
    feeds = [{"x": rng.standard_normal((2, 64)).astype(np.float32), "c": np.array(flag)} for flag in (True, False)]
    return model, feeds


def test_sibling_branches_each_quantize_their_own_weight(save, tmp_path):
    """Refused before ("defined in more than one body"): each branch's W is now quantized
    inside its own body (the second renamed W__2 there), and each branch's output stays close
    to the float model's."""
    model, feeds = _sibling_branches(np.random.default_rng(0))
    report, out = quantize_and_compare(save, tmp_path, model, feeds, QuantizeConfig(per_channel=True, min_elements=0), 0.02)
    tensors = {t.name: t for t in report.tensors}
    assert tensors["W"].quantized and tensors["W__2"].quantized
    assert {tensors["W"].scope.split()[-1], tensors["W__2"].scope.split()[-1]} == {"then_branch", "else_branch"}
    for attr in out.graph.node[0].attribute:  # each body dequantizes its own codes
        assert [n.op_type for n in attr.g.node].count("DequantizeLinear") == 1


def test_sibling_branches_exclude_and_layer_bits_by_the_name_in_the_file(save, tmp_path):
    """--exclude W and --layer-bits W=4 mean both branches' W: the user knows only that name."""
    model, _ = _sibling_branches(np.random.default_rng(1))
    src = save(model)
    with pytest.raises(UnsupportedModelError, match=r"'W': excluded by the user.*'W__2': excluded by the user"):
        quantrs.quantize(src, tmp_path / "e.onnx", QuantizeConfig(per_channel=True, min_elements=0, exclude=("W",)))
    four = quantrs.quantize(src, tmp_path / "f.onnx", QuantizeConfig(per_channel=True, min_elements=0, layer_bits=(("W", 4),)))
    assert {t.name: t.storage for t in four.tensors if t.quantized} == {"W": "UINT4", "W__2": "UINT4"}


def test_excluding_an_if_node_keeps_the_weights_its_bodies_read(save, tmp_path):
    model, _ = branching_model()
    report = quantrs.quantize(save(model), tmp_path / "q.onnx", QuantizeConfig(min_elements=0, exclude=("inner_if",)))
    tensors = {t.name: t for t in report.tensors}
    assert not tensors["w_deep_a"].quantized and "inside the body of 'inner_if'" in tensors["w_deep_a"].reason
    assert tensors["w_else"].quantized and tensors["w_then"].quantized


def test_external_data_held_by_bodies_and_constants_moves_with_the_model(tmp_path):
    """A model saved with external data, whose If branch keeps a float bias too small to
    quantize (external all the same) and whose main graph has an excluded Constant weight: the
    output, written elsewhere, must not point at the input's data file."""
    from onnx.external_data_helper import convert_model_to_external_data

    rng = np.random.default_rng(0)
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w_body"], ["h"]), helper.make_node("Add", ["h", "b_body"], ["out_t"])],
        "then",
        [],
        [helper.make_tensor_value_info("out_t", TensorProto.FLOAT, [2, 512])],
        [numpy_helper.from_array(_w(rng, (64, 512)), "w_body"), numpy_helper.from_array(_w(rng, (512,), 0.1), "b_body")],
    )
    other = helper.make_graph(
        [_const("w_const", _w(rng, (64, 512))), helper.make_node("MatMul", ["x", "w_const"], ["out_e"])],
        "else",
        [],
        [helper.make_tensor_value_info("out_e", TensorProto.FLOAT, [2, 512])],
    )
    node = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=other, name="pick")
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64]),
        helper.make_tensor_value_info("c", TensorProto.BOOL, []),
    ]
    model = _model([node], inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 512])])
    (tmp_path / "in").mkdir()
    convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location="m.data", size_threshold=1024, convert_attribute=True
    )
    onnx.save(model, str(tmp_path / "in" / "m.onnx"))
    (tmp_path / "out").mkdir()
    config = QuantizeConfig(per_channel=True, min_elements=1024, exclude=("w_const",))
    quantrs.quantize(tmp_path / "in" / "m.onnx", tmp_path / "out" / "q.onnx", config)
    onnx.checker.check_model(str(tmp_path / "out" / "q.onnx"), full_check=True)
    for flag in (True, False):
        feeds = {"x": rng.standard_normal((2, 64)).astype(np.float32), "c": np.array(flag)}
        got, want = run(tmp_path / "out" / "q.onnx", feeds)[0], run(tmp_path / "in" / "m.onnx", feeds)[0]
        assert rel_l2(got, want) < 0.02
