"""--quant-format matmulnbits: MatMul weights as onnxruntime's com.microsoft.MatMulNBits (packed
blocks along K, scales [N, blocks], packed zero points), the rest as QDQ. The same codes and
scales as the QDQ form, so with accuracy_level 0 (float compute) its outputs equal the QDQ
model's run without fusion."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import BUILDERS
from onnx import TensorProto, helper, numpy_helper
from test_blocks import outlier_mlp, rel_l2, run
from typer.testing import CliRunner

import quantrs
from quantrs import QuantizeConfig, kernels
from quantrs.cli import app
from quantrs.tensor import _nbits_zero_points, as_float16, quantize_matmulnbits, scheme_for


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_matmulnbits_equals_the_qdq_form(save, tmp_path, bits, symmetric):
    model, feeds = outlier_mlp(k=200)  # K = 200: six blocks of 32 and a short one
    src = save(model)
    common = dict(bits=bits, block_size=32, symmetric=symmetric)
    quantrs.quantize(src, tmp_path / "qdq.onnx", QuantizeConfig(**common))
    report = quantrs.quantize(src, tmp_path / "nb.onnx", QuantizeConfig(**common, quant_format="matmulnbits", accuracy_level=0))
    out = onnx.load(str(tmp_path / "nb.onnx"))
    onnx.checker.check_model(out, full_check=True)
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("MatMulNBits") == 2 and "DequantizeLinear" not in ops and "MatMul" not in ops
    assert report.opset_after == 17  # no DequantizeLinear: the model's opset is kept
    node = next(n for n in out.graph.node if n.op_type == "MatMulNBits")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"K": 200, "N": 512, "bits": bits, "block_size": 32, "accuracy_level": 0}
    inits = {t.name: t for t in out.graph.initializer}
    assert list(inits[node.input[1]].dims) == [512, 7, 32 * bits // 8] and list(inits[node.input[2]].dims) == [512, 7]
    assert (len(node.input) == 4) != symmetric  # symmetric codes use MatMulNBits' default zero point
    assert rel_l2(run(tmp_path / "nb.onnx", feeds), run(tmp_path / "qdq.onnx", feeds, exact=True)) < 1e-5
    if bits == 4:
        assert report.compression > 5.5


def test_zero_points_are_packed_per_column_low_nibble_first():
    """The kernel's [blocks, N] int32 zero points as MatMulNBits stores them: bytes [N, blocks]
    (8 bits), or each column's packed by kernels.pack4, padded to even length (4 bits)."""
    rng = np.random.default_rng(0)
    for count in (1, 2, 7, 64):
        zero_point = rng.integers(-300, 300, (count, 5), dtype=np.int32)  # any int32: its low byte, nibble
        as_bytes = zero_point.astype(np.uint8).T  # [N, blocks]
        padded = np.zeros((5, count + count % 2), np.uint8)
        padded[:, :count] = as_bytes
        four = _nbits_zero_points(zero_point, 4)
        assert four.shape == (5, (count + 1) // 2) and four.tobytes() == kernels.pack4(padded).tobytes()
        assert _nbits_zero_points(zero_point, 8).tobytes() == np.ascontiguousarray(as_bytes).tobytes()


def test_matmulnbits_parameters_are_n_by_blocks_as_stored():
    """quantize_matmulnbits' scale is [N, blocks] (a view of the kernel's [blocks, N], which
    the writer copies into C order), the values of the ONNX blocked form transposed; its zero
    points are the bytes MatMulNBits stores, packed per column."""
    w = np.random.default_rng(1).standard_normal((200, 24)).astype(np.float16)
    scheme = scheme_for(4, symmetric=False, native_int4=False)
    got = quantize_matmulnbits(w, scheme, 32, range="minmax", half_scale=True)
    blocked = kernels.quantize_blocks(w, 0, 32, 0, 15, symmetric=False, half_scale=True)  # [7, 24]
    assert got.scale.dtype == np.float32 and got.scale.shape == (24, 7)
    assert got.scale.tobytes() == np.ascontiguousarray(blocked.scale.T).tobytes()
    assert as_float16(got.scale).tobytes() == blocked.scale.T.astype(np.float16).tobytes()
    assert got.zero_point.dtype == np.uint8 and got.zero_point.shape == (24, 4)  # 7 blocks: 4 bytes a column
    assert got.zero_point.tobytes() == _nbits_zero_points(blocked.zero_point, 4).tobytes()


def test_default_accuracy_level_and_mixed_formats(save, tmp_path):
    """The default accuracy level is 0 (float compute: the faster where measured); weights
    MatMulNBits cannot take (a Gemm's) are written as QDQ blocks in the same model."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((128, 64)).astype(np.float32) / 11, n) for n in ("w_mm", "w_gemm")]
    nodes = [
        helper.make_node("MatMul", ["x", "w_mm"], ["h"]),
        helper.make_node("Gemm", ["x", "w_gemm"], ["g"]),
        helper.make_node("Add", ["h", "g"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64])],
        inits,
    )
    src = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    report = quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(bits=4, quant_format="matmulnbits", min_elements=0))
    reasons = {t.name: t.reason for t in report.tensors}
    assert "as MatMulNBits in blocks of 32" in reasons["w_mm"] and "blocks of 32 along axis 0" in reasons["w_gemm"]
    storage = {t.name: t.storage for t in report.tensors if t.quantized}
    assert storage == {"w_mm": "UINT4 (MatMulNBits)", "w_gemm": "UINT4"}  # B is bytes, the codes 4-bit
    assert report.storage == "UINT4 (1 of 2 as MatMulNBits)"  # the type once
    nodes = onnx.load(str(tmp_path / "q.onnx")).graph.node
    assert {n.op_type for n in nodes} >= {"MatMulNBits", "DequantizeLinear"}
    levels = [a.i for n in nodes if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "accuracy_level"]
    assert levels == [0]
    feeds = {"x": rng.standard_normal((4, 128)).astype(np.float32)}
    assert rel_l2(run(tmp_path / "q.onnx", feeds), run(src, feeds)) < 0.25
    # Level 4 (int8 activations), asked for, is written and runs.
    quantrs.quantize(
        src, tmp_path / "q4.onnx", QuantizeConfig(bits=4, quant_format="matmulnbits", min_elements=0, accuracy_level=4)
    )
    nodes = onnx.load(str(tmp_path / "q4.onnx")).graph.node
    assert [a.i for n in nodes if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "accuracy_level"] == [4]
    assert rel_l2(run(tmp_path / "q4.onnx", feeds), run(src, feeds)) < 0.25


def test_bad_format_options_are_usage_errors(save, tmp_path):
    runner = CliRunner()
    mlp = save(BUILDERS["mlp"]()[0], "mlp.onnx")
    for flags, flag, why in (
        (["--accuracy-level", "7", "--quant-format", "matmulnbits"], "--accuracy-level", "must be 0, 1, 2, 3 or 4"),
        (["--accuracy-level", "2"], "--accuracy-level", "read only by --quant-format matmulnbits"),  # not silently ignored
        (["--quant-format", "gguf"], "--quant-format", "must be one of"),
    ):
        result = runner.invoke(app, ["quantize", str(mlp), "-o", str(tmp_path / "q.onnx"), *flags])
        assert result.exit_code == 2 and f"'{flag}'" in result.stderr and why in " ".join(result.stderr.split()), result.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_bfloat16_weights_stay_qdq(tmp_path):
    """MatMulNBits takes its scales in its input's type, float32 or float16 on the CPU; a
    bfloat16 weight is written as QDQ blocks with a float32 scale and a Cast back beside a
    float32 weight's MatMulNBits, and the graph is valid (a MatMulNBits with float32 scales
    beside bfloat16 input was not). A model with only bfloat16 MatMul weights says so."""
    a = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    wb = helper.make_tensor("wb", TensorProto.BFLOAT16, [64, 64], (a.view(np.uint32) >> 16).astype(np.uint16).tobytes(), raw=True)
    nodes = [helper.make_node("MatMul", ["xb", "wb"], ["yb"]), helper.make_node("MatMul", ["x", "w"], ["y"])]
    value = lambda name, t: helper.make_tensor_value_info(name, t, [2, 64])  # noqa: E731
    graph = helper.make_graph(
        nodes, "g", [value("xb", TensorProto.BFLOAT16), value("x", TensorProto.FLOAT)],
        [value("yb", TensorProto.BFLOAT16), value("y", TensorProto.FLOAT)],
        [wb, numpy_helper.from_array(a, "w")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    report = quantrs.quantize(
        tmp_path / "m.onnx", tmp_path / "q.onnx", QuantizeConfig(bits=4, quant_format="matmulnbits", min_elements=0)
    )
    out = onnx.load(str(tmp_path / "q.onnx"))
    onnx.checker.check_model(out, full_check=True)
    readers = {
        n.input[1] if n.op_type == "MatMulNBits" else n.input[0]: n.op_type
        for n in out.graph.node
        if n.op_type in ("MatMulNBits", "DequantizeLinear")
    }
    assert sorted(readers.values()) == ["DequantizeLinear", "MatMulNBits"] and "Cast" in [n.op_type for n in out.graph.node]
    storage = {t.name: t.storage for t in report.tensors if t.quantized}
    assert storage == {"wb": "UINT4", "w": "UINT4 (MatMulNBits)"}
    graph.node.pop()  # only the bfloat16 weight left
    graph.initializer.pop()
    graph.input.pop()
    graph.output.pop()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "b.onnx"))
    only = quantrs.quantize(
        tmp_path / "b.onnx", tmp_path / "r.onnx", QuantizeConfig(bits=4, quant_format="matmulnbits", min_elements=0)
    )
    assert "bfloat16; MatMulNBits takes float32 or float16" in only.tensors[0].reason
    assert only.notes == ["1 of 1 quantized weights are QDQ, not MatMulNBits (bfloat16; MatMulNBits takes float32 or float16)"]


# --- what --quant-format matmulnbits promised and refused (issue 23.4) ---------------------------


def test_a_cnn_is_qdq_blocks_with_a_note_not_a_usage_error(save, tmp_path):
    """No MatMul weight at all: the weights are QDQ blocks and the report says so (exit 0), so
    `batch --quant-format matmulnbits` over mixed models works."""
    model, feeds = BUILDERS["conv_net"]()
    cnn = save(model, "cnn.onnx")
    result = CliRunner().invoke(
        app, ["quantize", str(cnn), "-o", str(tmp_path / "q.onnx"), "--quant-format", "matmulnbits", "--min-elements", "0"]
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "note: 3 of 3 quantized weights are QDQ, not MatMulNBits (read by Conv; read by Gemm)" in said
    assert rel_l2(run(tmp_path / "q.onnx", feeds), run(cnn, feeds)) < 0.25
    mlp = save(BUILDERS["mlp"]()[0], "mlp.onnx")
    batch = CliRunner().invoke(
        app, ["batch", str(cnn), str(mlp), "-o", str(tmp_path / "out"), "--quant-format", "matmulnbits", "--min-elements", "0"]
    )
    assert batch.exit_code == 0, batch.output
    ops = {p.name: {n.op_type for n in onnx.load(str(p)).graph.node} for p in (tmp_path / "out").glob("*.onnx")}
    assert "MatMulNBits" in ops["mlp.onnx"] and "MatMulNBits" not in ops["cnn.onnx"] and "DequantizeLinear" in ops["cnn.onnx"]


@pytest.mark.parametrize("tie", [None, "transpose"])
def test_a_model_whose_only_weight_is_a_table_gets_gather_block_quantized(save, tmp_path, tie):
    """An embedding model (and a tied one: Gather, and Transpose -> MatMul for the logits) has
    no MatMul weight of its own: the table is GatherBlockQuantized, and the tied logits read the
    same codes through DequantizeLinear."""
    from test_gather_block import table_model

    model, feeds = table_model(tie)
    graph = model.graph
    proj = next(n for n in graph.node if n.op_type == "MatMul" and n.input[1] == "w")
    graph.node.remove(proj)
    graph.initializer.remove(next(t for t in graph.initializer if t.name == "w"))
    graph.output.remove(next(o for o in graph.output if o.name == "y"))
    src = save(model)
    report = quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(bits=4, block_size=32, quant_format="matmulnbits"))
    out = onnx.load(str(tmp_path / "q.onnx"))
    onnx.checker.check_model(out, full_check=True)
    ops = [n.op_type for n in out.graph.node]
    assert "GatherBlockQuantized" in ops and not report.notes
    if tie:
        dq = next(n for n in out.graph.node if n.op_type == "DequantizeLinear")
        assert dq.input[0] == next(n for n in out.graph.node if n.op_type == "GatherBlockQuantized").input[0]
    names = [o.name for o in model.graph.output]
    for got, want, name in zip(run_all(tmp_path / "q.onnx", feeds), run_all(src, feeds), names):
        assert rel_l2(got, want) < 0.15, name


def run_all(path, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_weights_only_in_bodies_are_qdq_blocks_in_their_bodies(save, tmp_path):
    from test_weight_locations import _sibling_branches

    model, feeds = _sibling_branches(np.random.default_rng(2))
    src = save(model)
    report = quantrs.quantize(
        src, tmp_path / "q.onnx", QuantizeConfig(bits=4, block_size=32, quant_format="matmulnbits", min_elements=0)
    )
    weights = {t.name: t for t in report.tensors if t.quantized}
    assert set(weights) == {"W", "W__2"}
    assert all("read inside an If/Loop/Scan body" in t.reason and t.block_size == 32 for t in weights.values())
    for feed in feeds:
        assert rel_l2(run(tmp_path / "q.onnx", feed), run(src, feed)) < 0.2


def test_a_3d_weight_says_matmulnbits_takes_2d(save, tmp_path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((2, 64, 32)) / 8).astype(np.float32), "w3")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w3"], ["y"])],
        "batched",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 32])],
        [w],
    )
    src = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    report = quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(bits=4, quant_format="matmulnbits", min_elements=0))
    assert "3-D; MatMulNBits takes 2-D weights" in report.tensors[0].reason
    feeds = {"x": rng.standard_normal((2, 4, 64)).astype(np.float32)}
    assert rel_l2(run(tmp_path / "q.onnx", feeds), run(src, feeds)) < 0.25
