"""Static INT8 on CNNs reaches onnxruntime's integer kernels (issue 21.5): after onnxruntime's
graph optimizations (ORT_ENABLE_ALL, what a session runs by default) every Conv of a
`calibrate` output is a QLinearConv and every Gemm (or MatMul + bias Add) a QGemm, with no
float Conv/Gemm left computing on weights dequantized at every run; the outputs stay close to
float's. Each test names the rewrite it checks (quantrs.activations, quantrs.calibration);
bench/cnn_static.py times the result against float and onnxruntime's quantize_static."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import onnxruntime as ort
from onnx import TensorProto, helper

import builders
import quantrs
from quantrs.activations import prelu_nodes
from quantrs.graph import name_maker

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "small_cnn.onnx"


def optimized_ops(path: Path, folder: Path) -> Counter:
    """The op types onnxruntime runs `path` with, after its default graph optimizations."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(folder / f"{path.stem}.optimized.onnx")
    options.log_severity_level = 3  # its warning about hardware-specific layouts in the saved graph
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def run(path: Path, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def relative_l2(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def calibrate(model: onnx.ModelProto, feeds: dict, tmp_path: Path, samples: int = 8):
    src = tmp_path / "float.onnx"
    onnx.save(model, str(src))
    rng = np.random.default_rng(1)
    data = [{k: rng.standard_normal((1, *v.shape[1:])).astype(np.float32) for k, v in feeds.items()} for _ in range(samples)]
    dst = tmp_path / "static.onnx"
    return src, dst, quantrs.calibrate(src, dst, data)


def test_gemm_weights_keep_a_zero_point_so_the_gemm_runs_as_qgemm(tmp_path):
    """onnxruntime makes QGemm of DQ(x), DQ(W)[, DQ(bias)] -> Gemm only when W's DequantizeLinear
    has a zero point input; symmetric weights without one left the Gemm in float (the digits
    CNN ran at 0.66x float's speed). quantrs.calibration._stored_zero_point."""
    src, dst, _ = calibrate(*builders.conv_net(), tmp_path)
    ops = optimized_ops(dst, tmp_path)
    assert ops["QGemm"] == 1 and ops["Gemm"] == 0 and ops["QLinearConv"] == 2, ops
    model = onnx.load(str(dst))
    stored = {t.name: t for t in model.graph.initializer}
    gemm_dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "fc.w")
    assert len(gemm_dq.input) == 3 and not onnx.numpy_helper.to_array(stored[gemm_dq.input[2]]).any()
    feeds = builders.conv_net()[1]
    assert relative_l2(run(src, feeds)[0], run(dst, feeds)[0]) < 0.05


def test_the_bundled_example_runs_integer_from_input_to_logits(tmp_path):
    """The README's example: its Gemm head joins the integer kernels (QGemm), so onnxruntime
    dequantizes nothing at run time."""
    rng = np.random.default_rng(0)
    samples = [{"image": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(8)]
    dst = tmp_path / "static.onnx"
    quantrs.calibrate(EXAMPLE, dst, samples)
    ops = optimized_ops(dst, tmp_path)
    assert ops["QGemm"] == 1 and ops["QLinearConv"] == 6 and ops["DequantizeLinear"] == 0, ops
    assert ops["Conv"] == 0 and ops["Gemm"] == 0, ops
    assert relative_l2(run(EXAMPLE, samples[0])[0], run(dst, samples[0])[0]) < 0.05


def test_a_conv_read_by_prelu_is_a_qlinearconv(tmp_path):
    """PRelu (MTCNN) has no integer kernel, so no quantized op read the Conv's output: it was
    left float, and onnxruntime, which fuses DQ -> Conv -> Q only, ran every Conv in float on
    weights dequantized at every run (O-Net: 0.33-0.44x float's speed). Now the Conv's output
    is quantized whatever reads it, and PRelu reads its dequantized copy, as in onnxruntime's
    quantize_static. quantrs.activations.StaticEdit._read_whole."""
    model, feeds = builders.prelu_cnn()
    src, dst, report = calibrate(model, feeds, tmp_path)
    assert {"c1", "c2"} <= {a.name for a in report.activations}
    quantized = onnx.load(str(dst))
    readers = [n for n in quantized.graph.node if "c1_DequantizeLinear_Output" in n.input]
    assert readers and all(n.name.startswith("prelu1") for n in readers)  # (PRelu as Mul and Max: see below)
    ops = optimized_ops(dst, tmp_path)
    assert ops["QLinearConv"] == 2 and ops["Conv"] == 0, ops
    for ref, got in zip(run(src, feeds), run(dst, feeds)):
        assert relative_l2(ref, got) < 0.05


def test_a_dense_layers_bias_add_is_int32_so_the_fused_gemm_runs_as_qgemm(tmp_path):
    """keras2onnx writes a dense layer as MatMul + Add(bias); onnxruntime fuses that pair into a
    Gemm before it looks for integer kernels, and a Gemm with a float bias stays float. The
    bias is now INT32 at input scale x weight scale, as a Gemm's is: the fused Gemm is a
    QGemm. quantrs.activations.StaticEdit._biases."""
    model, feeds = builders.prelu_cnn()
    src, dst, report = calibrate(model, feeds, tmp_path)
    assert "d.b" in report.quantized_biases
    bias_dq = next(n for n in onnx.load(str(dst)).graph.node if n.output[0] == "d.b")
    assert bias_dq.op_type == "DequantizeLinear"
    ops = optimized_ops(dst, tmp_path)
    assert ops["QGemm"] == 2 and ops["Gemm"] == 0 and ops["MatMul"] == 0, ops
    assert relative_l2(run(src, feeds)[0], run(dst, feeds)[0]) < 0.05


def test_a_dense_bias_of_shape_1_n_is_int32_too(tmp_path):
    """tf2onnx writes a dense layer's bias as [1, N] (Magika's last layer): Gemm takes that
    shape too, so it gets the INT32 form (dequantized along its axis 1)."""
    model, feeds = builders.prelu_cnn()
    bias = next(t for t in model.graph.initializer if t.name == "d.b")
    bias.dims[:] = [1, 32]
    src, dst, report = calibrate(model, feeds, tmp_path)
    assert "d.b" in report.quantized_biases
    bias_dq = next(n for n in onnx.load(str(dst)).graph.node if n.output[0] == "d.b")
    assert [a.i for a in bias_dq.attribute if a.name == "axis"] == [1]
    ops = optimized_ops(dst, tmp_path)
    assert ops["QGemm"] == 2 and ops["Gemm"] == 0, ops
    assert relative_l2(run(src, feeds)[0], run(dst, feeds)[0]) < 0.05


def test_a_conv_output_that_is_a_graph_output_keeps_its_name_and_fuses(tmp_path):
    """onnxruntime does not fuse a Conv whose output is a graph output: the Conv writes a new
    name, and the DequantizeLinear after its QuantizeLinear the graph output's."""
    model, feeds = builders.prelu_cnn(conv_output=True)
    src, dst, _ = calibrate(model, feeds, tmp_path)
    quantized = onnx.load(str(dst))
    assert [o.name for o in quantized.graph.output] == ["y", "c2"]
    producer = next(n for n in quantized.graph.node if "c2" in n.output)
    assert producer.op_type == "DequantizeLinear"
    ops = optimized_ops(dst, tmp_path)
    assert ops["QLinearConv"] == 2 and ops["Conv"] == 0, ops
    ref, got = run(src, feeds), run(dst, feeds)
    assert relative_l2(ref[1], got[1]) < 0.05 and relative_l2(ref[0], got[0]) < 0.05


def test_a_last_conv_read_by_nothing_but_the_graph_output_fuses(tmp_path):
    """A fully convolutional model's last Conv: its output is the graph's, read by no node."""
    model, feeds = builders.conv_net()
    graph = model.graph
    del graph.node[4:]  # ... -> conv2 -> Relu: the Relu's output is the graph's
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("c2", TensorProto.FLOAT, ["N", 64, 16, 16]))
    del graph.node[3]
    src, dst, report = calibrate(model, feeds, tmp_path)
    assert "c2" in {a.name for a in report.activations}
    ops = optimized_ops(dst, tmp_path)
    assert ops["QLinearConv"] == 2 and ops["Conv"] == 0, ops
    assert relative_l2(run(src, feeds)[0], run(dst, feeds)[0]) < 0.05


def test_a_conv_whose_weight_stays_float_gets_no_output_pair(tmp_path):
    """An excluded Conv reads float input and weight: nothing would fuse, and its output keeps
    no quantizer nothing reads."""
    model, feeds = builders.prelu_cnn()
    src = tmp_path / "float.onnx"
    onnx.save(model, str(src))
    config = quantrs.CalibrationConfig(weights=quantrs.QuantizeConfig(min_elements=0, exclude=("conv2",)))
    report = quantrs.calibrate(src, tmp_path / "static.onnx", [{"x": feeds["x"][:1]}], config)
    names = {a.name for a in report.activations}
    assert "c1" in names and "c2" not in names
    quantized = onnx.load(str(tmp_path / "static.onnx"))
    dq_outputs = {n.output[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    read = {i for n in quantized.graph.node for i in n.input} | {o.name for o in quantized.graph.output}
    assert dq_outputs <= read


def test_an_nhwc_model_with_a_leading_transpose(tmp_path):
    """keras2onnx's form: NHWC input, Transpose, then the Convs; the Transpose's output is the
    quantized input and onnxruntime folds the pair into its NHWC integer kernels."""
    model, feeds = builders.prelu_cnn()
    graph = model.graph
    graph.node.insert(0, helper.make_node("Transpose", ["x_nhwc"], ["x"], perm=[0, 3, 1, 2], name="to_nchw"))
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("x_nhwc", TensorProto.FLOAT, ["N", 24, 24, 3]))
    nhwc = {"x_nhwc": feeds["x"].transpose(0, 2, 3, 1).copy()}
    src, dst, _ = calibrate(model, nhwc, tmp_path)
    ops = optimized_ops(dst, tmp_path)
    assert ops["QLinearConv"] == 2 and ops["QGemm"] == 2 and ops["Conv"] == 0 and ops["Gemm"] == 0, ops
    assert relative_l2(run(src, nhwc)[0], run(dst, nhwc)[0]) < 0.05


def test_a_3d_matmul_keeps_a_float_bias(tmp_path):
    """A transformer's MatMul (inputs [batch, tokens, width]) stays a MatMulIntegerToFloat with a
    float Add: onnxruntime makes no Gemm of it, and an INT32 bias would only add a
    DequantizeLinear at every run."""
    model, _ = builders.mlp()
    graph = model.graph
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.shape.dim.insert(1, onnx.TensorShapeProto.Dimension(dim_param="T"))
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 5, 64)).astype(np.float32)}
    src, dst, report = calibrate(model, feeds, tmp_path)
    assert report.quantized_biases == []
    ops = optimized_ops(dst, tmp_path)
    assert ops["MatMulIntegerToFloat"] == 2 and ops["DequantizeLinear"] == 0, ops
    assert relative_l2(run(src, feeds)[0], run(dst, feeds)[0]) < 0.05


