"""Static INT8 through the one pipeline: memory bounded by groups of activations, any model
quantize handles (Constant weights, external data, name collisions, unknown domains), real
activations (masks of -inf), the tensorrt layout, onnxruntime's debugging names, and every
sample form users have."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import builders
import quantrs
from quantrs import CalibrationConfig
from quantrs.cli import app
from quantrs.collect import _prefix_model, collect_statistics, data_folder
from quantrs.errors import ConfigError
from quantrs.model import load_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "small_cnn.onnx"
runner = CliRunner()


def run(path, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def relative_l2(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def make(nodes, inputs, outputs, inits, opset: int = 13, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def conv_stack(layers: int, channels: int, side: int, tail: str = "ReduceMean") -> onnx.ModelProto:
    """Conv -> Relu, `layers` times, then a float op reading the last Relu."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], {}, "x"
    for i in range(layers):
        inits[f"w{i}"] = (rng.standard_normal((channels, channels, 3, 3)) * 0.05).astype(np.float32)
        nodes += [
            helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        prev = f"r{i}"
    nodes.append(helper.make_node(tail, [prev], ["y"], axes=[2, 3], keepdims=0))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, side, side])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels])
    return make(nodes, [x], [y], inits)


# --- the rewrite --------------------------------------------------------------------------------


def test_a_relu_read_by_a_float_op_is_not_folded(tmp_path):
    """Folding Relu into the quantizer leaves the producer's raw output under the Relu's name:
    only right when every reader takes the dequantized copy. Here ReduceMean (float) reads it."""
    model = conv_stack(3, 8, 16)
    # r0 is read by conv1 (quantized) and by a float ReduceMean: folding relu0 would hand the
    # ReduceMean the Conv's negative values.
    model.graph.node.append(helper.make_node("ReduceMean", ["r0"], ["side"], axes=[2, 3], keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, 8]))
    src = save(model, tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((1, 8, 16, 16)).astype(np.float32)
    report = quantrs.calibrate(src, tmp_path / "q.onnx", [{"x": x}])
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    assert sorted(n.name for n in quantized.graph.node if n.op_type == "Relu") == ["relu0", "relu2"]
    assert report.folded_relus == ["r1"]
    for ref, got in zip(run(src, {"x": x}), run(tmp_path / "q.onnx", {"x": x})):
        assert relative_l2(ref, got) < 0.05


def test_activation_qdq_uses_onnxruntime_names_and_its_debug_tool_pairs_them(tmp_path):
    from onnxruntime.quantization import qdq_loss_debug as dbg

    dst = tmp_path / "q.onnx"
    samples = [{"image": np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32)} for i in range(4)]
    report = quantrs.calibrate(EXAMPLE, dst, samples)
    names = {o for n in onnx.load(str(dst)).graph.node for o in n.output}
    for a in report.activations:
        assert f"{a.name}_QuantizeLinear_Output" in names and f"{a.name}_DequantizeLinear_Output" in names
    float_aug, qdq_aug = tmp_path / "f_aug.onnx", tmp_path / "q_aug.onnx"
    dbg.modify_model_output_intermediate_tensors(str(EXAMPLE), str(float_aug))
    dbg.modify_model_output_intermediate_tensors(str(dst), str(qdq_aug))
    matched = dbg.create_activation_matching(
        dbg.collect_activations(str(qdq_aug), iter(samples)), dbg.collect_activations(str(float_aug), iter(samples))
    )
    assert {a.name for a in report.activations} <= set(matched)
    assert all("float" in matched[a.name] and "post_qdq" in matched[a.name] for a in report.activations)
    weights = dbg.create_weight_matching(str(EXAMPLE), str(dst))
    assert set(report.quantized_weights) <= set(weights)


