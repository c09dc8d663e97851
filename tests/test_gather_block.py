"""--quant-format matmulnbits: embedding tables read by Gather as onnxruntime's
com.microsoft.GatherBlockQuantized (codes in blocks along the row, the rows looked up dequantized
by the op). 4-bit codes are INT4 (symmetric) or UINT4 [V, D], ONNX's own packing, so a table also
read densely (a tied output projection) shares them with a blocked DequantizeLinear: stored once.
The codes, scales and zero points are the QDQ form's, so the outputs equal the QDQ model's."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import quantrs
from quantrs import QuantizeConfig

V, D, N = 500, 200, 64  # D = 200: six blocks of 32 and a short one


def _session(path, optimized: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # The QDQ model's DequantizeLinear -> MatMul is fused into MatMulNBits when optimized: with
    # float compute (level 0), as the matmulnbits models below are written.
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def outputs(path, feeds, optimized: bool) -> dict[str, np.ndarray]:
    session = _session(path, optimized)
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def table_model(tie: str | None = None, dtype: int = TensorProto.FLOAT, dim: int = D):
    """ids [B, S] -> Gather(emb [V, dim]) -> `rows` (an output) -> MatMul(w [dim, N]) -> `y`; with
    `tie`, also the logits `rows @ emb^T` through a Transpose node or a Gemm with transB=1."""
    rng = np.random.default_rng(0)
    np_type = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    table = rng.standard_normal((V, dim)).astype(np.float32)
    table[:, 7] *= 12  # an outlier feature, as trained embeddings have
    inits = [
        numpy_helper.from_array(table.astype(np_type), "emb"),
        numpy_helper.from_array((rng.standard_normal((dim, N)) / 14).astype(np_type), "w"),
    ]
    if dtype == TensorProto.BFLOAT16:
        bits = (table.view(np.uint32) >> 16).astype(np.uint16)
        inits[0] = helper.make_tensor("emb", TensorProto.BFLOAT16, [V, dim], bits.tobytes(), raw=True)
    rows = "rows"
    nodes = [helper.make_node("Gather", ["emb", "ids"], [rows], axis=0, name="embed")]
    if dtype == TensorProto.BFLOAT16:  # (numpy has no bfloat16: the output is the rows cast to float)
        nodes = [
            helper.make_node("Gather", ["emb", "ids"], ["rows_bf16"], axis=0),
            helper.make_node("Cast", ["rows_bf16"], [rows], to=TensorProto.FLOAT),
        ]
    out_type = TensorProto.FLOAT16 if dtype == TensorProto.FLOAT16 else TensorProto.FLOAT
    nodes.append(helper.make_node("MatMul", [rows, "w"], ["y"], name="proj"))
    outs = [
        helper.make_tensor_value_info("rows", out_type, ["B", "S", dim]),
        helper.make_tensor_value_info("y", out_type, ["B", "S", N]),
    ]
    if tie == "transpose":
        nodes += [
            helper.make_node("Transpose", ["emb"], ["emb_t"], perm=[1, 0]),
            helper.make_node("MatMul", [rows, "emb_t"], ["logits"]),
        ]
        outs.append(helper.make_tensor_value_info("logits", out_type, ["B", "S", V]))
    elif tie == "gemm":
        inits.append(numpy_helper.from_array(np.array([-1, dim], np.int64), "flat"))
        nodes += [
            helper.make_node("Reshape", [rows, "flat"], ["h"]),
            helper.make_node("Gemm", ["h", "emb"], ["logits"], transB=1),
        ]
        outs.append(helper.make_tensor_value_info("logits", out_type, ["BS", V]))
    graph = helper.make_graph(nodes, "table", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "S"])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, {"ids": rng.integers(-V, V, (3, 11)).astype(np.int64)}  # negative ids count from the end, as Gather's


def quantize_both(src, tmp_path, **common):
    qdq = quantrs.quantize(src, tmp_path / "qdq.onnx", QuantizeConfig(**common))
    nb = quantrs.quantize(src, tmp_path / "nb.onnx", QuantizeConfig(**common, quant_format="matmulnbits", accuracy_level=0))
    out = onnx.load(str(tmp_path / "nb.onnx"))
    onnx.checker.check_model(out, full_check=True)
    return qdq, nb, out


def assert_same_outputs(tmp_path, feeds):
    """Every output of the matmulnbits model equals the QDQ model's, without graph optimizations
    and with onnxruntime's default ones. (The QDQ lookup dequantizes per block, not with a
    blocked DequantizeLinear, which onnxruntime 1.32 fused with a MatMul into a
    MatMulIntegerToFloat that rejected 8-bit zero points.)"""
    for optimized in (False, True):
        got, want = outputs(tmp_path / "nb.onnx", feeds, optimized), outputs(tmp_path / "qdq.onnx", feeds, optimized)
        assert np.array_equal(got["rows"], want["rows"]), optimized  # the same values, looked up
        for name in got:
            scale = float(np.abs(want[name]).max())
            assert np.abs(got[name].astype(np.float64) - want[name]).max() <= 1e-5 * scale, (name, optimized)


def _node(model, op):
    return next(n for n in model.graph.node if n.op_type == op)


def table_bytes(path) -> int:
    """Bytes of the table's codes, scales and zero points in a quantized model."""
    return sum(len(t.raw_data) for t in onnx.load(str(path)).graph.initializer if t.name.startswith("emb_"))


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_gather_block_quantized_equals_the_qdq_form(save, tmp_path, bits, symmetric):
    model, feeds = table_model()
    src = save(model)
    qdq, nb, out = quantize_both(src, tmp_path, bits=bits, block_size=32, symmetric=symmetric)
    ops = [n.op_type for n in out.graph.node]
    assert sorted(ops) == ["GatherBlockQuantized", "MatMulNBits"]  # no Gather, no DequantizeLinear
    node = _node(out, "GatherBlockQuantized")
    assert node.domain == "com.microsoft" and list(node.input[1:2]) == ["ids"] and list(node.output) == ["rows"]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"gather_axis": 0, "quantize_axis": 1, "block_size": 32, "bits": bits}
    inits = {t.name: t for t in out.graph.initializer}
    codes, scales = inits[node.input[0]], inits[node.input[2]]
    want_type = {(4, True): TensorProto.INT4, (4, False): TensorProto.UINT4}.get((bits, symmetric), TensorProto.UINT8)
    assert codes.data_type == want_type and list(codes.dims) == [V, D] and len(codes.raw_data) == V * D * bits // 8
    assert list(scales.dims) == [V, 7] and scales.data_type == TensorProto.FLOAT
    # Symmetric codes use the op's default zero point (0 for INT4; 128 for UINT8, the signed
    # 8-bit codes stored + 128); asymmetric ones store theirs, in the codes' type.
    assert (len(node.input) == 4) != symmetric
    if not symmetric:
        assert inits[node.input[3]].data_type == want_type and list(inits[node.input[3]].dims) == [V, 7]
    assert nb.opset_after == (21 if bits == 4 else 17)  # INT4/UINT4 tensors: opset 21 (IR 10); UINT8 keeps the model's
    reasons = {t.name: t.reason for t in nb.tensors}
    assert "as GatherBlockQuantized in blocks of 32 along axis 1" in reasons["emb"]
    assert {t.name: t.storage for t in nb.tensors if t.quantized}["emb"] == onnx.TensorProto.DataType.Name(want_type)
    assert_same_outputs(tmp_path, feeds)
    if bits == 4:  # the table packed two codes a byte, where the QDQ form's Gather needs one a byte
        assert table_bytes(tmp_path / "nb.onnx") < 0.6 * table_bytes(tmp_path / "qdq.onnx")
        assert nb.output_bytes < 0.65 * qdq.output_bytes and nb.compression > 5.5
    else:  # the same bytes, but for the QDQ form's rows padded to whole blocks (224 codes: OpenVINO takes whole blocks only)
        assert table_bytes(tmp_path / "nb.onnx") + V * (224 - D) == table_bytes(tmp_path / "qdq.onnx")