def test_relu6_clips_fold_into_their_quantizers(tmp_path):
    """Conv -> Clip(0, 6) (MobileNet's ReLU6) folds into the Conv's UINT8 quantizer as Relu does:
    its codes all dequantize within [0, 6], so saturating is clipping. With the Clip kept, each
    ran in float between a DequantizeLinear and a QuantizeLinear (a MobileNet-style CNN: 0.92-0.98x
    float's speed, quantize_static's 1.7-2.4x). Its bounds, read by nothing else, go too.
    quantrs.activations.StaticEdit._fold_relus."""
    model, feeds = builders.relu6_cnn()
    src, dst, report = calibrate(model, feeds, tmp_path)
    assert sorted(report.folded_relus) == ["d6", "e6"]
    quantized = onnx.load(str(dst))
    assert not [n for n in quantized.graph.node if n.op_type in ("Clip", "Constant")]
    assert not {"low", "high"} & {t.name for t in quantized.graph.initializer}
    ops = optimized_ops(dst, tmp_path)
    assert ops["QLinearConv"] == 3 and ops["Clip"] == 0 and ops["DequantizeLinear"] == 1, ops  # the output's
    assert relative_l2(run(src, feeds)[0], run(dst, feeds)[0]) < 0.05


def test_a_clip_the_codes_would_pass_stays(tmp_path):
    """Clip(0.5, 4): its output's range is widened to hold 0, so code 0 dequantizes below 0.5;
    saturating would not clip there, and the Clip stays."""
    model, feeds = builders.relu6_cnn(low=0.5, high=4.0)
    src, dst, report = calibrate(model, feeds, tmp_path)
    assert report.folded_relus == []
    assert sum(n.op_type == "Clip" for n in onnx.load(str(dst)).graph.node) == 2
    assert relative_l2(run(src, feeds)[0], run(dst, feeds)[0]) < 0.05