def test_names_the_rewrite_needs_already_taken(tmp_path):
    """A model that already uses the names the rewrite would give (`x_scale`,
    `x_QuantizeLinear_Output`, `conv1.w_quantized`): fresh names, and the model still runs."""
    model, feeds = builders.conv_net()
    g = model.graph
    taken = {"x_scale": np.float32(1.0), "x_zero_point": np.float32(0.0)}
    for name, value in taken.items():
        g.initializer.append(numpy_helper.from_array(np.array(value), name))
    first = g.node[0]
    first.output[0] = "x_QuantizeLinear_Output"
    for node in g.node[1:]:
        node.input[:] = ["x_QuantizeLinear_Output" if i == "c1" else i for i in node.input]
    g.node.append(helper.make_node("Mul", ["y", "x_scale"], ["y2"]))
    g.node.append(helper.make_node("Add", ["y2", "x_zero_point"], ["y3"]))
    g.output.append(helper.make_tensor_value_info("y3", TensorProto.FLOAT, ["N", 10]))
    g.initializer.append(numpy_helper.from_array(np.zeros(1, np.float32), "conv1.w_quantized"))
    src = save(model, tmp_path / "m.onnx")
    dst = tmp_path / "q.onnx"
    quantrs.calibrate(src, dst, [feeds])
    onnx.checker.check_model(onnx.load(str(dst)))
    ref, got = run(src, feeds), run(dst, feeds)
    assert relative_l2(ref[0], got[0]) < 0.05


# --- any model quantize handles -----------------------------------------------------------------


def test_constant_weights_an_unknown_domain_and_a_cast_first(tmp_path):
    """What converters write: the input cast first, a weight in a Constant node, an ai.onnx.ml op
    at the end. The MatMuls' activations are still quantized; the ml op runs as it was."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((16, 32)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((32, 4)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["w1"], value=numpy_helper.from_array(w1, "w1")),
        helper.make_node("MatMul", ["xf", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("MatMul", ["hr", "w2"], ["logits"], name="fc2"),
        helper.make_node("Normalizer", ["logits"], ["y"], domain="ai.onnx.ml", norm="L2"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    src = save(make(nodes, [x], [y], {"w2": w2}, extra_opsets=[helper.make_opsetid("ai.onnx.ml", 1)]), tmp_path / "m.onnx")
    samples = [{"x": rng.standard_normal((8, 16))} for _ in range(4)]
    report = quantrs.calibrate(src, tmp_path / "q.onnx", samples)
    assert set(report.quantized_weights) == {"w1", "w2"}
    assert {"xf", "hr"} <= {a.name for a in report.activations}
    feed = {"x": rng.standard_normal((8, 16))}
    assert relative_l2(run(src, feed)[0], run(tmp_path / "q.onnx", feed)[0]) < 0.05


def test_external_data_in_external_data_out(tmp_path):
    model, feeds = builders.mlp()
    src = tmp_path / "m.onnx"
    onnx.save_model(model, str(src), save_as_external_data=True, location="m.data", size_threshold=0)
    report = quantrs.calibrate(src, tmp_path / "q.onnx", [feeds])
    assert [Path(p).name for p in report.files_written] == ["q.onnx", "q.onnx.data"]
    assert relative_l2(run(src, feeds)[0], run(tmp_path / "q.onnx", feeds)[0]) < 0.05


def test_onnxruntime_never_gets_the_weights_as_bytes(tmp_path):
    """What lets a model over 2 GiB calibrate: each group's session is built from the graph
    alone, its weights attached as arrays over the mapped file. A 64 MB model's session graph
    stays a few kilobytes."""
    from quantrs.synthetic import matmul_stack

    src = matmul_stack(tmp_path / "m.onnx", 4, 2048)
    model = load_model(src)
    proto = _prefix_model(model, [model.proto.graph.node[-1].output[0]], data_folder(model))
    assert len(proto.graph.initializer) == len(model.proto.graph.initializer)
    assert proto.ByteSize() < 16 << 10
    assert all(t.data_location == TensorProto.EXTERNAL for t in proto.graph.initializer)


# --- real activations ---------------------------------------------------------------------------


@pytest.mark.parametrize("mask_value", [-np.inf, np.finfo(np.float32).min, -1e9])
def test_masked_attention_scores_are_left_float(tmp_path, mask_value):
    """Scores + mask -> Softmax, as BERT-style exporters write it. Statistics leave the mask
    and the masked scores out, with the reason (never an error); the model calibrates and its
    output agrees."""
    rng = np.random.default_rng(0)
    d = 16
    wq, wk, wv = ((rng.standard_normal((d, d)) / 4).astype(np.float32) for _ in range(3))
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Add", ["scores", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, d])
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, d])
    src = save(make(nodes, [x, mask], [y], {"wq": wq, "wk": wk, "wv": wv}), tmp_path / "m.onnx")

    def sample(seed):
        m = np.zeros((1, 1, 8), np.float32)
        m[..., 6:] = mask_value  # the last two positions are padding
        return {"x": np.random.default_rng(seed).standard_normal((1, 8, d)).astype(np.float32), "mask": m}

    samples = [sample(i) for i in range(32)]
    stats = collect_statistics(load_model(src), ["scores", "mask", "masked"], samples, histogram=True)
    if np.isinf(mask_value) or mask_value < -1e30:  # -1e9 is an ordinary (if wide) range
        assert set(stats.skipped) == {"mask", "masked"} and "mask" in stats.skipped["masked"]
        assert set(stats.collectors) == {"scores"}
    report = quantrs.calibrate(src, tmp_path / "q.onnx", samples)
    assert not {"mask", "masked"} & {a.name for a in report.activations} or mask_value == -1e9
    feed = sample(99)
    assert relative_l2(run(src, feed)[0], run(tmp_path / "q.onnx", feed)[0]) < 0.05


# --- targets ------------------------------------------------------------------------------------


def residual_net():
    """Conv -> Relu -> Conv, added back to the block's input (a residual Add), then Relu."""
    rng = np.random.default_rng(0)
    inits = {
        "stem.w": (rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(np.float32),
        "stem.b": (rng.standard_normal(8) * 0.1).astype(np.float32),
        "a.w": (rng.standard_normal((8, 8, 3, 3)) * 0.1).astype(np.float32),
        "a.b": (rng.standard_normal(8) * 0.1).astype(np.float32),
        "b.w": (rng.standard_normal((8, 8, 3, 3)) * 0.1).astype(np.float32),
        "b.b": (rng.standard_normal(8) * 0.1).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "stem.w", "stem.b"], ["s"], pads=[1, 1, 1, 1], name="stem"),
        helper.make_node("Relu", ["s"], ["sr"], name="stem_relu"),
        helper.make_node("Conv", ["sr", "a.w", "a.b"], ["ca"], pads=[1, 1, 1, 1], name="a"),
        helper.make_node("Relu", ["ca"], ["ra"], name="a_relu"),
        helper.make_node("Conv", ["ra", "b.w", "b.b"], ["cb"], pads=[1, 1, 1, 1], name="b"),
        helper.make_node("Add", ["cb", "sr"], ["res"], name="residual"),
        helper.make_node("Relu", ["res"], ["y"], name="out_relu"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])
    return make(nodes, [x], [y], inits)