def test_an_8_bit_lookup_with_zero_points_runs_optimized(save, tmp_path):
    """Rows of whole blocks (256), 8-bit asymmetric blocks: the QDQ lookup runs in onnxruntime
    with its default optimizations. (A blocked DequantizeLinear of the gathered rows feeding the
    MatMul was fused into a MatMulIntegerToFloat that fails at run time: "input a zero point
    must be a scalar or 1D tensor of size 1"; the lookup now dequantizes per block.)"""
    model, feeds = table_model(dim=256)
    src = save(model)
    quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(bits=8, block_size=32))
    want = outputs(src, feeds, optimized=True)
    got = outputs(tmp_path / "q.onnx", feeds, optimized=True)
    assert all(np.linalg.norm(got[k] - want[k]) <= 0.02 * np.linalg.norm(want[k]) for k in want)


@pytest.mark.parametrize("tie", ["transpose", "gemm"])
@pytest.mark.parametrize("bits, symmetric", [(4, False), (4, True), (8, True)])
def test_tied_table_is_stored_once(save, tmp_path, tie, bits, symmetric):
    """Gather and the output projection (rows @ emb^T) read one copy of the codes: the lookups
    through GatherBlockQuantized, the projection through a blocked DequantizeLinear."""
    model, feeds = table_model(tie)
    src = save(model)
    qdq, nb, out = quantize_both(src, tmp_path, bits=bits, block_size=32, symmetric=symmetric)
    assert sum(t.name.startswith("emb_quantized") for t in out.graph.initializer) == 1
    gather, dq = _node(out, "GatherBlockQuantized"), _node(out, "DequantizeLinear")
    assert list(dq.input) == [gather.input[0], *gather.input[2:]] and dq.output[0] == "emb"  # same codes, scales, zero points
    if bits == 8 and symmetric:  # DequantizeLinear's default zero point is 0, the op's 128: stored
        assert len(dq.input) == 3
    attrs = {a.name: helper.get_attribute_value(a) for a in dq.attribute}
    assert attrs == {"axis": 1, "block_size": 32}
    assert (
        "GatherBlockQuantized" in {t.name: t.reason for t in nb.tensors}["emb"]
        and "DequantizeLinear" in {t.name: t.reason for t in nb.tensors}["emb"]
    )
    assert_same_outputs(tmp_path, feeds)
    if bits == 4:
        assert table_bytes(tmp_path / "nb.onnx") < 0.6 * table_bytes(tmp_path / "qdq.onnx")


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_half_precision_tables(save, tmp_path, dtype):
    """float16 tables get float16 scales (the op's output type); bfloat16 ones float32 scales and
    a Cast back, which the QDQ form has too."""
    model, feeds = table_model(dtype=dtype)
    src = save(model)
    _, _, out = quantize_both(src, tmp_path, bits=4, block_size=32)
    node = _node(out, "GatherBlockQuantized")
    scales = next(t for t in out.graph.initializer if t.name == node.input[2])
    assert scales.data_type == (TensorProto.FLOAT16 if dtype == TensorProto.FLOAT16 else TensorProto.FLOAT)
    for optimized in (False, True):
        got, want = outputs(tmp_path / "nb.onnx", feeds, optimized), outputs(tmp_path / "qdq.onnx", feeds, optimized)
        assert np.array_equal(got["rows"], want["rows"])