@pytest.mark.parametrize("low, high", [(0.0, 1.0), (-0.8, 1.5)])
def test_prelu_as_elementwise_ops_is_prelu_bit_for_bit(low, high):
    """Max(x, s * x) for slopes in [0, 1] (MTCNN's made-up ones), Relu(x) + s * (x - Relu(x))
    otherwise (its real O-Net has slopes down to -0.73): the same values as PRelu, zeros, signs
    and extremes included."""
    rng = np.random.default_rng(0)
    slope = rng.uniform(low, high, (6, 1, 1)).astype(np.float32)
    slope[0] = low
    x = (rng.standard_normal((2, 6, 5, 5)) * 10).astype(np.float32)
    x[0, :, 0, 0] = [0.0, -0.0, 3.4e38, -3.4e38, 1e-45, -1e-45]
    unit = low >= 0 and high <= 1
    value_infos = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(x.shape)) for n in ("x", "y")]
    results = []
    for nodes in (
        [helper.make_node("PRelu", ["x", "s"], ["y"])],
        prelu_nodes("x", "s", "y", unit, name_maker({"x", "s", "y"}), "p"),
    ):
        graph = helper.make_graph(nodes, "g", value_infos[:1], value_infos[1:], [onnx.numpy_helper.from_array(slope, "s")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        results.append(ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0])
    assert len(prelu_nodes("x", "s", "y", unit, name_maker(set()), "p")) == (2 if unit else 4)
    np.testing.assert_array_equal(results[1], results[0])
    assert (np.signbit(results[1]) == np.signbit(results[0])).all()


def test_prelu_leaves_the_static_output_for_faster_elementwise_ops(tmp_path):
    """onnxruntime's PRelu kernel ran half of MTCNN's time: the static output computes it with
    elementwise ops instead (quantrs.activations.StaticEdit._rewrite_prelus), reading the
    QLinearConvs' dequantized outputs."""
    model, feeds = builders.prelu_cnn()
    slope = next(t for t in model.graph.initializer if t.name == "c2.slope")  # a negative slope: the general form
    slope.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(slope), "c2.slope"))
    src, dst, _ = calibrate(model, feeds, tmp_path)
    quantized = onnx.load(str(dst))
    ops = Counter(n.op_type for n in quantized.graph.node)
    assert ops["PRelu"] == 0 and ops["Max"] == 2 and ops["Sub"] == 1, ops  # prelu1 and 3: Max; prelu2: Relu + ...
    assert optimized_ops(dst, tmp_path)["QLinearConv"] == 2
    assert relative_l2(run(src, feeds)[0], run(dst, feeds)[0]) < 0.05
