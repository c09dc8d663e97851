"""Dynamic INT8 (`--dynamic`): MatMul weights as INT8 codes read by MatMulInteger, activations
quantized at run time, in the form onnxruntime fuses into its integer kernels; every other
weight weight-only, with the reason; the refusals that say what to use instead."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from builders import BUILDERS
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import quantrs
from quantrs import QuantizeConfig
from quantrs.cli import app
from quantrs.errors import OptionError

runner = CliRunner()
DYNAMIC = QuantizeConfig(dynamic=True, min_elements=0)


def run(path, feeds, optimized: bool = True):
    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def rel_l2(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_matmuls_get_the_integer_form_onnxruntime_fuses(save, tmp_path):
    model, feeds = BUILDERS["mlp"]()
    src = save(model)
    report = quantrs.quantize(src, tmp_path / "q.onnx", DYNAMIC)
    out = onnx.load(str(tmp_path / "q.onnx"))
    onnx.checker.check_model(out, full_check=True)
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("DynamicQuantizeLinear") == ops.count("MatMulInteger") == 2 and "DequantizeLinear" not in ops
    assert {t.name: t.storage for t in report.tensors if t.quantized} == {
        "w1": "INT8 (MatMulInteger)",
        "w2": "INT8 (MatMulInteger)",
    }
    codes = {t.name: t for t in out.graph.initializer}
    assert codes["w1_quantized"].data_type == TensorProto.INT8 and list(codes["w1_scale"].dims) == [128]  # per output column
    assert {p.key: p.value for p in out.metadata_props}["quantrs.mode"] == "dynamic"
    assert rel_l2(run(tmp_path / "q.onnx", feeds), run(src, feeds)) < 0.03
    # onnxruntime turns it into its fused integer kernel, as it does quantize_dynamic's output.
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "DynamicQuantizeMatMul" in fused and "MatMulInteger" not in fused


def test_the_same_outputs_as_quantize_dynamic(save, tmp_path):
    """onnxruntime's quantize_dynamic (INT8 per channel) on the same model: the same codes and
    scales, so the same outputs, bit for bit."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model, feeds = BUILDERS["mlp"]()
    src = save(model)
    quantrs.quantize(src, tmp_path / "q.onnx", DYNAMIC)
    quantize_dynamic(str(src), str(tmp_path / "ort.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    assert np.array_equal(run(tmp_path / "q.onnx", feeds), run(tmp_path / "ort.onnx", feeds))


def _half_mlp():
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((64, 128)) / 8).astype(np.float16)
    w2 = (rng.standard_normal((128, 32)) / 11).astype(np.float16)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "half", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 32])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {
        "x": rng.standard_normal((4, 64)).astype(np.float16)
    }


def test_float16_models_keep_their_activations_float16(save, tmp_path):
    """DynamicQuantizeLinear takes float32: the input is cast to it and the output back, so the
    model's inputs and outputs keep their type."""
    model, feeds = _half_mlp()
    src = save(model)
    quantrs.quantize(src, tmp_path / "q.onnx", DYNAMIC)
    out = onnx.load(str(tmp_path / "q.onnx"))
    onnx.checker.check_model(out, full_check=True)
    assert [n.op_type for n in out.graph.node].count("MatMulInteger") == 2
    got = run(tmp_path / "q.onnx", feeds)
    assert got.dtype == np.float16 and out.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert rel_l2(got, run(src, feeds)) < 0.03