def test_tables_the_op_cannot_take_stay_qdq(save, tmp_path):
    """A table also used as a MatMul weight [K=V, N=D] needs blocks along another axis than the
    lookups' rows; one read inside an If body is not a main-graph use: both keep the QDQ lookup."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 96)).astype(np.float32), n) for n in ("emb", "emb2", "w")]
    inits[2] = numpy_helper.from_array(rng.standard_normal((96, 64)).astype(np.float32), "w")
    then = helper.make_graph(
        [helper.make_node("Gather", ["emb2", "ids"], ["r2"], axis=0)],
        "then",
        [],
        [helper.make_tensor_value_info("r2", TensorProto.FLOAT, [5, 96])],
    )
    orelse = helper.make_graph(
        [helper.make_node("Gather", ["emb2", "ids"], ["r3"], axis=0)],
        "else",
        [],
        [helper.make_tensor_value_info("r3", TensorProto.FLOAT, [5, 96])],
    )
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["rows"], axis=0),
        helper.make_node("MatMul", ["x", "emb"], ["dense"]),
        helper.make_node("If", ["flag"], ["picked"], then_branch=then, else_branch=orelse),
        helper.make_node("MatMul", ["picked", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fallback",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [5]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
            for n, shape in (("rows", [5, 96]), ("dense", [2, 96]), ("y", [5, 64]))
        ],
        inits,
    )
    src = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    report = quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(bits=4, quant_format="matmulnbits"))
    reasons = {t.name: t.reason for t in report.tensors}
    assert "GatherBlockQuantized" not in reasons["emb"] + reasons["emb2"] and "MatMulNBits" in reasons["w"]
    out = onnx.load(str(tmp_path / "q.onnx"))
    assert "GatherBlockQuantized" not in {n.op_type for n in out.graph.node}
    feeds = {"ids": np.array([0, 5, 63, 2, 2]), "x": rng.standard_normal((2, 64)).astype(np.float32), "flag": np.array(True)}
    got, want = outputs(tmp_path / "q.onnx", feeds, False), outputs(src, feeds, False)
    for name in want:
        assert np.linalg.norm(got[name] - want[name]) / np.linalg.norm(want[name]) < 0.2, name