def test_padded_blocks_leave_the_activations_quantized(tmp_path):
    """Static with 4-bit blocks and a weight whose reduction axis (200) is not a multiple of 32:
    its codes are padded to whole blocks and cut back by a Slice, so the MatMul still reads its
    activation through the QuantizeLinear/DequantizeLinear pair (a padded input would read x
    itself and leave that pair unread)."""
    from test_blocks import outlier_mlp

    model, feeds = outlier_mlp(k=200)
    src = save(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((4, 200)).astype(np.float32)} for _ in range(4)]
    quantrs.calibrate(src, tmp_path / "q.onnx", samples, CalibrationConfig(weights=quantrs.QuantizeConfig(bits=4, block_size=32)))
    out = onnx.load(str(tmp_path / "q.onnx"))
    producers = {o: n for n in out.graph.node for o in n.output}
    for node in (n for n in out.graph.node if n.op_type == "MatMul"):
        assert producers[node.input[0]].op_type == "DequantizeLinear", node.name
    assert producers[producers["w1"].input[0]].op_type == "DequantizeLinear" and producers["w1"].op_type == "Slice"
    assert relative_l2(run(src, feeds)[0], run(tmp_path / "q.onnx", feeds)[0]) < 0.3


def test_tensorrt_layout(tmp_path):
    """NVIDIA's explicit-quantization rules: signed symmetric INT8 (zero points 0), per-channel
    weights, float biases, Q/DQ on the inputs of weighted ops and residual Adds and never on
    their outputs, Relu kept."""
    src = save(residual_net(), tmp_path / "m.onnx")
    samples = [{"x": np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)} for i in range(4)]
    report = quantrs.calibrate(src, tmp_path / "q.onnx", samples, CalibrationConfig(target="tensorrt"))
    model = onnx.load(str(tmp_path / "q.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert {n.input[0] for n in quantizers} == {"x", "sr", "ra", "cb"}  # Conv inputs; both of the Add
    assert not any(
        producers.get(q.input[0]) is not None and producers[q.input[0]].op_type == "Conv" and q.input[0] != "cb"
        for q in quantizers
    )
    for q in quantizers:
        zp = inits[q.input[2]]
        assert zp.dtype == np.int8 and zp == 0
    for w in ("stem.w", "a.w", "b.w"):
        assert inits[f"{w}_scale"].shape == (8,)  # per channel
    assert {"stem.b", "a.b", "b.b"} <= set(inits) and inits["a.b"].dtype == np.float32
    assert report.quantized_biases == []
    assert sum(n.op_type == "Relu" for n in model.graph.node) == 3
    add = next(n for n in model.graph.node if n.op_type == "Add")
    assert all(i.endswith("_DequantizeLinear_Output") for i in add.input)
    feed = samples[0]
    assert relative_l2(run(src, feed)[0], run(tmp_path / "q.onnx", feed)[0]) < 0.05
    assert dict((p.key, p.value) for p in model.metadata_props)["quantrs.target"] == "tensorrt"


def test_ort_cpu_layout_quantizes_biases_and_folds_relus(tmp_path):
    src = save(residual_net(), tmp_path / "m.onnx")
    samples = [{"x": np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)} for i in range(4)]
    report = quantrs.calibrate(src, tmp_path / "q.onnx", samples)
    assert sorted(report.quantized_biases) == ["a.b", "b.b", "stem.b"]
    assert sorted(report.folded_relus) == ["ra", "sr"]  # y is the graph's output: its Relu stays


def test_a_relu_after_a_residual_add_folds_into_its_quantizer(tmp_path):
    """Add -> Relu -> Conv (the bundled example's residual block): the Relu folds into the Add's
    UINT8 quantizer, as onnxruntime's quantize_static does, so onnxruntime runs QLinearAdd
    straight into QLinearConv; with the Relu kept, a DequantizeLinear/QuantizeLinear pair ran
    between them in float (0.352 against 0.333 ms a run, 1 thread)."""
    example = Path(__file__).resolve().parents[1] / "examples" / "small_cnn.onnx"
    rng = np.random.default_rng(0)
    samples = [{"image": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(8)]
    report = quantrs.calibrate(example, tmp_path / "q.onnx", samples)
    assert "block.out" in report.folded_relus
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    after_add = ops[ops.index("QLinearAdd") + 1]
    assert after_add == "QLinearConv", ops
    assert relative_l2(run(example, samples[0])[0], run(tmp_path / "q.onnx", samples[0])[0]) < 0.05


# --- memory ---------------------------------------------------------------------------------------

PEAK = """
import json, sys
import numpy as np
mode, model, data = sys.argv[1:4]
if mode == "infer":
    import onnxruntime as ort
    ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": np.load(data)})
    groups = 1
else:
    import quantrs
    groups = quantrs.calibrate(model, sys.argv[4], data).inference_groups
print(json.dumps({"peak_mb": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024, "groups": groups}))
"""


def peak(*args) -> dict:
    out = subprocess.run([sys.executable, "-c", PEAK, *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_calibration_memory_is_bounded_by_the_model_not_its_activations(tmp_path):
    """The issue's model: 12 convs whose 25 activations are 33 MB each (840 MB together); it
    needed 1.7 GB. Now: groups of activations, under 600 MB, within plain inference's peak plus
    a group (128 MiB) and a few activations."""
    src = save(conv_stack(12, 32, 512), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((1, 32, 512, 512)).astype(np.float32))
    inference = peak("infer", src, tmp_path / "x.npy")
    calibration = peak("calibrate", src, tmp_path / "x.npy", tmp_path / "q.onnx")
    assert calibration["groups"] > 1
    assert calibration["peak_mb"] < 600, calibration
    assert calibration["peak_mb"] < inference["peak_mb"] + 128 + 4 * 33.5, (inference, calibration)


# --- samples --------------------------------------------------------------------------------------


def test_stacked_samples_and_a_reader(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader

    stacked = np.random.default_rng(0).standard_normal((6, 1, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "stacked.npy", stacked)
    assert quantrs.calibrate(EXAMPLE, tmp_path / "a.onnx", tmp_path / "stacked.npy").samples == 6

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"image": s} for s in stacked])

        def get_next(self):
            return next(self.items, None)

    assert quantrs.calibrate(EXAMPLE, tmp_path / "b.onnx", Reader()).samples == 6


def test_a_sample_onnxruntime_cannot_run_is_one_line_naming_the_file(tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "K"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", 64])
    inits = {"shape": np.array([-1, 64], np.int64), "w": np.ones((64, 64), np.float32)}
    src = save(make(nodes, [x], [y], inits), tmp_path / "m.onnx")
    np.savez(tmp_path / "bad.npz", x=np.ones((3, 5), np.float32))  # 15 values: no [-1, 64]
    result = runner.invoke(app, ["calibrate", str(src), "--data", str(tmp_path / "bad.npz"), "-o", str(tmp_path / "q.onnx")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and not (tmp_path / "q.onnx").exists()
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and str(src) in line and "does not run" in line


def test_validate_detailed_decodes_int32_biases(tmp_path):
    """INT32 biases were cast to 8 bits and ranked as the worst layers at ~0 dB."""
    dst = tmp_path / "q.onnx"
    samples = [{"image": np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32)} for i in range(4)]
    report = quantrs.calibrate(EXAMPLE, dst, samples)
    assert report.quantized_biases
    from quantrs.model import load_model as load
    from quantrs.dequantize import dequantized_weights

    orig, quant = load(EXAMPLE), load(dst)
    decoded = dequantized_weights(orig, quant)
    for bias in report.quantized_biases:
        want = orig.weights.array(bias)
        got = decoded[bias][1]
        assert np.abs(got - want).max() <= np.abs(want).max() * 1e-3 + 1e-6, bias


# --- found in review ------------------------------------------------------------------------------


def test_weights_inside_if_bodies_calibrate(tmp_path):
    """The static edit rebuilds the main graph's node list, which copies the If bodies: the
    bodies' codes must be in them before, or the output holds empty code tensors."""
    from test_weight_locations import branching_model

    model, feeds = branching_model()
    g = model.graph  # a main-graph MatMul first, so that there are activations to calibrate
    g.input[0].name = "x_in"
    g.initializer.append(numpy_helper.from_array(np.eye(32, dtype=np.float32), "w_in"))
    g.node.insert(0, helper.make_node("MatMul", ["x_in", "w_in"], ["x"], name="stem"))
    feeds = [{("x_in" if k == "x" else k): v for k, v in f.items()} for f in feeds]
    src = save(model, tmp_path / "m.onnx")
    report = quantrs.calibrate(src, tmp_path / "q.onnx", feeds)
    assert {"w_then", "w_else", "w_deep_a", "w_deep_b"} <= set(report.quantized_weights)
    onnx.checker.check_model(onnx.load(str(tmp_path / "q.onnx")))
    for feed in feeds:  # every branch runs and agrees
        assert relative_l2(run(src, feed)[0], run(tmp_path / "q.onnx", feed)[0]) < 0.05


def test_a_model_file_that_is_a_symbolic_link_into_another_folder(tmp_path):
    """As a hub cache stores models: snapshots/rev/model.onnx -> ../../blobs/<hash>."""
    model, feeds = builders.conv_net()
    (tmp_path / "blobs").mkdir()
    (tmp_path / "snapshots" / "rev").mkdir(parents=True)
    save(model, tmp_path / "blobs" / "abc123")
    link = tmp_path / "snapshots" / "rev" / "model.onnx"
    link.symlink_to("../../blobs/abc123")
    quantrs.calibrate(link, tmp_path / "q.onnx", [feeds])
    assert relative_l2(run(link, feeds)[0], run(tmp_path / "q.onnx", feeds)[0]) < 0.05


def test_an_output_that_is_not_a_tensor(tmp_path):
    """skl2onnx classifiers end in ZipMap (a sequence of maps): no fidelity figure for it, the
    others still compared, nothing crashes."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ZipMap", ["probabilities"], ["classes"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    outputs = [
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3]),
        helper.make_value_info(
            "classes",
            helper.make_sequence_type_proto(
                helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
            ),
        ),
    ]
    model = make(
        nodes,
        [x],
        outputs,
        {"w": rng.standard_normal((8, 3)).astype(np.float32)},
        extra_opsets=[helper.make_opsetid("ai.onnx.ml", 1)],
    )
    src = save(model, tmp_path / "m.onnx")
    report = quantrs.calibrate(
        src, tmp_path / "q.onnx", [{"x": rng.standard_normal((4, 8)).astype(np.float32)} for _ in range(4)]
    )
    assert [o.name for o in report.fidelity] == ["probabilities"]


def test_an_initializer_that_is_also_an_input_with_several_groups(tmp_path):
    model, feeds = builders.conv_net()
    g = model.graph
    g.input.append(helper.make_tensor_value_info("conv2.b", TensorProto.FLOAT, [64]))  # a default the caller may override
    src = save(model, tmp_path / "m.onnx")
    report = quantrs.calibrate(src, tmp_path / "q.onnx", [feeds], CalibrationConfig(group_bytes=1000))
    assert report.inference_groups > 1


def test_nothing_calibratable_is_an_error_not_a_weight_only_model(tmp_path):
    nodes = [helper.make_node("Add", ["x", "m"], ["s"]), helper.make_node("MatMul", ["s", "w"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    m = helper.make_tensor_value_info("m", TensorProto.FLOAT, [2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])
    src = save(make(nodes, [x, m], [y], {"w": np.ones((8, 8), np.float32)}), tmp_path / "m.onnx")
    feed = {"x": np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32), "m": np.full((2, 8), -np.inf, np.float32)}
    result = runner.invoke(app, ["calibrate", str(src), "--data", str(_npz(tmp_path, feed)), "-o", str(tmp_path / "q.onnx")])
    assert result.exit_code == 1 and "no activation could be calibrated" in result.stderr
    assert not (tmp_path / "q.onnx").exists()


def _npz(folder: Path, feed: dict) -> Path:
    np.savez(folder / "s.npz", **feed)
    return folder / "s.npz"


@pytest.mark.parametrize("flag", ["--reduce-range", "--per-tensor"])
def test_tensorrt_refuses_what_it_cannot_take(tmp_path, flag):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    result = runner.invoke(
        app,
        [
            "calibrate",
            str(EXAMPLE),
            "--data",
            str(tmp_path / "x.npy"),
            "-o",
            str(tmp_path / "q.onnx"),
            "--target",
            "tensorrt",
            flag,
        ],
    )
    assert result.exit_code == 2 and flag in result.output


def test_an_unknown_exclude_name_is_a_usage_error_naming_the_flag_and_file(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    result = runner.invoke(
        app, ["calibrate", str(EXAMPLE), "--data", str(tmp_path / "x.npy"), "-o", str(tmp_path / "q.onnx"), "--exclude", "stage9"]
    )
    assert result.exit_code == 2 and "--exclude" in result.output and EXAMPLE.name in result.output


def test_products_of_activations_stay_float(tmp_path):
    """Conv -> tanh GELU written out (x * x * x ...) -> Conv, as Magika's exporter writes it: the
    cube reaches 1e5 where x is 50, so 8 bits over its range zero everything small. Products of
    two activations are not quantized (nor, then, what only they read); the Convs' inputs are."""
    rng = np.random.default_rng(0)
    c = lambda name, v: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(v, np.float32), name))  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["h", "h"], ["h2"]),
        helper.make_node("Mul", ["h2", "h"], ["h3"]),
        c("k1", 0.044715),
        helper.make_node("Mul", ["h3", "k1"], ["t1"]),
        helper.make_node("Add", ["h", "t1"], ["t2"]),
        c("k2", 0.7978846),
        helper.make_node("Mul", ["t2", "k2"], ["t3"]),
        helper.make_node("Tanh", ["t3"], ["t4"]),
        c("one", 1.0),
        helper.make_node("Add", ["t4", "one"], ["t5"]),
        helper.make_node("Mul", ["h", "t5"], ["t6"]),
        c("half", 0.5),
        helper.make_node("Mul", ["t6", "half"], ["g"]),
        helper.make_node("Conv", ["g", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    inits = {
        "w1": (rng.standard_normal((4, 4, 3, 3)) * 2).astype(np.float32),
        "w2": (rng.standard_normal((4, 4, 3, 3)) * 0.2).astype(np.float32),
    }
    src = save(make(nodes, [x], [y], inits), tmp_path / "m.onnx")
    samples = [{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(8)]
    report = quantrs.calibrate(src, tmp_path / "q.onnx", samples)
    quantized = {a.name for a in report.activations}
    assert {"x", "g"} <= quantized and not {"h2", "h3", "t1", "t2"} & quantized, quantized
    feed = {"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)}
    assert relative_l2(run(src, feed)[0], run(tmp_path / "q.onnx", feed)[0]) < 0.05


def test_tensorrt_leaves_adds_that_are_not_residual(tmp_path):
    """An Add of two activations none of which comes from a weighted op (an LSTM's state
    arithmetic, a bias then a residual): no Q/DQ on it."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Relu", ["m"], ["r"]),
        helper.make_node("Sigmoid", ["m"], ["s"]),
        helper.make_node("Add", ["r", "s"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])
    src = save(make(nodes, [x], [y], {"w": rng.standard_normal((8, 8)).astype(np.float32)}), tmp_path / "m.onnx")
    report = quantrs.calibrate(
        src, tmp_path / "q.onnx", [{"x": rng.standard_normal((2, 8)).astype(np.float32)}], CalibrationConfig(target="tensorrt")
    )
    assert {a.name for a in report.activations} == {"x"}


def test_validate_detailed_ranks_a_static_models_activations(tmp_path):
    """Every activation the static model quantizes, ranked worst first, each with the error of
    its own grid on the original's values (the model input's checked against numpy)."""
    dst = tmp_path / "q.onnx"
    samples = [{"image": np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32)} for i in range(4)]
    report = quantrs.calibrate(EXAMPLE, dst, samples)
    from quantrs.validation import validate

    result = validate(EXAMPLE, dst, data=None, samples=4, detailed=True)
    assert result.activations is not None
    assert {a.name for a in result.activations} == {a.name for a in report.activations}
    assert [a.relative_l2 for a in result.activations] == sorted((a.relative_l2 for a in result.activations), reverse=True)
    first = result.activations[0]
    assert first.storage == "UINT8" and 0 < first.relative_l2 < 0.05 and first.sqnr_db > 20
    assert 0.0 <= first.clipped <= 1.0
    from quantrs.samples import generate_samples

    image = next(a for a in result.activations if a.name == "image")
    x = np.concatenate([f["image"].ravel() for f in generate_samples(onnx.load(str(EXAMPLE)), 4)]).astype(np.float64)
    q = np.clip(np.rint(x / image.scale) + image.zero_point, 0, 255)
    want = np.linalg.norm((q - image.zero_point) * image.scale - x) / np.linalg.norm(x)
    assert image.relative_l2 == pytest.approx(want, rel=1e-9)


def test_benchmark_tells_weight_and_activation_dequantizers_apart(tmp_path):
    """A static model's unfused activation Q/DQ is not a weight computed in float."""
    from quantrs.benchmarking import ACTIVATION_DQ, _runtime_ops

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Sigmoid", ["m"], ["s"]),
        helper.make_node("MatMul", ["s", "w2"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64])
    inits = {"w": rng.standard_normal((64, 64)).astype(np.float32), "w2": rng.standard_normal((64, 64)).astype(np.float32)}
    src = save(make(nodes, [x], [y], inits), tmp_path / "m.onnx")
    quantrs.calibrate(src, tmp_path / "q.onnx", [{"x": rng.standard_normal((4, 64)).astype(np.float32)} for _ in range(4)])
    ops = _runtime_ops(tmp_path / "q.onnx", threads=1)
    assert ops == {"MatMulIntegerToFloat": 2}, ops  # both weights fused: none computed in float
    # The last Relu is read by a float ReduceMean: it reads the last QLinearConv's output through
    # a DequantizeLinear. (The bundled example now runs integer throughout: its Gemm is a QGemm.)
    src = save(conv_stack(3, 8, 16), tmp_path / "stack.onnx")
    quantrs.calibrate(src, tmp_path / "c.onnx", [{"x": rng.standard_normal((1, 8, 16, 16)).astype(np.float32)} for _ in range(4)])
    ops = _runtime_ops(tmp_path / "c.onnx", threads=1)
    assert ops is not None and ops.get(ACTIVATION_DQ, 0) >= 1 and ops.get("QLinearConv", 0) == 3, ops
    assert "DequantizeLinear" not in ops, ops  # no weight dequantized at run time


# --- degenerate samples -------------------------------------------------------------------------


def _two_input_mlp(tmp_path):
    """y = x @ wx + z @ wz: two float inputs, each feeding a quantizable MatMul."""
    rng = np.random.default_rng(3)
    d = 32
    nodes = [
        helper.make_node("MatMul", ["x", "wx"], ["a"]),
        helper.make_node("MatMul", ["z", "wz"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, d]) for n in ("x", "z")]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, d])
    weights = {n: (rng.standard_normal((d, d)) / 6).astype(np.float32) for n in ("wx", "wz")}
    return save(make(nodes, inputs, [y], weights), tmp_path / "m.onnx"), d


def test_all_zero_samples_are_refused_naming_them(tmp_path):
    """Range [0, 0] made scale 1 and a model whose real outputs were 92% off, with exit 0."""
    src, d = _two_input_mlp(tmp_path)
    zeros = [{"x": np.zeros((4, d), np.float32), "z": np.zeros((4, d), np.float32)} for _ in range(4)]
    with pytest.raises(ConfigError, match=r"samples are degenerate: .*'x' is 0, 'z' is 0"):
        quantrs.calibrate(src, tmp_path / "q.onnx", zeros)
    assert not (tmp_path / "q.onnx").exists()
    result = CliRunner().invoke(
        app, ["calibrate", str(src), "--data", str(_stacked_npz(tmp_path, zeros)), "-o", str(tmp_path / "q.onnx")]
    )
    assert result.exit_code == 1 and "degenerate" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "q.onnx").exists()


def _stacked_npz(tmp_path, samples):
    path = tmp_path / "zeros.npz"
    np.savez(path, **{n: np.stack([s[n] for s in samples]) for n in samples[0]})
    return path


def test_an_activation_with_one_value_on_every_sample_stays_float(tmp_path):
    """z is 0 in every sample (x is not): it gets no scale of 1 but stays float, with the
    reason, and real inputs for z still come out right."""
    src, d = _two_input_mlp(tmp_path)
    rng = np.random.default_rng(4)
    samples = [{"x": rng.standard_normal((4, d)).astype(np.float32), "z": np.zeros((4, d), np.float32)} for _ in range(8)]
    report = quantrs.calibrate(src, tmp_path / "q.onnx", samples)
    assert {f.name: f.reason for f in report.left_float} == {"z": "one value (0) on every sample: no range to calibrate"}
    assert "x" in {a.name for a in report.activations}
    feeds = {"x": samples[0]["x"], "z": rng.standard_normal((4, d)).astype(np.float32)}  # x within its range
    ref = ort.InferenceSession(str(src)).run(None, feeds)[0]
    got = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, feeds)[0]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.03  # z at scale 1, zero point 0: ~0.9