def test_external_data_in_and_out(tmp_path):
    model, feeds = BUILDERS["mlp"]()
    src = tmp_path / "m.onnx"
    onnx.save_model(model, str(src), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    report = quantrs.quantize(src, tmp_path / "q.onnx", DYNAMIC)
    assert [p.rsplit("/", 1)[-1] for p in report.files_written] == ["q.onnx", "q.onnx.data"]
    assert "MatMulInteger" in [n.op_type for n in onnx.load(str(tmp_path / "q.onnx"), load_external_data=False).graph.node]
    assert rel_l2(run(tmp_path / "q.onnx", feeds), run(src, feeds)) < 0.03


def test_conv_weights_stay_weight_only_and_say_why(save, tmp_path):
    """A model with Conv and MatMul weights: the MatMul's is dynamic, the Conv's weight-only."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("MatMul", ["f", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])],
        [numpy_helper.from_array((rng.standard_normal((16, 3, 3, 3)) / 5).astype(np.float32), "cw"),
         numpy_helper.from_array((rng.standard_normal((1024, 10)) / 32).astype(np.float32), "w")],
    )  # fmt: skip
    src = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    report = quantrs.quantize(src, tmp_path / "q.onnx", DYNAMIC)
    tensors = {t.name: t for t in report.tensors}
    assert tensors["w"].storage == "INT8 (MatMulInteger)"
    assert tensors["cw"].quantized and "weight-only, not dynamic: read by Conv; ConvInteger" in tensors["cw"].reason
    assert "ran no faster than weight-only" in tensors["cw"].reason  # the measured reason (bench/cnn_static.py)
    feeds = {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}
    assert rel_l2(run(tmp_path / "q.onnx", feeds), run(src, feeds)) < 0.05


def test_config_file_and_python_api(save, tmp_path):
    model, feeds = BUILDERS["mlp"]()
    save(model, "m.onnx")
    (tmp_path / "q.yaml").write_text("min_elements: 0\ndynamic: true\nmodels:\n  - input: m.onnx\n    output: out/m.onnx\n")
    result = runner.invoke(app, ["config", str(tmp_path / "q.yaml")])
    assert result.exit_code == 0, result.output
    assert "MatMulInteger" in [n.op_type for n in onnx.load(str(tmp_path / "out" / "m.onnx")).graph.node]
    assert QuantizeConfig(dynamic=True).dynamic


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--bits", "4"], "MatMulNBits at accuracy level 4"),
        (["--quant-format", "matmulnbits"], "leave --quant-format at qdq"),
        (["--block-size", "32"], "--block-size has no integer kernel"),
    ],
)
def test_what_dynamic_cannot_do_is_a_usage_error_saying_what_to_use(save, tmp_path, flags, says):
    src = save(BUILDERS["mlp"]()[0])
    result = runner.invoke(
        app, ["quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--dynamic", "--min-elements", "0", *flags]
    )
    assert result.exit_code == 2 and "'--dynamic'" in result.stderr and says in " ".join(result.stderr.split()), result.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_a_model_without_matmul_weights_is_a_usage_error(save, tmp_path):
    src = save(BUILDERS["conv_transpose"]()[0])
    before = src.read_bytes()
    result = runner.invoke(app, ["quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--dynamic", "--min-elements", "0"])
    assert result.exit_code == 2 and "'--dynamic'" in result.stderr and "calibrate" in result.stderr, result.stderr
    assert not (tmp_path / "q.onnx").exists() and src.read_bytes() == before


def test_calibrate_refuses_dynamic_saying_what_to_use(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    result = runner.invoke(
        app,
        ["calibrate", "examples/small_cnn.onnx", "--data", str(tmp_path / "x.npy"), "-o", str(tmp_path / "q.onnx"), "--dynamic"],
    )
    assert (
        result.exit_code == 2
        and "'--dynamic'" in result.stderr
        and "quantrs quantize MODEL -o OUT --dynamic" in " ".join(result.stderr.split())
    )
    with pytest.raises(OptionError, match="dynamic INT8 is quantize's"):
        quantrs.CalibrationConfig(weights=QuantizeConfig(dynamic=True))


def test_a_dynamically_quantized_model_says_so(save, tmp_path):
    src = save(BUILDERS["mlp"]()[0])
    quantrs.quantize(src, tmp_path / "q.onnx", DYNAMIC)
    result = runner.invoke(
        app, ["quantize", str(tmp_path / "q.onnx"), "-o", str(tmp_path / "again.onnx"), "--dynamic", "--min-elements", "0"]
    )
    assert result.exit_code == 1 and "already quantized" in result.stderr and "MatMulInteger" in result.stderr, result.stderr
    assert not (tmp_path / "again.onnx").exists()


@pytest.mark.parametrize("half", [False, True])
def test_validate_detailed_ranks_dynamic_weights(save, tmp_path, half):
    """validate --detailed finds each weight's codes in MatMulInteger and its scale in the
    rescale Mul (through the float16 model's Cast), and puts each back in float alone."""
    model = _half_mlp()[0] if half else BUILDERS["mlp"]()[0]
    src = save(model)
    quantrs.quantize(src, tmp_path / "q.onnx", DYNAMIC)
    report = quantrs.validate(src, tmp_path / "q.onnx", detailed=True)
    layers = {layer.name: layer for layer in report.layers or []}
    assert set(layers) == {"w1", "w2"}
    for layer in layers.values():
        assert layer.storage == "INT8 (MatMulInteger)" and 35 < layer.weight_sqnr_db < 60
        assert layer.local_sqnr_db is not None and layer.local_sqnr_db > 20


def _lstm(direction: str = "forward", layout: int = 0, hidden: int = 48, inputs: int = 24):
    """One LSTM (W, R, B initializers) over [T, batch, inputs] (or batch first, layout 1)."""
    rng = np.random.default_rng(0)
    d = 2 if direction == "bidirectional" else 1
    w = (rng.standard_normal((d, 4 * hidden, inputs)) / np.sqrt(inputs)).astype(np.float32)
    r = (rng.standard_normal((d, 4 * hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    b = (rng.standard_normal((d, 8 * hidden)) * 0.1).astype(np.float32)
    x_shape = [3, 10, inputs] if layout else [10, 3, inputs]
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "y_h"], hidden_size=hidden, direction=direction, layout=layout)
    graph = helper.make_graph(
        [node], "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("y", "y_h")],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R"), numpy_helper.from_array(b, "B")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, {"x": rng.standard_normal(x_shape).astype(np.float32)}


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstms_become_dynamic_quantize_lstm(save, tmp_path, direction):
    """W and R as INT8 per gate row, read by com.microsoft.DynamicQuantizeLSTM (the form
    quantize_dynamic writes: 2.4-3.7x faster than float, where weight-only is slower); the
    outputs as close to float as quantize_dynamic's."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model, feeds = _lstm(direction)
    src = save(model)
    report = quantrs.quantize(src, tmp_path / "q.onnx", DYNAMIC)
    reasons = {t.name: t.reason for t in report.tensors}
    assert "DynamicQuantizeLSTM" in reasons["W"] and "DynamicQuantizeLSTM" in reasons["R"]
    out = onnx.load(str(tmp_path / "q.onnx"))
    ops = [n.op_type for n in out.graph.node]
    assert "LSTM" not in ops and ops.count("DynamicQuantizeLSTM") == 1 and "DequantizeLinear" not in ops
    assert any(o.domain == "com.microsoft" for o in out.opset_import)
    quantize_dynamic(str(src), str(tmp_path / "ort.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    want = ort.InferenceSession(str(src)).run(None, feeds)
    got = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, feeds)
    theirs = ort.InferenceSession(str(tmp_path / "ort.onnx")).run(None, feeds)
    for g, w, t in zip(got, want, theirs):
        assert g.shape == w.shape and cosine(g, w) > 0.999 and cosine(g, w) >= cosine(t, w) - 1e-4


def test_an_lstm_dynamic_quantize_lstm_cannot_take_stays_weight_only(save, tmp_path):
    """Batch-first (layout 1): DynamicQuantizeLSTM has no layout, so a model with only that LSTM
    has nothing for --dynamic (a usage error); an LSTM with R left float (too small) keeps
    reading W's DequantizeLinear."""
    src = save(_lstm(layout=1)[0])
    with pytest.raises(OptionError, match="DynamicQuantizeLSTM"):
        quantrs.quantize(src, tmp_path / "q.onnx", DYNAMIC)
    report = quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(min_elements=0))  # weight-only takes it
    assert {t.name for t in report.tensors if t.quantized} == {"W", "R"}

    # W 32 x 64 quantized, R 32 x 8 below min_elements, and a MatMul after the LSTM (its weight
    # 8 x 256 dynamic): W stays weight-only (DynamicQuantizeLSTM takes both), the report says so.
    model, feeds = _lstm(hidden=8, inputs=64)
    head = numpy_helper.from_array(np.random.default_rng(1).standard_normal((8, 256)).astype(np.float32), "head")
    model.graph.initializer.append(head)
    model.graph.node.append(helper.make_node("MatMul", ["y_h", "head"], ["z"]))
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    src = save(model, "small_r.onnx")
    report = quantrs.quantize(src, tmp_path / "r.onnx", QuantizeConfig(dynamic=True, min_elements=1024))
    w = next(t for t in report.tensors if t.name == "W")
    assert w.quantized and "DynamicQuantizeLSTM takes W and R both" in w.reason and ": DynamicQuantizeLSTM)" not in w.reason
    ops = [n.op_type for n in onnx.load(str(tmp_path / "r.onnx")).graph.node]
    assert "LSTM" in ops and "DequantizeLinear" in ops and "MatMulInteger" in ops
    assert rel_l2(run(tmp_path / "r.onnx", feeds), run(src, feeds)) < 0.02

    src = save(_lstm(hidden=8, inputs=64)[0], "lstm_only.onnx")  # the LSTM alone: nothing for --dynamic
    with pytest.raises(OptionError, match="DynamicQuantizeLSTM"):
        quantrs.quantize(src, tmp_path / "l.onnx", QuantizeConfig(dynamic=True, min_elements=1024))
